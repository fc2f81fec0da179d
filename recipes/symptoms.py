"""Naming what went wrong in the doctor's first trial, from absolute evidence.

A guard event names its own cause. A run that never trips the guard and
still does not learn is judged here from what needs no history: the
validation loss against the constant prediction's, the product of the
kernels' gains, the SimpleRNN recurrent kernels' largest singular value, the
inputs' scale, the per-layer gradient norms and the ReLU units that never
fire. `name_problem` returns a plain dict (saved as findings.json).
"""

from __future__ import annotations

import math

import keras
import numpy as np

from gradguard.callbacks.diagnosis import ungated_recurrent_gain

from .search import IMPROVES
from .trials import predict

ASTRONOMICAL = 1e3  # val loss this many times the constant's: exploding, though finite
DEPTH_GAIN = 1e3  # kernels' gains product above this: the stack amplifies
VANISHING = 1e-3  # gains product, or first/last layer gradient norm, below this
MIN_DEPTH = 4  # kernels needed to blame depth
RECURRENT_GAIN = 1.05  # a SimpleRNN recurrent kernel's largest singular value above this
INPUT_RMS = 30.0  # inputs' root mean square that is not "unit"
DEAD = 0.5  # fraction of a ReLU layer's units that never fire on the training sample
CLEARLY_BELOW = 0.5  # val/trivial at most this without a symptom: healthy, train longer
STILL_LEARNING = 0.9  # below this and still improving at the last epoch, no symptom: healthy
NO_BETTER = IMPROVES  # no cure's val/trivial at most this x trial 0's: as the search keeps a cure


def name_problem(result, bar, data, finite_rows) -> dict:
    """The cause, evidence and problem of trial 0, and what its cures read.

    Args:
        result: trial 0's `trials.Result`.
        bar: the `trials.Bar`.
        data: `(x, y, x_val, y_val)`.
        finite_rows: `cures.finite_rows`.

    Returns:
        A dict: `cause`, `evidence`, `problem` (`exploding`, `vanishing`,
        `dying_relu` or `none`), `clip_norm` (median global norm before the
        onset, or `None`) and `bad_rows` (training rows holding NaN/inf).
    """
    x, y, x_val, y_val = data
    bad = np.flatnonzero(~finite_rows(x, y))
    bad_val = np.flatnonzero(~finite_rows(x_val, y_val))
    found = {"clip_norm": clip_norm(result.norms, result.events), "bad_rows": bad.tolist()}
    events, row = result.events, result.row
    guard = (f"NaNGuard at step {events[0]['step']} ({events[0]['trigger']}) named "
             f"{events[0]['cause']}: {events[0]['evidence']}") if events else ""
    if len(bad) or len(bad_val):
        shown = ", ".join(map(str, bad[:10])) + (", ..." if len(bad) > 10 else "")
        return {**found, "cause": "bad_data", "problem": "none", "evidence":
                f"{len(bad)} training rows (indices {shown}) and {len(bad_val)} validation "
                f"rows hold NaN/inf" + (f"; {guard}" if guard else "")}
    ratio = float(row["val/trivial"])
    if row["learned"] and not events:
        return {**found, "cause": "healthy", "problem": "none", "evidence":
                f"no guard event; val/trivial {ratio:.3g} reaches the bar"}
    gains = kernel_gains(result.initial_weights)
    product = float(np.prod(gains)) if gains else 1.0
    deep = len(gains) >= MIN_DEPTH
    rnn = recurrent_gain(result.initial_weights)
    rms = input_rms(x)
    first_last = layer_norm_ratio(result.layer_norms)
    facts = (f"val/trivial {ratio:.3g}; {len(gains)} kernels' gains multiply to {product:.3g}; "
             f"input rms {rms:.3g}" + (f"; SimpleRNN recurrent gain {rnn:.3g}" if rnn else "")
             + (f"; first/last layer gradient norm {first_last:.3g}" if first_last else ""))
    exploding = ("recurrence" if rnn and rnn > RECURRENT_GAIN else
                 "depth" if deep and product > DEPTH_GAIN else
                 "input_scale" if rms > INPUT_RMS else "learning_rate")
    if events and events[0]["cause"] != "unknown":
        return {**found, "cause": events[0]["cause"], "problem": "exploding", "evidence": guard}
    if events:  # the guard could not tell (too little history): what was known before step 1
        return {**found, "cause": exploding, "problem": "exploding",
                "evidence": f"{guard}; named from what was known before step 1: {facts}"}
    if not math.isfinite(ratio) or ratio >= ASTRONOMICAL:
        return {**found, "cause": exploding, "problem": "exploding", "evidence":
                f"no guard event, but the loss stays finite and astronomical: {facts}"}
    if ratio <= CLEARLY_BELOW:  # it learns: dead units or a small gain product do not stop it
        return {**found, "cause": "healthy", "problem": "none", "evidence":
                f"no guard event; {facts}: below the constant prediction but not at the bar "
                "yet, train longer"}
    layer, dead = dead_units(result.model, x)
    if dead >= DEAD:
        return {**found, "cause": "activation", "problem": "dying_relu", "evidence":
                f"{dead:.0%} of {layer}'s ReLU units never fire on the training inputs; {facts}"}
    if (deep and product < VANISHING) or (first_last is not None and first_last < VANISHING):
        return {**found, "cause": "depth", "problem": "vanishing", "evidence":
                f"the signal shrinks through the stack: {facts}"}
    if ratio < STILL_LEARNING and row.get("trend") == "improving":
        return {**found, "cause": "healthy", "problem": "none", "evidence":
                f"no guard event and no symptom; {facts}: below the constant prediction and "
                "still improving at the last epoch, train longer"}
    return {**found, "cause": "unknown", "problem": "none", "evidence":
            f"no guard event and no symptom, but it does not learn: {facts}"}


