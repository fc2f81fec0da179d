"""`GradientRecord`: a numpy copy of a `GradientMonitor`'s ring buffer."""

from __future__ import annotations

import dataclasses

import numpy as np

# `GradientRecord.status`: what the monitor did with each step.
APPLIED = 0  # the update was applied (clipped or not by the usual clipping)
NONFINITE = 1  # a gradient held NaN/inf or its norm overflowed: skipped
SKIPPED_SPIKE = 2  # the spike gate held the update back
CLIPPED_SPIKE = 3  # the spike gate applied it clipped to the running median
DISCARDED = 4  # applied, then undone by a rollback


@dataclasses.dataclass(frozen=True)
class GradientRecord:
    """What a `GradientMonitor` holds for the steps still in its ring buffer.

    Arrays are in the order the steps ran, oldest first. `steps` are the
    global training steps: the inner optimizer's `iterations` after each
    step, so they continue across epochs, `fit` calls and resumed runs.
    `index` numbers the monitor's own writes (1-based); a reader remembers
    the last index it saw and asks for what came `since`.
    """

    count: int  # rows written in total (the newest row's index)
    index: np.ndarray  # (T,) int, 1-based write number of each row
    steps: np.ndarray  # (T,) int, global step (optimizer iterations after it)
    norm: np.ndarray  # (T,) pre-clip global norm
    norm_clipped: np.ndarray  # (T,) global norm after clipping
    threshold: np.ndarray  # (T,) adaptive threshold used (inf: none)
    variable_norms: np.ndarray  # (T, V) pre-clip norm per variable
    first_nonfinite: np.ndarray  # (T,) index of first bad variable, -1 if none
    weights_finite: np.ndarray  # (T,) bool, all weights finite after the step
    # (True where not checked: GradientMonitor(check_weights=False))
    status: np.ndarray  # (T,) int, APPLIED, NONFINITE, SKIPPED_SPIKE, ...
    variable_paths: tuple  # (V,) `variable.path` of each column

    def since(self, index: int) -> "GradientRecord":
        """The rows written after write number `index`."""
        keep = self.index > index
        return self.select(keep)

    def select(self, keep: np.ndarray) -> "GradientRecord":
        """The rows where the boolean mask `keep` is True."""
        return dataclasses.replace(
            self,
            index=self.index[keep],
            steps=self.steps[keep],
            norm=self.norm[keep],
            norm_clipped=self.norm_clipped[keep],
            threshold=self.threshold[keep],
            variable_norms=self.variable_norms[keep],
            first_nonfinite=self.first_nonfinite[keep],
            weights_finite=self.weights_finite[keep],
            status=self.status[keep],
        )
