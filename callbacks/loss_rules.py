"""What the loss says: batch losses from Keras' running mean, growth, rise and stall.

Pure numpy (unit-tested in tests/callbacks/test_diagnosis.py). The
absolute evidence for a net that stays finite: a running median only
compares a run with itself.
"""

from __future__ import annotations

import keras
import numpy as np

from .norm_history import RECENT

# Batch losses this many times the best running loss (and above the fit's
# first), `RECENT` in a row, are a divergence even when every value stays
# finite (Adam at a rate far too high; `loss_has_grown`).
LOSS_GROWTH = 1e3
# Absolute evidence, for a net broken from its first step that stays finite
# (a running median only compares a run with itself). Set on the population
# of `python -m benchmarks.diagnosis` (docs/nan_guard.md).
# A running loss this many times its early level (`loss_has_risen`), for
# `RECENT` steps in a row, is a divergence that stays finite (Adam at a rate
# far too high: 20-400x its first loss); no healthy run of the population
# stayed above 4.9x for 3 steps.
LOSS_RISE = 10.0
# Steps of loss history before a stall is judged: one epoch of the population.
STALL_STEPS = 8
# A model with a structural sign (`structural_sign`) whose running loss has
# not fallen below this share of its first value after `STALL_STEPS` steps
# is not learning; no healthy run of the population has a structural sign.
STALL_LOSS = 0.9
# The first step's global gradient norm over the square root of its loss:
# for a squared error both scale with the residual, so the ratio measures
# how sensitive the output is to the weights, whatever the targets' scale.
# The population's healthy runs read at most 7.7; its deep nets at gain
# 3-6 and its unscaled inputs 234 to 3e7 (even where Adam lowers their
# astronomical loss by half in 8 steps). With a structural sign, above this
# is a stall too.
SENSITIVITY = 100.0
# ...unless the net is plainly learning: a loss that fell below this share
# of its first in `STALL_STEPS` steps, and is not astronomical (first loss
# under `SENSITIVITY_LOSS`), is no stall whatever the ratio. Measured: the
# keras-io Boston regression on its raw features, as published (healthy),
# reads 730 and falls to 0.46 of 633 in 8 steps; the population's broken
# runs read 337-7.6e6 and fall to 0.51 or more, or start at 2.2e6 and above.
SENSITIVITY_FALL = 0.5
SENSITIVITY_LOSS = 1e5
# A classifier whose running loss after `STALL_STEPS` steps is still this many
# times a chance guess's (ln of its classes), with a structural sign, is
# stalled too: keras-io's MNIST convnet on pixels x1e4 starts at 23 (10x
# ln 10) and "falls" to 16 while every prediction is saturated (skill 0.32
# of the healthy 0.89). A sane classifier starts near ln C. Not where the
# loss plainly falls (`SENSITIVITY_FALL`): the custom-loop guide's net on raw
# 0..255 pixels starts at 60-71 and reads 0.34-0.36 of that at step 8.
CHANCE_FACTOR = 5.0
# A loss's name without underscores, lower case -> binary (ln 2 an output)?
_CROSS_ENTROPIES = {"categoricalcrossentropy": False,
                    "sparsecategoricalcrossentropy": False, "binarycrossentropy": True}


def chance_loss(model) -> float | None:
    """A chance guess's cross-entropy for a one-output classifier, or `None`.

    ln C for a categorical cross-entropy over C outputs (ln 2 for a binary
    one); `None` for any other loss, several outputs, or an output whose
    width is not known before training.
    """
    loss = getattr(model, "loss", None)
    name = loss if isinstance(loss, str) else (
        getattr(loss, "name", None) or getattr(loss, "__name__", None) or type(loss).__name__)
    binary = _CROSS_ENTROPIES.get(str(name).lower().replace("_", ""))
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        outputs = None  # a subclassed model: its outputs are not known
    if binary is None or (outputs and len(outputs) != 1):
        return None
    if binary:  # ln 2 whatever the width (a mean over the outputs), known or not
        return float(np.log(2.0))
    if not outputs:
        return None
    classes = outputs[0].shape[-1]
    return float(np.log(classes)) if classes is not None and classes >= 2 else None


