"""`StepClock`: times one epoch of `fit` from the end of its first step."""

from __future__ import annotations

import time

import keras


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
