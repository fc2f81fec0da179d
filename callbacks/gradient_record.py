"""`GradientRecord`: a numpy copy of a `GradientMonitor`'s ring buffer."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pandas is imported when a table is asked for
    import pandas as pd

# `GradientRecord.status`: what the monitor did with each step.
APPLIED = 0  # the update was applied (clipped or not by the usual clipping)
NONFINITE = 1  # a gradient held NaN/inf or its norm overflowed: skipped
SKIPPED_SPIKE = 2  # the spike gate held the update back
CLIPPED_SPIKE = 3  # the spike gate applied it clipped to the running median
DISCARDED = 4  # applied, then undone by a rollback
# The names `to_dataframe` gives the statuses.
STATUS_NAMES = {APPLIED: "applied", NONFINITE: "nonfinite",
                SKIPPED_SPIKE: "skipped_spike", CLIPPED_SPIKE: "clipped_spike",
                DISCARDED: "discarded"}


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

    def to_dataframe(self, variables: bool = True) -> pd.DataFrame:
        """The rows as a `pandas.DataFrame`, one per step, oldest first.

        For custom training loops and notebooks, where no
        `GradientNormLogger` collects the record.

        Args:
            variables: bool, add one column of gradient norms per trainable
                variable, named by its `variable.path`. Defaults to `True`.

        Returns:
            A DataFrame with columns `step`, `index`, `norm`,
            `norm_clipped`, `threshold`, `status` (`"applied"`,
            `"nonfinite"`, `"skipped_spike"`, `"clipped_spike"`,
            `"discarded"`), `weights_finite`, `first_nonfinite` (the path of
            the first variable with a NaN/inf gradient, `None` when none),
            then the per-variable norms.

        Example:

        ```python
        record = model.optimizer.read()  # a GradientMonitor
        record.to_dataframe().plot(x="step", y="norm", logy=True)
        ```
        """
        import pandas as pd

        paths = self.variable_paths
        first = [paths[i] if 0 <= i < len(paths) else None
                 for i in self.first_nonfinite.tolist()]
        frame = pd.DataFrame({
            "step": self.steps.astype(np.int64),
            "index": self.index.astype(np.int64),
            "norm": self.norm,
            "norm_clipped": self.norm_clipped,
            "threshold": self.threshold,
            "status": [STATUS_NAMES.get(int(s), str(int(s))) for s in self.status],
            "weights_finite": self.weights_finite.astype(bool),
            "first_nonfinite": pd.Series(first, dtype=object),
        })
        if variables and len(paths):
            norms = pd.DataFrame(self.variable_norms[:, :len(paths)], columns=list(paths))
            frame = pd.concat([frame, norms], axis=1)
        return frame