def regularization_penalty(model) -> float:
    """The model's regularization penalties now (`model.losses`, summed), 0 where unknown.

    Keras' loss carries them: keras-io's EEG classifier, its L2 of 0.01 on
    a dense head of 45M weights, starts at a loss of ~30 where ln 19 is
    2.9, a healthy net far above chance by the loss alone (the fourth
    held-out round's one false warning).
    """
    try:
        return float(sum(float(np.asarray(keras.ops.convert_to_numpy(l))) for l in model.losses))
    except Exception:  # noqa: BLE001  (a penalty we cannot read: none)
        return 0.0


def batch_loss(batch: int, running: float, prev_batch: int, prev_running: float) -> float:
    """The mean loss of batches `prev_batch + 1 .. batch` from Keras' running means.

    Keras' batch `logs["loss"]` is the epoch's running mean, so one huge
    batch keeps it high for many steps after the loss has come back (a
    tiny GPT-2 under SGD: batch losses 0.96, 35.9, 8.4, 4.8 read 0.96, 18.4,
    14.4, 12.0). With equal batches the sum after batch `b` (0-based in the
    epoch) is `(b + 1) * running`; `prev_batch` is -1 (and `prev_running`
    0) at the epoch's start. A smaller last batch makes it approximate.
    """
    if batch <= prev_batch:
        return float(running)
    return float(((batch + 1) * running - (prev_batch + 1) * prev_running)
                 / (batch - prev_batch))


def loss_has_grown(batch_losses, best: float, first: float) -> bool:
    """Whether the last `RECENT` batch losses all exceed `LOSS_GROWTH` x the best.

    `best` is the lowest running loss before them and `first` the fit's
    first; the newest batch loss must be above `first` too. The batches' own
    losses (`batch_loss`), `RECENT` in a row: one outlier target holds the
    running mean high for steps after its batch (a target of 1e4 among unit
    ones read a running loss 4.9e5x its best for the rest of the epoch,
    while the next batches' losses were back at 0.5), and a finite
    divergence keeps every batch high.
    """
    recent = np.asarray(batch_losses, dtype=np.float64)[-RECENT:]
    return bool(len(recent) == RECENT and best is not None and best > 0
                and np.isfinite(recent).all()
                and (recent > LOSS_GROWTH * best).all() and recent[-1] > first)


def loss_has_risen(losses, batch_losses=None) -> bool:
    """Whether the last `RECENT` batch losses all exceed `LOSS_RISE` x the early level.

    A divergence that stays finite and below `LOSS_GROWTH`: Adam at a rate
    far too high on a GRU or a Conv2D climbs to 20-400x its first loss
    while its norms grow too slowly for the spike gate, from step 2 on. The
    early level is the first running loss, or the median of the fit's first
    `STALL_STEPS` (those before the last `RECENT`) if lower: not the best
    loss so far, because at a later epoch's start the running loss is one
    batch's, and with batch size 2 one batch read 0.05 where the epoch's
    mean was 0.49 (a healthy run, 9.7x "its best" for 20 steps). Requiring `RECENT` steps in a row (and,
    in the guard, norms that are not growing) leaves a fast explosion to the
    spike gate and the non-finite checks, which name its onset and suspects.

    The recent losses are the batches' own (`batch_loss`), not the running
    mean, which one transient spike holds above the level for steps after
    the loss came back.

    Args:
        losses: the running losses since the fit began, one per step,
            oldest first (the guard keeps the first `STALL_STEPS` and the
            last `RECENT`).
        batch_losses: the batch losses of the same steps (`batch_loss`);
            `None` uses the running losses.
    """
    losses = np.asarray(losses, dtype=np.float64)
    recent = losses if batch_losses is None else np.asarray(batch_losses, np.float64)
    if len(losses) <= RECENT or not np.isfinite(losses).all():
        return False
    early = early_level(losses)
    return bool(early > 0 and (recent[-RECENT:] > LOSS_RISE * early).all())


