"""Interleaved fits: several `fit` calls run one step each, in turn.

On a shared 2-core machine the speed of the same train step moves by 5-25%
from fit to fit (a fit keeps its speed for its whole length), so two
configurations timed one after the other, even in interleaved rounds of
3 s fits, differ by more than the 3% a benchmark must tell apart: an A/A
pair (two identical plain fits) read 0.94-1.06 of each other, in whole
fits and in 50-step blocks alike (2 Dec 2026). Taking turns step by step
puts every configuration under the same conditions; from a fixed input
pipeline the A/A pair then read 0.95-1.03 in single rounds and 0.98-1.01
as medians of 5.

Each fit runs in its own thread, but only the one holding the turn runs:
`Baton`, the last callback of each fit, hands the turn on at the end of
every step and waits for it to come back, so the threads never overlap and
TensorFlow sees one caller at a time. The order of the fits is shuffled
again every cycle (seeded), so no configuration always follows the same
one. Each fit's time per step is measured from the moment it takes the turn
to the end of its step (all its callbacks' batch hooks inside, the hand-over
outside); the first step of every fit (tracing, `on_train_begin` work) is not
timed, and the epoch-end hooks count towards the last step, as in
`step_clock.StepClock`.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Sequence

import keras
import numpy as np


class Relay:
    """The turn that interleaved fits pass round, one step at a time.

    Args:
        n: the number of fits taking part.
        seed: seeds the order of each cycle. Default 0.
    """

    def __init__(self, n: int, seed: int = 0):
        self._cv = threading.Condition()
        self._n = n
        self._rng = np.random.default_rng(seed)
        self._arrived: set[int] = set()
        self._left: set[int] = set()
        self._order: list[int] = []
        self._turn: int | None = None

    def _advance(self) -> None:
        """Gives the turn to the next fit still running (lock held)."""
        while True:
            if not self._order:
                live = sorted(self._arrived - self._left)
                self._order = [int(i) for i in self._rng.permutation(live)]
                if not self._order:
                    self._turn = None
                    break
            self._turn = self._order.pop(0)
            if self._turn not in self._left:
                break
        self._cv.notify_all()

    def _started(self) -> bool:
        return len(self._arrived | self._left) == self._n

    def join(self, index: int) -> None:
        """Waits until every fit has joined and it is `index`'s turn."""
        with self._cv:
            self._arrived.add(index)
            if self._started() and self._turn is None:
                self._advance()
            self._cv.wait_for(lambda: self._turn == index)

    def hand_on(self, index: int) -> None:
        """Passes the turn on and waits for it to come back."""
        with self._cv:
            self._advance()
            self._cv.wait_for(lambda: self._turn == index)

    def leave(self, index: int) -> None:
        """Takes `index` out for good, passing the turn on if it held it."""
        with self._cv:
            self._left.add(index)
            if self._turn == index or (self._started() and self._turn is None):
                self._advance()  # it passes over the fits that have left


class Baton(keras.callbacks.Callback):
    """Times each step of one interleaved fit; put it last in `callbacks`.

    Attributes:
        step_seconds: seconds of each timed step (all but the first).
    """

    def __init__(self, relay: Relay, index: int):
        super().__init__()
        self.relay, self.index = relay, index
        self.step_seconds: list[float] = []
        self._resumed: float | None = None

    def on_train_begin(self, logs=None):
        self.step_seconds = []
        self._resumed = None
        self.relay.join(self.index)

    def on_train_batch_end(self, batch, logs=None):
        if self._resumed is not None:
            self.step_seconds.append(time.perf_counter() - self._resumed)
        self.relay.hand_on(self.index)
        self._resumed = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if self._resumed is not None and self.step_seconds:
            self.step_seconds[-1] += time.perf_counter() - self._resumed
            self._resumed = None


def interleave(fits: Sequence[Callable[[list], object]], seed: int = 0
               ) -> list[list[float]]:
    """Runs `fits` step by step in turn; returns each one's step seconds.

    Args:
        fits: callables that each run one `fit`, passing the extra callbacks
            they are given (a list holding the `Baton`) last in `callbacks`.
        seed: seeds the order of the turns. Default 0.

    Returns:
        For each fit, the seconds of its timed steps.

    Raises:
        The first exception any fit raised, after all threads have ended.
    """
    relay = Relay(len(fits), seed)
    batons = [Baton(relay, i) for i in range(len(fits))]
    errors: list[BaseException] = []

    def target(i: int) -> None:
        try:
            fits[i]([batons[i]])
        except BaseException as e:  # re-raised in the caller's thread
            errors.append(e)
        finally:
            relay.leave(i)

    threads = [threading.Thread(target=target, args=(i,), daemon=True)
               for i in range(len(fits))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return [b.step_seconds for b in batons]
