"""Blow-ups the running median cannot see: in the first steps, and behind a clip.

Pure functions (numpy in, a `Blowup` or `None` out), unit-tested in
tests/callbacks/test_blowup_rules.py; NaNGuard calls them with the monitor's
record and its own batch losses.

- `find_early_blowup`: the spike gate needs `min_history` applied steps for
  a median, so a step-2 explosion (a convnet at lr x100: norm 0.74 -> 124,
  loss 2.31 -> 83) passed unseen. In the first steps the evidence is
  absolute: against the fit's first step.
- `find_held_spike`: the gate judges the update the optimizer applies (the
  norm after the user's clip). A clip that holds a 100x raw spike keeps the
  weights finite but the net may be wrecked (a text CNN at lr x100 under
  `global_clipnorm`: raw norms up to 672, batch losses up to 309, no
  event): a warning with the raw figure.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .norm_history import NORM_FLOOR, running_median

EARLY_NORM_JUMP = 100.0  # a raw norm this many times the fit's first: blown up
EARLY_LOSS_JUMP = 10.0  # a batch loss this many times the first (with the norm x EARLY_BOTH)
EARLY_BOTH = 10.0  # the norm's rise that must come with EARLY_LOSS_JUMP
# Or a batch loss this many times the first with the norm EARLY_BOTH_HUGE x
# (session 8): keras-io's multi-label tf-idf MLP at lr x100 (held out,
# round 6) went loss 1.77 -> 195 (110x) with its norm 21.8 -> 160 (7.3x) at
# step 2, then gave the label prior for every paper, at chance, with no
# event. In the first six steps of healthy runs the batch loss rose at most
# 3.9x (30 keras-io scripts, two seeds each: the U-Net, its norm 1.6x) and
# 11.2x, its norm 3.98x there (the generated population's 74: a SimpleRNN
# with dropout under SGD); no healthy run of either meets this pair.
EARLY_LOSS_HUGE = 50.0
EARLY_BOTH_HUGE = 3.0
HELD_SPIKE = 100.0  # a raw norm this many times its running median, held by a clip
LOSS_FLOOR = 1e-8  # a first loss below this counts as this


@dataclasses.dataclass(frozen=True)
class Blowup:
    """A blow-up found: at which step, and in words, with the numbers."""

    step: int
    detail: str


def find_early_blowup(steps, norms, losses) -> Blowup | None:
    """The first step whose raw norm or batch loss left the fit's first step's far behind.

    A raw global norm `EARLY_NORM_JUMP` x the first step's, or a batch loss
    `EARLY_LOSS_JUMP` x the first's together with a norm `EARLY_BOTH` x, or
    `EARLY_LOSS_HUGE` x with a norm `EARLY_BOTH_HUGE` x (one outlier batch
    raises the loss more than the norm of a sane net; and the replay tells
    a bad batch apart). Non-finite values are the non-finite checks'
    business and are skipped here.

    Args:
        steps: (T,) global steps of the fit's first rows, oldest first.
        norms: (T,) their raw global norms.
        losses: (T,) their batch losses (NaN where unknown).
    """
    norms = np.asarray(norms, dtype=np.float64)
    losses = np.asarray(losses, dtype=np.float64)
    if len(norms) < 2 or not np.isfinite(norms[0]) or norms[0] <= NORM_FLOOR:
        return None
    first_loss = max(float(losses[0]), LOSS_FLOOR) if np.isfinite(losses[0]) else None
    for i in range(1, len(norms)):
        n, loss = norms[i], losses[i]
        if not np.isfinite(n):
            continue
        rise = n / norms[0]
        loss_rise = (loss / first_loss if first_loss is not None and np.isfinite(loss)
                     else None)
        if rise >= EARLY_NORM_JUMP or loss_rise is not None and (
                (loss_rise >= EARLY_LOSS_JUMP and rise >= EARLY_BOTH)
                or (loss_rise >= EARLY_LOSS_HUGE and rise >= EARLY_BOTH_HUGE)):
            said = (f"; the batch loss {losses[0]:.4g} -> {loss:.4g} ({loss_rise:.3g}x)"
                    if loss_rise is not None else "")
            return Blowup(int(steps[i]), (
                f"in the fit's first steps the global gradient norm rose from "
                f"{norms[0]:.4g} (step {int(steps[0])}) to {n:.4g} at step "
                f"{int(steps[i])} ({rise:.3g}x){said}"))
    return None


def find_held_spike(steps, norms, norms_clipped, applied, window: int,
                    since_step: int) -> Blowup | None:
    """The first step after `since_step` whose raw norm is a spike a clip held.

    Raw norm `HELD_SPIKE` x the running median of the earlier applied raw
    norms (over at least 3, median above `NORM_FLOOR`), applied with its
    norm clipped below the raw one.

    Args:
        steps, norms, norms_clipped: (T,) the record's rows, oldest first.
        applied: (T,) bool, the rows whose update was applied.
        window: steps in the running median.
        since_step: only rows after this step are judged.
    """
    norms = np.asarray(norms, dtype=np.float64)
    clipped = np.asarray(norms_clipped, dtype=np.float64)
    applied = np.asarray(applied, dtype=bool)
    base = np.where(applied, norms, np.nan)
    ratio, median = running_median(base, window)
    held = (applied & np.isfinite(norms) & (clipped < norms)
            & (np.nan_to_num(ratio) >= HELD_SPIKE) & (np.asarray(steps) > since_step))
    if not held.any():
        return None
    i = int(np.argmax(held))
    return Blowup(int(steps[i]), (
        f"the raw global gradient norm {norms[i]:.4g} is {ratio[i]:.3g}x its running "
        f"median {median[i]:.4g}; the clip held the update to {clipped[i]:.4g}"))
