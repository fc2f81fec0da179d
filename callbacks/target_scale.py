"""Targets far from unit scale: a sign read off the batch, with absolute floors.

A regression on targets in the 1e5s (prices in cents, counts, a unit
mix-up), or labels multiplied by mistake, trains a net whose loss is the
targets' scale squared (MSE) or times it (cross-entropy): its gradients and
updates are that many times too large, or the loss is dominated by the
scale and never reaches the data. Nothing in the gradient norms or the
weights tells this apart from a learning rate too high; the batch does.

`targets_rms` measures the float targets of a batch (the largest per-column
root mean square, `replay.root_mean_square`); `find_off_scale_targets`
names them off scale only where both floors hold: the targets' root mean
square above `TARGET_SCALE` *and* a batch loss of the fit's first steps
above `TARGET_LOSS` in size (the scale reached the loss; NaNGuard judges
the first 8). A healthy regression on
raw targets of a few tens (Boston's prices in $1000s, root mean square ~23,
first loss ~500) is under both.
"""

from __future__ import annotations

import math

TARGET_SCALE = 1e3  # float targets' root mean square above this: far from unit scale
# And a batch loss of the fit's first steps above this in size: the scale
# reached the loss. 1e2, not 1e3: collaborative_filtering's ratings x1e5
# under its binary cross-entropy (a sigmoid of a dot product) gave first
# batch losses of 404..513, and its model ended at R^2 -3.7 unwarned. A
# healthy fit is kept out by the targets' floor: it holds no float targets
# with a root mean square above 1e3.
TARGET_LOSS = 1e2


def targets_rms(batch) -> float | None:
    """The largest per-column root mean square of a batch's float targets.

    Args:
        batch: `(x, y, sample_weight)` as numpy (`replay.batch_arrays`).

    Returns:
        The root mean square (non-finite values ignored), or `None` where
        the batch has no float targets (integer labels, no `y`).
    """
    from .replay_batches import root_mean_square  # (Keras; this module's rule is pure)

    y = batch[1] if len(batch) > 1 else None
    if y is None:
        return None
    rms = root_mean_square(y)
    return rms if rms > 0 else None


def find_off_scale_targets(rms: float | None, first_loss: float | None) -> str | None:
    """The evidence that the targets are off scale, or `None`.

    Args:
        rms: `targets_rms` of the fit's first batch, or `None`.
        first_loss: a batch loss of the fit's first steps, or `None`.
    """
    if rms is None or first_loss is None or not math.isfinite(first_loss):
        return None
    if rms <= TARGET_SCALE or abs(first_loss) <= TARGET_LOSS:
        return None
    return (f"the targets' root mean square is {rms:.3g} (> {TARGET_SCALE:g}; ~1 for "
            f"standardized targets) and the first batch loss is {first_loss:.3g}")