def early_level(losses) -> float:
    """The first running loss, or the median of the first `STALL_STEPS` if lower.

    Only the losses before the last `RECENT` count (`loss_has_risen`).
    """
    # At most STALL_STEPS numbers, every batch: Python's sort is ~50x
    # faster than np.median here, and gives the same median.
    early = [float(v) for v in losses[:max(min(STALL_STEPS, len(losses) - RECENT), 1)]]
    ordered = sorted(early)
    n = len(ordered)
    median = 0.5 * (ordered[(n - 1) // 2] + ordered[n // 2])
    return min(early[0], median)


def first_step_sensitivity(norm: float, loss: float) -> float | None:
    """The first step's global gradient norm over the square root of its loss.

    Both scale with the residual under a squared error, so the ratio is
    about the output's sensitivity to the weights: a few units for a
    Glorot-initialized net, hundreds to millions for one whose gains
    multiply past `DEPTH_GAIN` or whose inputs are far from unit scale.
    `None` where either is non-finite or the loss is not positive.
    """
    if not (np.isfinite(norm) and np.isfinite(loss)) or loss <= 0:
        return None
    return float(norm / np.sqrt(loss))


def windows_flat(batch_losses) -> bool:
    """Whether the second `STALL_STEPS` steps' mean batch loss is not below the first's.

    Not below `STALL_LOSS` x the mean of the first `STALL_STEPS` batch
    losses (`batch_loss`), where `batch_losses` holds at least
    `2 * STALL_STEPS` of them, the fit's first. The first loss alone is one
    batch's: a ReLU SimpleRNN at recurrent gain 2 whose batch losses repeat
    every epoch (1.29, 0.64, 1.23, ...: it learns nothing) reads a running
    loss 0.75x its first batch's at step 2, so it never stalls by that
    measure; its second 8 steps' mean is 0.98x its first 8's.
    """
    losses = np.asarray(batch_losses, dtype=np.float64)[:2 * STALL_STEPS]
    if len(losses) < 2 * STALL_STEPS or not np.isfinite(losses).all():
        return False
    first, second = losses[:STALL_STEPS].mean(), losses[STALL_STEPS:].mean()
    return bool(first > 0 and second >= STALL_LOSS * first)


def find_stall(losses, structure: str | None,
               sensitivity: float | None = None, batch_losses=None,
               chance: float | None = None, penalty: float = 0.0) -> str | None:
    """A model with a structural sign that is not learning: broken from step 1.

    Its norms never spike against their own history, so only absolute
    evidence catches it: the structure measured before step 1, and after
    `STALL_STEPS` steps either a running loss that has not fallen below
    `STALL_LOSS` x its first value, or a `first_step_sensitivity` above
    `SENSITIVITY` (an astronomical loss that Adam lowers, but from 1e7;
    not where a loss under `SENSITIVITY_LOSS` fell below `SENSITIVITY_FALL`
    x its first: that net learns);
    or, after `2 * STALL_STEPS` steps, a second window of batch losses
    whose mean has not fallen below `STALL_LOSS` x the first's
    (`windows_flat`).

    Args:
        losses: the running losses since the fit began, one per step.
        structure: `structural_sign` of the model, or `None`.
        sensitivity: `first_step_sensitivity`, or `None`. Defaults to `None`.
        batch_losses: the fit's first batch losses (`batch_loss`), or
            `None`. Defaults to `None`.
        chance: `chance_loss` of the model, or `None`: a running loss at
            step `STALL_STEPS` above `CHANCE_FACTOR` x it is a stall,
            unless the net is plainly learning (as for `sensitivity`).
        penalty: the regularization penalty in the loss (`regularization_penalty`),
            taken off the running loss before it is compared with `chance`.

    Returns:
        Which evidence holds, first in this order: `"flat"` (the running
        loss), `"sensitivity"`, `"chance"` or `"windows"`; `None` when the model does
        not stall.
    """
    losses = np.asarray(losses, dtype=np.float64)
    if len(losses) < STALL_STEPS or not np.isfinite(losses).all():
        return None
    flat = bool(losses[0] > 0 and losses.min() >= STALL_LOSS * losses[0])
    if structure is None:
        # No structural sign: only a classifier far above chance whose loss
        # has not moved (`CHANCE_FACTOR`). keras-io's recommender with its
        # embedding tables at ~3e4 sat at 1.3e8x ln 2 (its L2 penalty), flat
        # for 5 epochs, silent; a healthy classifier starts near ln C.
        return ("chance" if flat and chance is not None
                and losses[STALL_STEPS - 1] - penalty > CHANCE_FACTOR * chance else None)
    if flat:
        return "flat"
    learning = (losses[0] < SENSITIVITY_LOSS
                and losses[:STALL_STEPS].min() < SENSITIVITY_FALL * losses[0])
    if sensitivity is not None and sensitivity > SENSITIVITY and not learning:
        return "sensitivity"
    if (chance is not None and losses[STALL_STEPS - 1] - penalty > CHANCE_FACTOR * chance
            and not learning):
        return "chance"
    if batch_losses is not None and windows_flat(batch_losses):
        return "windows"
    return None
