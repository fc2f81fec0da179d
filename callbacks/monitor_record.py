"""The monitor's record: the ring row written each step, and reading it back.

The ring's layout is `ring.py`'s; `GradientRecord` is the numpy copy a
callback reads. One row per step, one write; a read is one transfer,
shared by the callbacks that read the same step (`_ReadCache`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from keras import ops

from .gradient_record import DISCARDED, GradientRecord
from .host_read import to_int, to_numpy
from .ring import (
    FIXED, NORM, NORM_CLIPPED, TALLY_ALARMS, TALLY_COUNT, TALLY_STEP, decode,
    mark_rows, newest_row, write_row,
)

class Tally(NamedTuple):
    """What `GradientMonitor.tally()` reads: see there."""

    count: int
    alarms: int
    step: int


class MonitorRecord:
    """The `GradientMonitor`'s ring: writing a row, reading rows (a mixin)."""

    def _weights_flag(self, weights):
        """1.0 if all weights are finite, 0.0 if not, -1.0 when unchecked."""
        if not self.check_weights or not weights:
            return ops.convert_to_tensor(-1.0, "float32")
        # A sum is NaN/inf when any element is (or when finite weights
        # overflow float32 in total, which is no healthier).
        total = ops.sum(ops.stack([ops.sum(ops.cast(w, "float32")) for w in weights]))
        return ops.cast(ops.isfinite(total), "float32")

    def record(self, row: dict, weights, step) -> None:
        """Writes this step's row to the ring.

        `step`: the step's number as the step counter reads after the
        update; `weights`: the weights after the update (read only under
        `check_weights`).
        """
        if self.step_offset:  # after a recompile (attach.py)
            step = step + self.step_offset
        write_row(self._ring, self._count, weights_finite=self._weights_flag(weights),
                  step=step, tally=self._tally, **row)

    def read(self) -> GradientRecord:
        """Copies the ring buffer to numpy, oldest step first.

        Under JAX, call it on `callback.model.optimizer` (which syncs the
        training state), not on a reference kept from before `fit`. Before
        the first step (and for a model without trainable weights, whose
        optimizer Keras never calls) the record is empty.
        """
        if not self.built:  # no step yet (or a model with no trainable weights)
            return decode(np.zeros((1, FIXED), "float32"), 0, ())
        # Two reads by the cheapest path (`host_read.py`).
        count = to_int(self._count)
        cached = self._read_cache.record
        if cached is not None and cached.count == count:
            return cached  # several callbacks read the same step
        record = decode(to_numpy(self._ring), count, self.variable_paths)
        self._read_cache.record = record
        return record

    def tally(self) -> Tally:
        """Rows written, alarms among them and the newest row's step: one small read.

        An alarm is a row whose status is not `APPLIED` (a non-finite or
        spiking gradient the monitor skipped or clipped) or whose weights
        were not finite after the update: the rows `diagnosis.find_event`
        looks at. While `alarms` stays the same, new rows hold no event
        and need not be read. Zeros before the first step.
        """
        if not self.built:
            return Tally(0, 0, 0)
        tally = to_numpy(self._tally)
        # The row's step: with step_offset already.
        return Tally(int(tally[TALLY_COUNT]), int(tally[TALLY_ALARMS]), int(tally[TALLY_STEP]))

    def newest_norms(self) -> tuple:
        """The newest step's global norm before and after clipping, as tensors.

        For the compiled step itself (after `apply` wrote its row); on
        the host, `read()` gives every row. See `step_logs.py`.
        """
        row = newest_row(self._ring, self._count)
        return row[NORM], row[NORM_CLIPPED]

    def mark_discarded(self, first_step: int, last_step: int) -> None:
        """Marks the ring rows of steps a rollback undid (`DISCARDED`).

        They leave the spike gate's running median.
        """
        ring = to_numpy(self._ring)
        if mark_rows(ring, first_step, last_step, DISCARDED):
            self._ring.assign(ring)
            self._read_cache.record = None


class _ReadCache:
    """Holds the monitor's newest `read()` (`record`, or `None`)."""

    __slots__ = ("record",)

    def __init__(self):
        self.record = None

