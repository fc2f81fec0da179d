"""A few input columns far off the rest's scale: measured on the batch, proven by a forward pass.

One feature in raw units among standardized ones (a price in cents, a
sensor's raw count, a pixel a pipeline forgot to divide) leaves the net
training on the other columns while that one dominates the first layer. The
gradient estimate of the inputs' scale (`structure_signs.input_ratio`)
averages it away: keras-io's toy ResNet with its centre pixel x1e4 (column
root mean square 1.9e3 where the median column's is 0.18) read an input
ratio under 30, and its loss, 1.3x a chance guess's, fell slowly; keras-io's
denoising autoencoder the same (3.5e3 against 0.39). Neither had an event.

`off_scale_columns` measures the fit's first batch: the flattened float
input columns whose root mean square is above `COLUMN_SCALE` *and*
`COLUMN_SPREAD` x the median column's. Where there are any, the experiment
(`NaNGuard`, `LossWatch._watch_inputs`): the first batch's loss from the
fit's start weights on a copy, as given and with those columns scaled down
to the median column's scale (`rescale_columns`). `find_off_scale_inputs`
names them off scale where that lowers the loss `LOSS_RATIO` x or more:
the scale reaches the loss. A net that normalizes its inputs before its
first kernel (`normalizes_inputs`) is not judged.

Where the median column is off scale too (above `COLUMN_SCALE`: every
input in raw units, one channel x1e4), no column holds the inputs' scale:
the columns above `COLUMN_SCALE` are off scale against unit scale, and
the experiment scales them to a root mean square of 1. Added in session 6
for keras-io's timeseries anomaly autoencoder (one channel, 288 steps) with
that channel x1e4, held out and silent at first: the inputs at 1e4 and no
column to compare them with.
"""

from __future__ import annotations

import math

import keras
import numpy as np

COLUMN_SCALE = 1e3  # a float input column's root mean square above this...
COLUMN_SPREAD = 1e3  # ...and this many times the median column's: off scale
# The loss as given over the loss with those columns rescaled, from the
# start weights (inference mode): keras-io's toy ResNet read 2.645 against
# 2.305 (1.15x; 3.04 with its Dropout in training mode against chance's
# 2.30), its denoising autoencoder 1.962 against 0.677 (2.9x). Set on
# those two (no other set-up of either population has such columns).
LOSS_RATIO = 1.1
# Layers that put what they receive on a known scale, before any kernel.
INPUT_NORMALIZERS = ("Normalization", "Rescaling", "BatchNormalization",
                     "LayerNormalization", "GroupNormalization", "UnitNormalization",
                     "RMSNormalization", "Discretization")


def _columns(x) -> list[tuple[int, np.ndarray, tuple]]:
    """`(leaf index, per-column root mean square, a sample's shape)` of each float array of `x`."""
    out = []
    for i, a in enumerate(keras.tree.flatten(x)):
        a = None if a is None else np.asarray(a)
        if a is None or a.dtype.kind != "f" or a.ndim == 0 or len(a) == 0:
            continue
        flat = a.reshape(len(a), -1).astype(np.float64)
        flat = np.where(np.isfinite(flat), flat, np.nan)
        with np.errstate(all="ignore"):
            rms = np.sqrt(np.nanmean(np.square(flat), axis=0))
        out.append((i, np.nan_to_num(rms, nan=0.0), a.shape[1:]))
    return out


