"""`decide_step`: what the monitor does with one step (apply, skip, clip a spike).

A pure function of the step's global norm and the spike gate's inputs,
written with `keras.ops`, so that `GradientMonitor.apply` (TensorFlow,
torch), `stateless_apply` (JAX) and the `tf.distribute` path take the same
decision from one place. Which branches exist is decided in Python, when the
step is traced: a monitor that skips nothing and has no spike gate traces
no condition at all.
"""

from __future__ import annotations

from typing import NamedTuple

from keras import ops

from .gradient_record import APPLIED, CLIPPED_SPIKE, NONFINITE, SKIPPED_SPIKE


class SpikeGate(NamedTuple):
    """The spike gate's inputs at one step (tensors or numbers).

    Attributes:
        factor: a step is a spike when its norm exceeds `factor * median`;
            0 turns the gate off.
        median: the running median of the recent applied norms.
        n: how many norms the median is taken over.
        min_history: the fewest norms the gate decides on.
        clip: > 0 clips a spike to the median, 0 skips it.
        spread: the recent norms' 90th percentile over their 10th (`inf`
            when the 10th is 0). Defaults to 1.
        peak: the largest of the recent norms; where `spread` exceeds
            `SPREAD`, a spike must exceed `factor` times it too. Defaults
            to 0.
    """

    factor: object
    median: object
    n: object
    min_history: object
    clip: object
    spread: object = 1.0
    peak: object = 0.0


# Norms of whole batches lie within a few times each other; where the recent
# norms already range more than this (a 90th percentile over a 10th), a ratio
# to their median says little, and a spike must also be `factor` x the
# largest of them. Per-example steps (batch size 1) on a 3-class MLP that
# learns (SGD 0.001, momentum 0.9; 2,100 steps): norms up to 3,256x their
# running median of 50, never 15x their running largest; the plain gate
# stopped it at step 82 (validation loss 2.22 where a plain fit reached 0.02).
SPREAD = 10.0
# ...judged over at least this many norms: in a fit's first steps a range that
# wide is a divergence under way (a ReLU SimpleRNN at recurrent gain 1.3 under
# SGD: the gate skipped its step 6-12 spike; judged by the spread of 5-11
# norms, it let it through and the run went on to a `stalled` warning).
SPREAD_HISTORY = 20


class StepDecision(NamedTuple):
    """What to do with one step.

    Attributes:
        update: bool tensor, run the inner optimizer's update; `None` when
            it always runs (nothing can be skipped: no condition to trace).
        count_skip: bool tensor, count a step the loss scaler skipped
            without counting it (the step number is not reused); `None`
            when that cannot happen. A step that `update` skips is counted
            by its own branch.
        status: float32 scalar for the ring (`gradient_record.APPLIED` ...).
        limit: float32 scalar, the global norm a clipped spike is scaled
            down to (`inf`: no clipping); `None` without a spike gate.
    """

    update: object
    count_skip: object
    status: object
    limit: object


def decide_step(
    norm, *, skip_nonfinite: bool, loss_scaled: bool, gate: SpikeGate | None = None,
    norm_clipped=None,
) -> StepDecision:
    """Decides one step from its global norm, before the update.

    - A step whose gradient holds NaN or inf (its global norm is then NaN
      or inf, as a sum of squares), or whose global norm overflows, is
      `NONFINITE`. It is skipped when
      `skip_nonfinite` is set and no `LossScaleOptimizer` is inside; with
      one, the loss scaler skips it and the monitor only counts it.
    - With a spike gate, a finite step whose norm exceeds `factor` times
      the running median (over at least `min_history` norms, median > 0;
      and `factor` times their largest, where at least `SPREAD_HISTORY`
      of them range wider than `SPREAD`) is a spike: `SKIPPED_SPIKE` (not applied, counted) or, with `clip`,
      `CLIPPED_SPIKE` (applied with its norm scaled down to the median).
      The gate judges the update the optimizer would apply: the norm after
      the user's clipping (`norm_clipped`), where a clip is set. A step
      that a clip already holds below `factor` x the median is no spike:
      skipping it only repeats the same weights into the next batch. (The
      callback-overhead benchmark's 20-layer MLP under AutoClip: its raw
      norms grew from ~1 to 63, 56x their median, while every update was
      clipped to 0.27-0.35; skipped, the next step spiked again and the
      guard stopped a run that, unguarded, went on to a loss of 0.10 with
      the targets' variance at 1.02.)

    Args:
        norm: float32 scalar, the global norm (unscaled).
        skip_nonfinite: skip non-finite steps (Python bool, decided when the
            step is traced).
        loss_scaled: a `LossScaleOptimizer` inside handles non-finite steps.
        gate: the spike gate's inputs, or `None` when it is not compiled in.
        norm_clipped: float32 scalar, the global norm after clipping, or
            `None` (no clip: the gate reads `norm`).

    Returns:
        A `StepDecision`. Elementwise: `norm` and the gate's fields may be
        arrays of equal shape (the unit tests decide many steps at once).
    """
    finite = ops.isfinite(norm)
    status = ops.where(finite, float(APPLIED), float(NONFINITE))
    limit = skipped_spike = None
    if gate is not None:
        judged = norm if norm_clipped is None else norm_clipped
        spike = (
            finite & (gate.factor > 0)
            & (ops.cast(gate.n, "float32") >= gate.min_history)
            & (gate.median > 0)
            & (judged > gate.factor * gate.median)
            & ((ops.cast(gate.spread, "float32") <= SPREAD)
               | (ops.cast(gate.n, "float32") < SPREAD_HISTORY)
               | (judged > gate.factor * ops.cast(gate.peak, "float32")))
        )
        clipped = spike & (gate.clip > 0)
        skipped_spike = spike & ops.logical_not(clipped)
        limit = ops.where(clipped, gate.median, float("inf"))
        status = ops.where(
            spike,
            ops.where(clipped, float(CLIPPED_SPIKE), float(SKIPPED_SPIKE)),
            status,
        )
    update = None  # None: always; no condition is traced
    if skip_nonfinite and not loss_scaled:
        update = finite
    if skipped_spike is not None:
        keep = ops.logical_not(skipped_spike)
        update = keep if update is None else update & keep
    count_skip = None
    if loss_scaled:  # the loss scaler skipped it, uncounted
        count_skip = ops.logical_not(finite)
    if limit is not None:
        limit = ops.cast(limit, "float32")
    return StepDecision(update, count_skip, ops.cast(status, "float32"), limit)