def judge_after_search(first: dict, trials) -> dict:
    """Trial 0 judged again once the search found no cure: the search as the experiment.

    A set-up with no guard event and no symptom (`cause="unknown"`) that beats
    the constant prediction (val/trivial below 1), and that no cure tried did
    clearly better than (each cure's val/trivial above `NO_BETTER` x trial
    0's), is healthy: what limits it is its data (noisy labels, few rows),
    not its set-up. Anything else is returned unchanged.

    Args:
        first: trial 0's findings (`name_problem`'s dict).
        trials: the trials table (`trial`, `val/trivial`, `exploded_step`, `note`).

    Returns:
        `first`, or a copy with `cause="healthy"` and the evidence.
    """
    table = trials[trials["note"] == ""]
    zero = table[table["trial"] == 0]
    cures = table[table["trial"] > 0]["val/trivial"].astype(float)
    if first["cause"] != "unknown" or zero.empty or cures.empty:
        return first
    ratio = float(zero["val/trivial"].iloc[0])
    if not ratio < 1 or zero["exploded_step"].notna().iloc[0] or (cures <= NO_BETTER * ratio).any():
        return first
    return {**first, "cause": "healthy", "evidence":
            f"no guard event and no symptom; val/trivial {ratio:.3g} beats the constant prediction, "
            f"and none of the {len(cures)} cures tried did clearly better (best {cures.min():.3g}): "
            "the data limit it, not the set-up"}


def clip_norm(norms, events) -> float | None:
    """A clipping threshold: the median finite global norm before the onset.

    Before the event's onset; when the run diverged from its first steps
    (no step before the onset), the steps before the event itself, which
    are still below the norm that tripped the guard. Without an event, all
    steps. `None` when no finite norm was applied before the event.
    """
    values, steps = norms["grad_norm"].to_numpy(np.float64), norms["step"].to_numpy()
    finite = np.isfinite(values)
    if not events:
        return float(np.median(values[finite])) if finite.any() else None
    event = events[0]
    for last in (event.get("onset_step", event["step"]), event["step"]):
        keep = finite & (steps < last)
        if keep.any():
            return float(np.median(values[keep]))
    return None


def kernel_gains(weights: dict) -> list[float]:
    """Each kernel's gain: its root mean square x sqrt(fan-in).

    That is ||W||_F / sqrt(fan-out), the average amplification of a random
    input: about 1 for Glorot/LeCun initialization, sqrt(2) for He, and
    exactly `a` for `a * I` (where the weights' std would say ~a / sqrt(n)).
    """
    return [float(np.sqrt(np.mean(np.square(w, dtype=np.float64)) * np.prod(w.shape[:-1])))
            for path, w in weights.items()
            if path.endswith("kernel") and "recurrent" not in path and w.ndim >= 2 and w.size > 1]


def recurrent_gain(weights: dict) -> float | None:
    """The largest singular value of the SimpleRNN recurrent kernels (square ones).

    The same measure as NaNGuard's `recurrence` sign (`ungated_recurrent_gain`).
    """
    return ungated_recurrent_gain(
        [w for path, w in weights.items() if path.endswith("recurrent_kernel")]
    )


def input_rms(x) -> float:
    arrays = x if isinstance(x, (list, tuple)) else [x]
    values = np.concatenate([np.asarray(a, np.float64).ravel() for a in arrays])
    values = values[np.isfinite(values)]
    return float(np.sqrt(np.mean(values**2))) if values.size else 0.0


def dead_units(model, x, rows: int = 512) -> tuple[str, float]:
    """The ReLU layer with the most units that never fire, and that fraction."""
    layers = [layer for layer in getattr(model, "layers", [])
              if layer.get_config().get("activation") == "relu"
              or isinstance(layer, keras.layers.ReLU)]
    if not layers:
        return "", 0.0
    try:
        inputs = model.inputs if len(model.inputs) > 1 else model.inputs[0]  # one input: no list (Keras warns)
        probe = keras.Model(inputs, [layer.output for layer in layers])
    except (AttributeError, ValueError):  # a subclassed model: no graph to probe
        return "", 0.0
    sample = [a[:rows] for a in x] if isinstance(x, (list, tuple)) else x[:rows]
    outputs = predict(probe, sample)
    outputs = outputs if isinstance(outputs, list) else [outputs]
    fractions = [float(np.mean(np.asarray(o).reshape(-1, o.shape[-1]).max(0) <= 0)) for o in outputs]
    worst = int(np.argmax(fractions))
    return layers[worst].name, fractions[worst]


def layer_norm_ratio(layer_norms) -> float | None:
    """The input-side layer's median gradient norm over the output side's."""
    if layer_norms.empty:
        return None
    medians = layer_norms.groupby("layer", sort=False)["norm"].median()
    medians = medians[np.isfinite(medians)]
    if len(medians) < 2 or medians.iloc[-1] <= 0:
        return None
    return float(medians.iloc[0] / medians.iloc[-1])
