"""Timing helpers: a step clock for `fit`, robust summaries, a power-law fit."""

from __future__ import annotations

import time
from typing import Sequence

import keras
import numpy as np


class StepClock(keras.callbacks.Callback):
    """Times one epoch of `fit` from the end of its first step.

    The first step traces and compiles the train function (and pays for any
    callback whose `on_train_begin` forces a rebuild), so the clock starts
    when that step ends and stops when the epoch ends. Put it *last* in the
    `callbacks` list: Keras calls callbacks in order, so the interval then
    holds every other callback's batch and epoch hooks.

    Its own hook costs one `time.perf_counter()` call per step. It does make
    Keras hand Python-side logs to the batch hooks, which plain `fit` without
    batch-hook callbacks skips; on a CPU the train function already returns
    synchronously, so that costs no wait.

    Attributes:
        fit_started: set by the caller to `time.perf_counter()` just before
            `fit`, to measure `first_step_s`.
        first_step_s: seconds from `fit_started` to the end of step 1.
        seconds: seconds from the end of step 1 to the end of the epoch.
        cpu_seconds: CPU time of this process (all threads) in the same
            interval; less sensitive than `seconds` to other processes on a
            shared machine.
        steps: training steps inside `seconds` (the epoch's steps minus one).
    """

    def __init__(self):
        super().__init__()
        self.fit_started: float | None = None
        self.first_step_s = float("nan")
        self.seconds = float("nan")
        self.cpu_seconds = float("nan")
        self.steps = 0
        self._start: float | None = None
        self._cpu_start = 0.0
        self._last_batch = -1

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        if self._start is None:
            self._start = now
            self._cpu_start = time.process_time()
            if self.fit_started is not None:
                self.first_step_s = now - self.fit_started
        self._last_batch = batch

    def on_epoch_end(self, epoch, logs=None):
        if self._start is not None and self._last_batch >= 1:
            self.seconds = time.perf_counter() - self._start
            self.cpu_seconds = time.process_time() - self._cpu_start
            self.steps = self._last_batch


def spread(values: Sequence[float]) -> tuple[float, float, float]:
    """Returns (median, min, max) of finite values; NaNs when there are none."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        nan = float("nan")
        return nan, nan, nan
    return float(np.median(values)), float(values.min()), float(values.max())


def fit_exponent(sizes: Sequence[float], times: Sequence[float]) -> float:
    """Least-squares exponent `k` of `time ~ size**k` (slope in log-log).

    Args:
        sizes: positive problem sizes, at least two distinct ones.
        times: positive times, one per size.

    Returns:
        The slope of `log(time)` against `log(size)`.

    Raises:
        ValueError: with fewer than two distinct sizes or a non-positive value.

    Example:

    >>> round(fit_exponent([1, 2, 4], [3.0, 6.0, 12.0]), 6)
    1.0
    """
    sizes = np.asarray(sizes, dtype=np.float64)
    times = np.asarray(times, dtype=np.float64)
    if sizes.shape != times.shape or len(np.unique(sizes)) < 2:
        raise ValueError(
            f"fit_exponent received sizes={sizes.tolist()} and times="
            f"{times.tolist()}; expected one time per size and at least two "
            "distinct sizes."
        )
    if not (np.all(sizes > 0) and np.all(times > 0)):
        raise ValueError(
            f"fit_exponent received sizes={sizes.tolist()} and times="
            f"{times.tolist()}; expected positive values only."
        )
    slope, _ = np.polyfit(np.log(sizes), np.log(times), 1)
    return float(slope)
