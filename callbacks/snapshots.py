"""`Snapshots`: host copies of a model's weights and optimizer state by step."""

from __future__ import annotations

import collections

import numpy as np

from .host_read import read_many
from .optimizer_chain import innermost_optimizer, step_counter


def default_cadence(steps_per_epoch: int | None, cap: int = 50) -> int:
    """Steps between snapshots: 4 per epoch, at most every `cap` steps.

    A rollback then throws away at most a quarter of an epoch's updates,
    however short the epochs are.
    """
    if not steps_per_epoch:
        return cap
    return max(1, min(cap, steps_per_epoch // 4))


def all_finite(arrays) -> bool:
    return all(np.isfinite(a).all() for a in arrays if a.dtype.kind == "f")


class Snapshots:
    """The newest `keep` copies of the weights and optimizer state.

    The optimizer state copied is every variable of the optimizer that does
    the update except its step counter (step numbers never repeat) and its
    learning rate (restoring an old learning rate would undo a cut).

    Args:
        keep: int >= 1, how many copies are kept.
    """

    def __init__(self, keep: int):
        self._copies = collections.deque(maxlen=keep)
        # The fit's first copy, never dropped: an onset older than every
        # copy kept (a suspect that left its median 50 steps back) still
        # finds weights from before it, never ones from after.
        self._anchor = None

    def __len__(self) -> int:
        return len(self._copies)

    def clear(self) -> None:
        self._copies.clear()
        self._anchor = None

    @property
    def first(self):
        """`(step, weights, state)` of the fit's first copy (never dropped), or `None`."""
        return self._anchor

    @property
    def newest_step(self) -> int | None:
        return self._copies[-1][0] if self._copies else None

    def take(self, model, monitor, step: int) -> bool:
        """Copies the weights after `step` (not when they are non-finite)."""
        # `model.get_weights()` and the optimizer's state, read by the
        # cheapest path (`host_read.read_many`: one compiled read under
        # TensorFlow once a model has had a few snapshots).
        weights = list(model.weights)
        state = optimizer_state(monitor)
        arrays = read_many(weights + state, model)
        weights, state = arrays[:len(weights)], arrays[len(weights):]
        # A subclassed model builds at its first batch: a copy taken before
        # holds no weights, and restoring it would raise in `set_weights`.
        if not weights or not all_finite(weights):
            return False
        self._copies.append((step, weights, state))
        if self._anchor is None:
            self._anchor = self._copies[-1]
        return True

    def newest_before(self, before: int):
        """`(step, weights, state)` of the newest copy before step `before`, or `None`."""
        earlier = [c for c in self.kept() if c[0] < before]
        return earlier[-1] if earlier else None

    def kept(self) -> list:
        """Every copy held, the fit's first included, oldest first."""
        kept = list(self._copies)
        if self._anchor is not None and not any(c is self._anchor for c in kept):
            kept.insert(0, self._anchor)
        return kept

    def restore(self, model, monitor, before: int) -> int | None:
        """Restores the newest copy taken before step `before`.

        That is the weights after step `before - 1` or earlier (the fit's
        first copy is always kept for that); never a copy from `before` on.
        Newer copies are dropped (they lie on the path that went wrong).

        Returns:
            The step of the copy restored, or `None` when there is none
            before `before`.
        """
        chosen = self.newest_before(before)
        if chosen is None:
            return None
        step, weights, state = chosen
        while self._copies and self._copies[-1][0] > step:
            self._copies.pop()
        model.set_weights(weights)
        for variable, value in zip(optimizer_state(monitor), state):
            variable.assign(value)
        return step


def optimizer_state(monitor) -> list:
    """The updating optimizer's variables but its step counter and learning rate."""
    updater = innermost_optimizer(monitor)
    keep = (step_counter(updater), getattr(updater, "_learning_rate", None))
    return [
        v for v in monitor.inner_optimizer.variables
        if not any(v is k for k in keep)
    ]
