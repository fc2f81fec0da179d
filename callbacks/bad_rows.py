"""The rows of a bad batch that hold NaN/inf, recognised when they come back.

`fit` shuffles: a NaN row in the training data lands in a different batch
every epoch, and NaNGuard skips one bad batch each time. Counted as batches,
a 20-epoch fit with one bad row reaches `max_bad_batches` and stops,
although the data hold one bad row. `BadRows` fingerprints the non-finite
rows of each bad batch (their bytes, every input, target and sample weight
of the row) so that a batch whose bad rows were all seen before is
recognised as the same bad data: the guard's cap counts distinct bad rows
(`NaNGuard.max_bad_batches`), and the event says which step first had them.
"""

from __future__ import annotations

import hashlib

import numpy as np


def nonfinite_rows(arrays: list) -> list[bytes]:
    """Fingerprints of the rows holding NaN/inf in a batch's arrays.

    Args:
        arrays: the batch's arrays (inputs, targets, weights: numpy), all
            with the batch's rows on their first axis; others are ignored.

    Returns:
        One digest per non-finite row, of that row in every array, in row order.
    """
    arrays = [np.asarray(a) for a in arrays if a is not None and np.ndim(a)]
    if not arrays:
        return []
    n = len(arrays[0])
    arrays = [a for a in arrays if len(a) == n]
    bad = np.zeros(n, bool)
    for a in arrays:
        if a.dtype.kind in "fc":
            bad |= ~np.isfinite(a.reshape(n, -1)).all(axis=1)
    digests = []
    for i in np.flatnonzero(bad):
        h = hashlib.blake2b(digest_size=16)
        for a in arrays:
            h.update(np.ascontiguousarray(a[i]).tobytes())
        digests.append(h.digest())
    return digests


class BadRows:
    """The non-finite rows seen in a fit, and the step that first had each."""

    def __init__(self):
        self.first_step: dict[bytes, int] = {}

    def seen_before(self, digests: list[bytes]) -> int | None:
        """The step that first had all of `digests`, or `None` (none, or a new one)."""
        if not digests or not all(d in self.first_step for d in digests):
            return None
        return min(self.first_step[d] for d in digests)

    def add(self, digests: list[bytes], step: int) -> None:
        for d in digests:
            self.first_step.setdefault(d, step)