def off_scale_columns(x) -> dict | None:
    """The float input columns far off the rest's scale in batch `x`, or `None`.

    Returns:
        `{"columns": {leaf: [column, ...]}, "rms": {leaf: [rms, ...]},
        "count", "total", "largest", "column", "position", "median"}`: the
        off-scale columns per flattened float leaf and their root mean
        squares, how many of how many columns, the largest root mean
        square, its column (and its index in a sample of more than one
        axis, else `None`) and the median column's root mean square.
    """
    leaves = _columns(x)
    if not leaves:
        return None
    every = np.concatenate([rms for _, rms, _ in leaves])
    median = float(np.median(every))
    # Where the median column is itself off scale, no column holds the
    # inputs' scale: the reference is unit scale.
    reference = median if median <= COLUMN_SCALE else 1.0
    columns, off_rms, largest, where, shape = {}, {}, 0.0, None, ()
    for leaf, rms, sample in leaves:
        off = np.flatnonzero((rms > COLUMN_SCALE) & (rms > COLUMN_SPREAD * reference))
        if off.size:
            columns[leaf] = [int(c) for c in off]
            off_rms[leaf] = [float(r) for r in rms[off]]
            k = int(off[np.argmax(rms[off])])
            if rms[k] > largest:
                largest, where, shape = float(rms[k]), k, sample
    if not columns:
        return None
    return {"columns": columns, "rms": off_rms,
            "count": sum(len(c) for c in columns.values()),
            "total": int(every.size), "largest": largest, "column": where,
            "position": (tuple(int(i) for i in np.unravel_index(where, shape))
                         if len(shape) > 1 else None),
            "median": median, "reference": reference}


def rescale_columns(x, found: dict):
    """`x` with `found`'s off-scale columns scaled to its reference root mean square
    (the median column's, or 1 where the median column is off scale too).

    `found` is `off_scale_columns(x)`: its root mean squares are `x`'s.
    """
    leaves = keras.tree.flatten(x)
    scaled = []
    for i, a in enumerate(leaves):
        if i not in found["columns"]:
            scaled.append(a)
            continue
        a = np.array(a)
        flat = a.reshape(len(a), -1)
        for c, rms in zip(found["columns"][i], found["rms"][i]):  # each rms > COLUMN_SCALE
            flat[:, c] = (flat[:, c].astype(np.float64) * (found["reference"] / rms)).astype(a.dtype)
        scaled.append(flat.reshape(a.shape))
    return keras.tree.pack_sequence_as(x, scaled)


def normalizes_inputs(model) -> bool:
    """Whether a normalizing layer comes before the model's first kernel.

    Read in the model's layer order (a `Sequential` or functional model's
    own; a subclassed model's as its layers were set).
    """
    for layer in model._flatten_layers(include_self=False):
        if type(layer).__name__ in INPUT_NORMALIZERS:
            return True
        if getattr(layer, "kernel", None) is not None:
            return False
    return False


def find_off_scale_inputs(found: dict, loss_given: float, loss_rescaled: float) -> str | None:
    """The evidence that `found`'s columns put the inputs off scale, or `None`.

    Args:
        found: `off_scale_columns` of the fit's first batch.
        loss_given: that batch's loss from the fit's start weights.
        loss_rescaled: the same with the columns rescaled (`rescale_columns`).
    """
    if not (math.isfinite(loss_given) and math.isfinite(loss_rescaled)
            and loss_rescaled > 0 and loss_given >= LOSS_RATIO * loss_rescaled):
        return None
    column = f"column {found['column']}" + (
        f" (index {found['position']} of each sample)" if found.get("position") else "")
    ratio = f"{loss_given / loss_rescaled:.3g}x"
    if found["reference"] != found["median"]:  # the inputs as a whole
        return (f"{found['count']} of {found['total']} float input columns of the first batch "
                f"have a root mean square above {COLUMN_SCALE:.0e} (the median column's "
                f"{found['median']:.3g}, the largest {found['largest']:.3g} in {column}); "
                f"from the fit's start weights the batch's loss is {loss_given:.4g} as given "
                f"and {loss_rescaled:.4g} with them scaled to a root mean square of 1 "
                f"({ratio}): the inputs' scale reaches the loss")
    which = (f"input {column}" if found["count"] == 1 else
             f"{found['count']} of {found['total']} input columns (the largest, {column},")
    return (f"{which} of the first batch has a root mean square of {found['largest']:.3g}"
            f"{'' if found['count'] == 1 else ')'}, {found['largest'] / max(found['median'], 1e-30):.3g}x "
            f"the median column's {found['median']:.3g}; from the fit's start weights "
            f"the batch's loss is {loss_given:.4g} as given and {loss_rescaled:.4g} with "
            f"{'it' if found['count'] == 1 else 'them'} scaled to the median column's "
            f"({ratio}): the column's scale reaches the loss")
