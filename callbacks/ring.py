"""The monitor's ring buffer: one float32 row per step, written in the compiled step.

A row is `FIXED` columns, then one norm per trainable variable:
norm, norm_clipped, threshold, first_nonfinite, weights_finite, step_high,
step_low, status. The step is stored as two float32 parts (exact to 2**44);
`status` says what the monitor did with the step (`gradient_record.APPLIED`
...). One row per step keeps a step to one write and a read to one transfer.
"""

from __future__ import annotations

import numpy as np
from keras import ops

from .gradient_record import APPLIED, GradientRecord

FIXED = 8  # columns before the per-variable norms
STATUS = 7  # the status column
STEP_BASE = 2**20


def write_row(ring, count, head, weights_flag, step, status, norm_vector) -> None:
    """Writes one step's row at slot `count % len(ring)` and counts it."""
    step = ops.cast(step, "int64")
    high = ops.floor_divide(step, STEP_BASE)
    low = step - high * STEP_BASE
    values = ops.concatenate([
        head,
        ops.cast(ops.stack([weights_flag, ops.cast(high, "float32"),
                            ops.cast(low, "float32"), status]), "float32"),
        norm_vector,
    ])
    n = count.value
    slot = ops.mod(n, ring.shape[0])
    ring.assign(ops.slice_update(ring.value, [slot, 0], ops.reshape(values, (1, -1))))
    # The count must depend on the row's data: in a TensorFlow graph two
    # assignments to different variables are not ordered, and when the
    # batch never comes (the end of a dataset of unknown length raises
    # OutOfRange inside the step) a count that depends on nothing else
    # would still advance, over a row that was never written.
    one = ops.cast(ops.isnan(values[0]) | ops.logical_not(ops.isnan(values[0])), "int32")
    count.assign(n + one)


def running_median(ring, count, window):
    """Median of the finite norms of applied steps among the last `window` rows.

    Returns `(median, n)`: `n` rows took part (a skipped or clipped spike,
    a non-finite step or a step a rollback discarded does not).
    """
    size = ring.shape[0]
    n_written = count.value
    age = ops.mod(ops.mod(n_written - 1, size) - ops.arange(size, dtype="int32"), size)
    norms = ring.value[:, 0]
    used = (
        (age < ops.minimum(n_written, ops.cast(window, "int32")))
        & (ring.value[:, STATUS] == float(APPLIED))
        & ops.isfinite(norms)
    )
    n = ops.sum(ops.cast(used, "int32"))
    ordered = ops.sort(ops.where(used, norms, float("inf")))
    last = ops.maximum(n - 1, 0)
    median = 0.5 * (
        ops.take(ordered, ops.floor_divide(last, 2))
        + ops.take(ordered, ops.minimum(ops.floor_divide(n, 2), last))
    )
    return median, n


def row_steps(ring: np.ndarray) -> np.ndarray:
    """The step of every row of a numpy copy of the ring."""
    return ring[:, 5].astype(np.int64) * STEP_BASE + ring[:, 6].astype(np.int64)


def mark_rows(ring: np.ndarray, first_step: int, last_step: int, status: int) -> bool:
    """Sets the status of the rows of steps `first_step..last_step`, in place."""
    hit = (row_steps(ring) >= first_step) & (row_steps(ring) <= last_step)
    ring[hit, STATUS] = status
    return bool(hit.any())


def decode(ring: np.ndarray, count: int, variable_paths: tuple) -> GradientRecord:
    """The rows still in a numpy copy of the ring, oldest first."""
    history = len(ring)
    n = min(count, history)
    index = np.arange(count - n, count)
    rows = ring[index % history]
    return GradientRecord(
        count=count,
        index=index + 1,
        steps=row_steps(rows),
        norm=rows[:, 0],
        norm_clipped=rows[:, 1],
        threshold=rows[:, 2],
        first_nonfinite=rows[:, 3].astype(np.int64),
        weights_finite=rows[:, 4] != 0,
        status=rows[:, STATUS].astype(np.int64),
        variable_norms=rows[:, FIXED:FIXED + len(variable_paths)],
        variable_paths=variable_paths,
    )
