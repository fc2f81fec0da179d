"""The monitor's ring buffer: one float32 row per step, written in the compiled step.

A row is `FIXED` columns, then one norm per trainable variable. The
columns are named once, here (`NORM` ... `STATUS`); every reader and writer
uses these names. The step is stored as two float32 parts (exact to 2**44);
`status` says what the monitor did with the step (`gradient_record.APPLIED`
...). One row per step keeps a step to one write and a read to one transfer.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from .gradient_record import APPLIED, GradientRecord

# The columns of a row, before the per-variable norms.
NORM = 0  # global norm before clipping (unscaled)
NORM_CLIPPED = 1  # global norm after the clipping that applies
THRESHOLD = 2  # the adaptive threshold (AutoClip, ZClip), inf when none
WEIGHTS_FINITE = 3  # 1: all weights finite after the step, 0: not, -1: unchecked
STEP_HIGH = 4  # step // STEP_BASE
STEP_LOW = 5  # step % STEP_BASE
STATUS = 6  # what the monitor did with the step (gradient_record.APPLIED ...)
FIXED = 7  # columns before the per-variable norms
# The first non-finite variable is not a column: `decode` finds it in the
# per-variable norms (a NaN/inf gradient has a NaN/inf norm), on the host.
STEP_BASE = 2**20

# The tally: three int32 numbers the compiled step writes with each row, so
# that a callback that must look at every step (NaNGuard) learns in one
# small read whether there is anything to look at.
TALLY_COUNT = 0  # rows written in total (the ring's count after the row)
TALLY_ALARMS = 1  # rows written that were not a plain applied step with finite weights
TALLY_STEP = 2  # the newest row's step
TALLY_SIZE = 3


def write_row(ring, count, *, norm, norm_clipped, threshold, weights_finite,
              step, status, variable_norms, tally=None) -> None:
    """Writes one step's row at slot `count % len(ring)` and counts it.

    The row is assembled in column order (`NORM` ... `STATUS`, then the
    per-variable norms) and written with one in-place slice assignment.
    `tally`, when given, gets the count, the alarms and the step after it
    (`TALLY_COUNT` ...): an alarm is a row whose status is not `APPLIED`
    or whose weights are not finite (`WEIGHTS_FINITE` 0).
    """
    step = ops.cast(step, "int64")
    high = ops.floor_divide(step, STEP_BASE)
    fixed = [None] * FIXED
    fixed[NORM], fixed[NORM_CLIPPED], fixed[THRESHOLD] = norm, norm_clipped, threshold
    fixed[WEIGHTS_FINITE] = weights_finite
    fixed[STEP_HIGH], fixed[STEP_LOW] = high, step - high * STEP_BASE
    fixed[STATUS] = status
    values = ops.concatenate([
        ops.stack([ops.cast(v, "float32") for v in fixed]),
        ops.cast(variable_norms, "float32"),
    ])
    n = count.value
    _assign_row(ring, ops.mod(n, ring.shape[0]), values)
    # The count must depend on the row's data: in a TensorFlow graph two
    # assignments to different variables are not ordered, and when the
    # batch never comes (the end of a dataset of unknown length raises
    # OutOfRange inside the step) a count that depends on nothing else
    # would still advance, over a row that was never written.
    # (A status is >= 0: `one` is 1, computed from the row.)
    one = ops.cast(values[STATUS] >= 0, "int32")
    # Read once: under TensorFlow `n` is the variable, and each use of it
    # reads it again (after the assignment, the new count).
    written = n + one
    count.assign(written)
    if tally is not None:  # from the row's values too, for the same reason
        alarm = (values[STATUS] != float(APPLIED)) | (values[WEIGHTS_FINITE] == 0.0)
        tally.assign(ops.stack([
            written,
            tally.value[TALLY_ALARMS] + ops.cast(alarm, "int32") * one,
            ops.cast(step, "int32") * one,
        ]))


def _assign_row(ring, slot, values) -> None:
    """`ring[slot] = values`, in place where the backend allows it.

    Under TensorFlow (no `tf.distribute` strategy) one scatter into the
    variable writes the row (a sliced assignment would not do: under XLA
    its start must be a compile-time constant, and every slot would compile
    the step again); elsewhere the ring is rebuilt with `slice_update` and
    assigned (under JAX's jit, XLA updates it in place).
    """
    target = ring.value
    if keras.backend.backend() == "tensorflow" and _plain_tf_variable(target):
        import tensorflow as tf

        target.scatter_update(tf.IndexedSlices(
            ops.reshape(values, (1, -1)), ops.reshape(ops.cast(slot, "int32"), (1,))
        ))
        return
    ring.assign(ops.slice_update(target, [slot, 0], ops.reshape(values, (1, -1))))


def _plain_tf_variable(value) -> bool:
    import tensorflow as tf

    return isinstance(value, tf.Variable) and not tf.distribute.has_strategy()


def newest_row(ring, count):
    """The newest row written (`count % len(ring) - 1`), inside the step."""
    slot = ops.mod(count.value - 1, ring.shape[0])
    return ops.take(ring.value, slot, axis=0)


def running_median(ring, count, window):
    """Median of the finite norms of applied steps among the last `window` rows.

    Returns `(median, n, spread, peak)`: `n` rows took part (a skipped or
    clipped spike, a non-finite step or a step a rollback discarded does
    not); `spread` is their 90th percentile over their 10th (`inf` when the
    10th is 0), how many times over the recent norms already range; `peak`
    the largest of them.
    """
    size = ring.shape[0]
    n_written = count.value
    age = ops.mod(ops.mod(n_written - 1, size) - ops.arange(size, dtype="int32"), size)
    norms = ring.value[:, NORM]
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
    low = ops.take(ordered, ops.floor_divide(last, 10))
    high = ops.take(ordered, ops.floor_divide(last * 9, 10))
    spread = ops.where(low > 0, high / ops.maximum(low, 1e-30), float("inf"))
    return median, n, spread, ops.take(ordered, last)


def row_steps(ring: np.ndarray) -> np.ndarray:
    """The step of every row of a numpy copy of the ring."""
    return (ring[:, STEP_HIGH].astype(np.int64) * STEP_BASE
            + ring[:, STEP_LOW].astype(np.int64))


def mark_rows(ring: np.ndarray, first_step: int, last_step: int, status: int) -> bool:
    """Sets the status of the rows of steps `first_step..last_step`, in place."""
    hit = (row_steps(ring) >= first_step) & (row_steps(ring) <= last_step)
    ring[hit, STATUS] = status
    return bool(hit.any())


def first_nonfinite(variable_norms: np.ndarray) -> np.ndarray:
    """Per row, the index of the first non-finite variable norm, -1 when none."""
    bad = ~np.isfinite(variable_norms)
    if not bad.shape[-1]:
        return np.full(len(variable_norms), -1, np.int64)
    return np.where(bad.any(axis=-1), bad.argmax(axis=-1), -1).astype(np.int64)


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
        norm=rows[:, NORM],
        norm_clipped=rows[:, NORM_CLIPPED],
        threshold=rows[:, THRESHOLD],
        first_nonfinite=first_nonfinite(rows[:, FIXED:FIXED + len(variable_paths)]),
        weights_finite=rows[:, WEIGHTS_FINITE] != 0,
        status=rows[:, STATUS].astype(np.int64),
        variable_norms=rows[:, FIXED:FIXED + len(variable_paths)],
        variable_paths=variable_paths,
    )
