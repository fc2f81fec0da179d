"""`GradientRecord`: a numpy copy of a `GradientMonitor`'s ring buffer."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class GradientRecord:
    """What a `GradientMonitor` holds for the steps still in its ring buffer.

    Arrays are in step order, oldest first. `steps` are 1-based training steps
    (step 1 is the first update the monitor saw, counted across epochs and
    `fit` calls).
    """

    count: int  # steps recorded in total
    steps: np.ndarray  # (T,) int
    norm: np.ndarray  # (T,) pre-clip global norm
    norm_clipped: np.ndarray  # (T,) global norm after clipping
    threshold: np.ndarray  # (T,) adaptive threshold used (inf: none)
    variable_norms: np.ndarray  # (T, V) pre-clip norm per variable
    first_nonfinite: np.ndarray  # (T,) index of first bad variable, -1 if none
    weights_finite: np.ndarray  # (T,) bool, all weights finite after the step
    # (True where not checked: GradientMonitor(check_weights=False))
    variable_paths: tuple  # (V,) `variable.path` of each column

    def since(self, step: int) -> "GradientRecord":
        """The records for steps after `step` (a 1-based step number)."""
        keep = self.steps > step
        return dataclasses.replace(
            self,
            steps=self.steps[keep],
            norm=self.norm[keep],
            norm_clipped=self.norm_clipped[keep],
            threshold=self.threshold[keep],
            variable_norms=self.variable_norms[keep],
            first_nonfinite=self.first_nonfinite[keep],
            weights_finite=self.weights_finite[keep],
        )
