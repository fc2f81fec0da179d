"""Naming why training failed: a cause, the evidence and a cure (numpy)."""

from __future__ import annotations

import numpy as np

CAUSES = (
    "learning_rate", "input_scale", "depth", "recurrence", "bad_data",
    "loss_scale", "unknown",
)
GROWTH = 3.0  # recent norms this far above their median: a divergence under way
RECENT = 3  # how many steps before the event count as "recent"
INPUT_SCALE = 30.0  # inputs' estimated root mean square that is not "unit"
DEPTH_GAIN = 1e3  # product of the kernels' gains through the stack
MIN_DEPTH = 4  # kernels needed to call a failure `depth`


def measure_growth(norms: np.ndarray, window: int) -> dict:
    """How far the last `RECENT` norms rose above the median of those before.

    With fewer than `2 * RECENT` norms, the recent ones are fewer (at least
    one is left for the median).

    Args:
        norms: the finite global norms of applied steps before the event,
            oldest first.
        window: how many steps make the median.

    Returns:
        A dict: `growth` (largest recent norm / median; `None` with too
        little history), `median`, `recent` (the recent norms).
    """
    norms = np.asarray(norms, dtype=np.float64)
    # With little history, fewer recent steps (at least one before them).
    k = min(RECENT, len(norms) - 1)
    earlier, recent = norms[:-k][-window:], norms[-k:]
    if k < 1:
        return {"growth": None, "median": None, "recent": recent.tolist()}
    median = float(np.median(earlier))
    growth = float(recent.max() / median) if median > 0 else None
    return {"growth": growth, "median": median, "recent": recent.tolist()}


def kernel_gains(kernels: list[np.ndarray]) -> list[float]:
    """Each 2-D kernel's gain: weight std times sqrt(fan-in).

    About 1 for Glorot / He initialization (sqrt(2) for He); the product
    through a stack is how much the stack amplifies a signal.
    """
    return [
        float(np.std(k) * np.sqrt(k.shape[0]))
        for k in kernels if k.ndim == 2 and k.size > 1
    ]


