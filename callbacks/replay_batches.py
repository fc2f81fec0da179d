"""The batches a replay changes: read as numpy, standardized, cleaned, scaled.

Pure helpers of `replay.py` (unit-tested in tests/callbacks/test_replay.py).
"""

from __future__ import annotations

import warnings

import keras
import numpy as np


def batch_arrays(data) -> tuple:
    """`(x, y, sample_weight)` of a batch as numpy (trees kept)."""
    data = keras.tree.map_structure(
        lambda t: t if t is None else keras.ops.convert_to_numpy(t), data)
    if isinstance(data, list):
        data = tuple(data)
    return keras.utils.unpack_x_y_sample_weight(data)


def root_mean_square(arrays) -> float:
    """The largest per-feature root mean square over float arrays (NaN ignored)."""
    worst = 0.0
    for a in keras.tree.flatten(arrays):
        a = np.asarray(a)
        if a.dtype.kind != "f" or a.size == 0:
            continue
        flat = a.reshape(len(a), -1).astype(np.float64)
        flat = np.where(np.isfinite(flat), flat, np.nan)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column
            rms = np.sqrt(np.nanmean(np.square(flat), axis=0))
        if np.isfinite(rms).any():
            worst = max(worst, float(np.nanmax(rms)))
    return worst


def standardize(x, recent: list):
    """`x`'s float arrays standardized per feature with the `recent` batches' stats."""
    def one(a, *others):
        a = np.asarray(a)
        if a.dtype.kind != "f":
            return a
        pool = np.concatenate([np.asarray(o).reshape(len(o), -1) for o in (a, *others)])
        pool = np.where(np.isfinite(pool), pool, np.nan).astype(np.float64)
        with np.errstate(all="ignore"):
            mean, std = np.nanmean(pool, axis=0), np.nanstd(pool, axis=0)
        std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
        mean = np.where(np.isfinite(mean), mean, 0.0)
        flat = (a.reshape(len(a), -1) - mean) / std
        return flat.reshape(a.shape).astype(a.dtype)
    return keras.tree.map_structure(one, x, *recent) if recent else \
        keras.tree.map_structure(one, x)


def finite_rows(data):
    """`data` without the rows holding NaN/inf, or `None` (none such, or none left)."""
    arrays = [np.asarray(a) for a in keras.tree.flatten(data) if a is not None]
    n = len(arrays[0]) if arrays else 0
    keep = np.ones(n, bool)
    for a in arrays:
        if a.dtype.kind == "f" and a.ndim and len(a) == n:
            keep &= np.isfinite(a.reshape(n, -1)).all(axis=1)
    if keep.all() or not keep.any():
        return None
    return keras.tree.map_structure(
        lambda a: a if a is None or np.ndim(a) == 0 or len(a) != n else np.asarray(a)[keep],
        data)


def scale_targets(y):
    """`y` divided by its root mean square (finite values)."""
    rms = root_mean_square(y) or 1.0
    return keras.tree.map_structure(
        lambda a: (np.asarray(a) / rms).astype(np.asarray(a).dtype)
        if np.asarray(a).dtype.kind == "f" else a, y)
