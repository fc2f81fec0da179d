"""`LossScaleWatch`: the steps a mixed-precision loss scaler skipped, seen from the host."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .optimizer_chain import loss_scaler

MAX_SKIPS = 3  # consecutive loss-scale skips (after the scale settled) that mean divergence
MIN_SCALE = 1.0  # a loss scale below this means divergence (float16 overflows unscaled)


class LossScaleWatch:
    """Records the steps Keras' `LossScaleOptimizer` skipped, and judges them.

    Under `mixed_float16` the `GradientMonitor` sits *inside* the
    `LossScaleOptimizer`. On a step whose scaled gradients overflow float16,
    the loss scaler halves its scale and returns without calling the monitor:
    that step leaves no ring row and does not advance `iterations`. So a
    skip is seen from the host, after each batch: a batch ran and
    `iterations` did not advance. The watch counts them, keeps the scale's
    history and decides when skipping has become divergence:

    - `max_skips` consecutive skips once the scale has settled (the model
      has applied at least one step: the skips before the first one are the
      scaler's routine search for a scale, from its initial 2**15). Each skip
      halves the scale, so the third consecutive one means the gradients
      grew at least 4x above the largest that fitted float16 a few batches
      earlier, batch after batch;
    - or a skip that leaves the scale below `min_scale` (1.0: the gradients
      overflow float16 even unscaled), settled or not.

    A healthy run skips one step now and then (the scaler doubles its scale
    every 2000 finite steps and halves it back on the next overflow) and
    never meets either rule. With `steps_per_execution > 1` the watch sees
    one batch-end call per execution: skips are counted exactly (batches run
    minus steps applied), but a run of skips is called consecutive only
    when no step was applied within the same execution.

    Args:
        max_skips: int >= 1, consecutive skips that count as divergence.
            Defaults to 3.
        min_scale: float > 0, the scale below which a skip counts as
            divergence. Defaults to 1.0.
    """

    def __init__(self, max_skips: int = MAX_SKIPS, min_scale: float = MIN_SCALE):
        self.max_skips = max_skips
        self.min_scale = float(min_scale)
        self.rows: list[tuple] = []  # (epoch, batch, step, skipped, loss_scale)
        self.scaler = None

    def begin(self, optimizer, iterations: int) -> None:
        """Starts a `fit` call on a model whose optimizer is `optimizer`."""
        self.scaler = loss_scaler(optimizer)
        self.consecutive = 0
        self.scale_before = None  # the scale at the last applied step
        if self.scaler is not None:
            # (epoch, batch, iterations, scale) at the previous call.
            self._last = (0, -1, iterations, self._read())

    def _read(self) -> float:
        if not self.scaler.built:
            return float(self.scaler.initial_scale)
        return float(np.asarray(self.scaler.dynamic_scale.numpy()))

    @property
    def active(self) -> bool:
        return self.scaler is not None

    def restore_scale(self) -> None:
        """Sets the scaler back to its scale before the current run of skips.

        For weights restored from before the skips (the scale those weights
        trained with).
        """
        if self.scaler is None or self.scale_before is None or not self.scaler.built:
            return
        self.scaler.dynamic_scale.assign(self.scale_before)
        self._last = (*self._last[:3], self.scale_before)

    def reset(self) -> None:
        """Forgets the current run of skips (after a rollback)."""
        self.consecutive = 0
        self.scale_before = None

    def update(self, epoch: int, batch: int, iterations: int) -> dict | None:
        """Reads the scaler after a batch; returns a divergence or `None`.

        Args:
            epoch: 0-based epoch.
            batch: 0-based batch index within the epoch (the last batch of
                the execution).
            iterations: the optimizer's `iterations` now.

        Returns:
            `None`, or a dict: `skipped` (in a row), `scale`, `scale_before`
            (the scale at the last applied step), `scales` (the scale after
            each skip of the run) and `rule` (which rule fired).
        """
        if self.scaler is None:
            return None
        scale = self._read()
        last_epoch, last_batch, last_iterations, before = self._last
        ran = batch + 1 if epoch != last_epoch else batch - last_batch
        advanced = iterations - last_iterations
        self._last = (epoch, batch, iterations, scale)
        skipped = max(ran - advanced, 0)
        if skipped == 0:
            if scale != before:
                self.rows.append((epoch, batch, iterations, 0, scale))
            self.consecutive = 0
            self.scale_before = None
            return None
        self.rows.append((epoch, batch, iterations, skipped, scale))
        if advanced:
            self.consecutive, self.scale_before = 0, None
        if self.scale_before is None:  # a new run of skips
            self.scale_before = scale * 2.0**skipped if advanced else before
        self.consecutive += skipped
        settled = iterations > 0
        rule = None
        if scale < self.min_scale:
            rule = "min_scale"
        elif settled and self.consecutive >= self.max_skips and not advanced:
            rule = "max_skips"
        if rule is None:
            return None
        n = self.consecutive
        scales = [self.scale_before / 2.0**k for k in range(1, n + 1)]
        return {"skipped": n, "scale": scale, "scale_before": self.scale_before,
                "scales": scales, "rule": rule, "settled": settled,
                "min_scale": self.min_scale}

    def to_dataframe(self) -> pd.DataFrame:
        """Each batch-end call where the scaler skipped or changed its scale.

        Columns: `epoch`, `batch` (0-based, as Keras passes them), `step`
        (the optimizer's iterations then: the last step applied, since a
        skipped step gets no number), `skipped` (steps the scaler skipped
        since the previous call; 0 when the scale only grew) and `loss_scale`
        (the scale after it).
        """
        return pd.DataFrame(
            self.rows, columns=["epoch", "batch", "step", "skipped", "loss_scale"]
        )


def describe_skips(found: dict) -> str:
    """The detail sentence of a `loss_scale` event."""
    scales = " -> ".join(_scale(s) for s in [found["scale_before"], *found["scales"]])
    if found["rule"] == "min_scale":
        why = (f"its scale fell below {_scale(found['min_scale'])}: the "
               "gradients overflow float16 even unscaled")
    else:
        why = "after its scale had settled"
    n = found["skipped"]
    return (f"the loss scaler skipped {n} step{'s' * (n != 1)} in a row, {why} "
            f"(loss scale {scales}); none of them was applied")


def _scale(value: float) -> str:
    return f"{value:.6g}"  # powers of two: 32768, 0.25