def name_cause(
    *,
    trigger: str,
    growth: dict,
    suspects: list[dict],
    repeated: bool,
    gains: list[float],
    stable_norms: np.ndarray,
    learning_rate: float,
    epoch: int,
    batch: int,
    input_ratio: float | None = None,
    recurrent_gain: float | None = None,
    loss_scale: dict | None = None,
) -> dict:
    """Names the likeliest cause of a NaNGuard event, with evidence and cure.

    Decided in this order, the first that holds:

    - `loss_scale`: the loss scaler of a mixed-precision run kept skipping
      steps or its scale collapsed (`trigger="loss_scale"`, decided by
      `LossScaleWatch`: 3 consecutive skips once the scale has settled, or
      a scale below 1, by default).
    - `bad_data`: the same batch index failed in an earlier epoch, or
      a gradient turned non-finite with no growth before it (the last
      `RECENT` norms within `GROWTH` x their median, no variable 10x above
      its own median).
    - `recurrence`: the first variable to leave its median is a recurrent
      layer's (its path names a recurrent kernel or an RNN cell), or the
      norms grew and a recurrent kernel's largest singular value (at the
      start of the fit) exceeds 1.
    - `depth`: at least `MIN_DEPTH` kernels whose gains (weight std x
      sqrt(fan-in)) multiply to more than `DEPTH_GAIN`.
    - `input_scale`: the first layer's kernel gradient norm over its bias's,
      divided by sqrt(fan-in), exceeds `INPUT_SCALE`. For `x @ W + b` that
      ratio estimates the inputs' root mean square (~1 when standardized).
    - `learning_rate`: the norms grew before the event (or the weights
      overflowed) on a network that is none of the above.
    - `unknown`: none of these.

    Args:
        trigger: the event's trigger.
        growth: `measure_growth`'s result.
        suspects: variables that crossed the threshold (`rank_suspects`).
        repeated: the same batch index failed in an earlier epoch.
        gains: `kernel_gains` of the model's kernels, input side first.
        stable_norms: finite global norms of the applied steps before the
            onset (for the clipping threshold suggested).
        learning_rate: the learning rate in use.
        epoch: 0-based epoch of the event.
        batch: 0-based batch index within the epoch.
        input_ratio: the first layer's kernel/bias gradient norm ratio per
            input feature (`None` without a first Dense-like layer).
        recurrent_gain: the largest singular value of the model's recurrent
            kernels at the start of the fit, or `None`.
        loss_scale: `LossScaleWatch.update`'s finding for a `loss_scale`
            event (the skips and the scale history), else `None`.

    Returns:
        A dict: `cause` (one of `CAUSES`), `evidence` (a sentence) and
        `cure` (a sentence with numbers).
    """
    clip = float(np.percentile(stable_norms, 90)) if len(stable_norms) else None
    clip_text = (
        f"clip the global norm at ~{clip:.3g} (the 90th percentile of the "
        f"stable norms), e.g. global_clipnorm={clip:.3g}" if clip else
        "clip the global norm (too little history to suggest a value)"
    )
    g = growth.get("growth")
    grew = (g is not None and g >= GROWTH) or trigger in (
        "nonfinite_weights", "gradient_spike"
    )
    first = suspects[0]["variable"] if suspects else ""
    where = f"epoch {epoch}, batch {batch} (0-based)"

    if trigger == "loss_scale":
        return _loss_scale(loss_scale or {}, g, learning_rate, clip_text)
    if repeated or (trigger == "nonfinite_gradient" and g is not None and not grew
                    and not suspects):
        evidence = (
            f"batch {batch} failed in an earlier epoch too ({where})"
            if repeated else
            f"the gradient turned non-finite at {where} with no growth "
            f"before it (recent norms at most {g:.2g}x their median)"
        )
        return _named(
            "bad_data", evidence,
            f"check the rows of {where} for NaN/inf or extreme values and "
            "fix or drop them; the guard skipped that step",
        )
    recurrent_first = "recurrent" in first or "_cell/" in first
    if recurrent_first or (grew and recurrent_gain is not None and recurrent_gain > 1.0):
        return _named(
            "recurrence",
            f"{first} left its median first "
            f"({suspects[0]['ratio']:.3g}x at step {suspects[0]['step']})"
            if recurrent_first else
            f"the norms grew and the recurrent kernel's largest singular "
            f"value is {recurrent_gain:.3g} (> 1: the recurrence amplifies)",
            clip_text + "; or shorten the sequences / use an LSTM or GRU with "
            "an orthogonal recurrent initializer",
        )
    total = float(np.prod(gains)) if gains else 0.0
    if len(gains) >= MIN_DEPTH and total > DEPTH_GAIN:
        return _named(
            "depth",
            f"{len(gains)} kernels with gains {min(gains):.2g}..{max(gains):.2g} "
            f"multiply to {total:.3g}",
            "initialize with fan-in variance scaling (e.g. 'glorot_uniform', "
            "gain ~1), or add normalization / residual connections; "
            + clip_text,
        )
    if input_ratio is not None and input_ratio > INPUT_SCALE:
        return _named(
            "input_scale",
            f"the first kernel's gradient norm is {input_ratio:.3g}x its "
            "bias's per input feature: the inputs' root mean square is "
            f"~{input_ratio:.3g}, not ~1",
            "standardize the inputs (zero mean, unit variance per feature, "
            "e.g. keras.layers.Normalization adapted on the training data)",
        )
    if grew:
        if g is not None and g >= GROWTH:
            evidence = (f"the global norm rose to {g:.3g}x its median in the "
                        f"{RECENT} steps before")
        elif trigger == "gradient_spike":
            evidence = "the global norm jumped far above its median"
        else:
            evidence = "the weights overflowed after an update"
        return _named(
            "learning_rate", evidence + " on a network with unit-scale gains",
            f"lower the learning rate to ~{learning_rate / 10:.3g} (a tenth "
            f"of {learning_rate:.3g}); or " + clip_text,
        )
    return _named("unknown", "no growth, origin or scale stood out", clip_text)


def _loss_scale(found: dict, growth, learning_rate: float, clip_text: str) -> dict:
    """The `loss_scale` cause: its evidence is the scale history."""
    scales = [found.get("scale_before", float("nan")), *found.get("scales", [])]
    history = " -> ".join(f"{s:.6g}" for s in scales)
    n = found.get("skipped", 0)
    evidence = (
        f"the loss scaler skipped {n} step{'s' * (n != 1)} in a row (scale "
        f"{history}, halved on each overflow): the float16 gradients overflow "
        + (f"at a scale {scales[0] / scales[-1]:.0f}x lower than the one the "
           "last applied step fitted" if found.get("settled", True) else
           "at every scale tried, and no step has fitted float16 yet")
    )
    if found.get("rule") == "min_scale":
        evidence += f", and below {found.get('min_scale', 1.0):.6g}"
    if growth is not None and growth >= GROWTH:
        evidence += f"; the global norm had risen to {growth:.3g}x its median"
    return _named(
        "loss_scale", evidence,
        f"lower the learning rate to ~{learning_rate / 10:.3g} (a tenth of "
        f"{learning_rate:.3g}); or keep the layers whose values overflow "
        "float16 in float32 (dtype='float32', e.g. the output layer); or "
        + clip_text,
    )


def _named(cause: str, evidence: str, cure: str) -> dict:
    return {"cause": cause, "evidence": evidence, "cure": cure}
