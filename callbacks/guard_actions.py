"""What NaNGuard can do besides rolling back: reset the optimizer's moments, skip batches.

- `reset_moments` (SPAM, Huang et al. 2025): a gradient spike that reaches
  Adam's moments keeps distorting its updates for about 1 / (1 - beta2)
  steps (1000 for beta2 = 0.999). SPAM resets the moments to zero; so does
  this, for every slot of the optimizer that does the update (Adam's
  `momentum` and `velocity`, RMSprop's `velocity`, SGD's `momentum`, ...;
  Adagrad's accumulators go back to `initial_accumulator_value`).
- `cut_learning_rate`: a rollback's cut, on the optimizer's own rate where
  it is a number (what `model.optimizer.learning_rate` reads), as a
  multiplier inside the monitor where it is a `LearningRateSchedule`.
- `BatchSkipper` (PaLM, Chowdhery et al. 2022): after a rollback, the next
  N batches are consumed but not learned from. A Keras callback cannot
  take batches out of `fit`'s data, so each skipped batch's update is
  undone: the weights and optimizer state copied before it are put back
  after it, its steps are marked `DISCARDED` in the monitor's ring (out of
  the spike gate's median), and its index is reported.
"""

from __future__ import annotations

import keras
import numpy as np

from .optimizer_chain import innermost_optimizer


def moment_slots(optimizer) -> list:
    """The optimizer's per-weight state: every variable but the step, the
    learning rate and the weights' moving averages (`use_ema`)."""
    updater = innermost_optimizer(optimizer)
    keep = [updater.iterations, getattr(updater, "_learning_rate", None),
            *getattr(updater, "_model_variables_moving_average", [])]
    return [v for v in updater.variables if not any(v is k for k in keep)]


def reset_moments(optimizer) -> list[str]:
    """Sets the moment slots of the updating optimizer back to their start.

    Zeros, as SPAM resets them, except Adagrad's accumulators, which start
    at `initial_accumulator_value`. The step counter is kept, so Adam's
    bias correction does not restart: the first update after a reset is
    up to (1 - beta1) / sqrt(1 - beta2) times the learning rate per weight
    (about 3.2 lr for Adam's defaults), falling back to about lr within a
    few steps.

    Returns:
        The paths of the variables reset.
    """
    updater = innermost_optimizer(optimizer)
    start = float(getattr(updater, "initial_accumulator_value", 0.0)) \
        if isinstance(updater, keras.optimizers.Adagrad) else 0.0
    slots = moment_slots(optimizer)
    for v in slots:
        v.assign(np.full(v.shape, start, dtype=v.dtype))
    return [v.path for v in slots]


SCHEDULE_NOTE = (
    "; the learning rate is a LearningRateSchedule, which cannot be set: the "
    "cut multiplies its updates inside the monitor (model.optimizer.learning_rate "
    "reads the schedule's own rate, guard.learning_rate the rate in use)")


def cut_learning_rate(monitor, factor: float) -> str:
    """Multiplies the learning rate in use by `factor`; returns a note for the event.

    A rate that is a number is a variable of the optimizer that updates: it
    is set to `factor` times itself, so `model.optimizer.learning_rate` (and
    `ReduceLROnPlateau`, which reads it, and a saved model) see the cut
    rate. A `LearningRateSchedule` is a function of the step and cannot be
    set: the cut becomes the monitor's multiplier of every update
    (`GradientMonitor.set_lr_multiplier`), which the schedule's later values
    cannot undo, and the note says so (empty otherwise).
    """
    updater = innermost_optimizer(monitor)
    rate = getattr(updater, "_learning_rate", None)
    if isinstance(rate, keras.Variable):
        value = keras.ops.convert_to_numpy(rate)
        rate.assign(np.asarray(value * factor, dtype=value.dtype))
        return ""
    monitor.set_lr_multiplier(monitor.lr_multiplier * factor)
    return SCHEDULE_NOTE


class BatchSkipper:
    """Undoes the update of the next `n` batches after `start()`.

    Args:
        n: int >= 0, batches to skip after each `start()` (0: never).
    """

    def __init__(self, n: int):
        self.n = int(n)
        self.left = 0
        self.skipped: list[dict] = []  # {"epoch", "batch", "steps"} of every batch skipped
        self._saved = None

    @property
    def active(self) -> bool:
        return self.left > 0

    def start(self) -> list[dict]:
        """The next `n` batches are skipped (a new start restarts the count).

        Returns:
            The list this start's skipped batches will be appended to.
        """
        self.left = self.n
        self.current: list[dict] = []
        return self.current

    def before_batch(self, model, monitor) -> None:
        """Copies the weights and optimizer state before a batch to skip."""
        if self.left <= 0:
            self._saved = None
            return
        slots = moment_slots(monitor)
        self._saved = (model.get_weights(),
                       [keras.ops.convert_to_numpy(v) for v in slots],
                       int(monitor.iterations.numpy()))

    def after_batch(self, model, monitor, epoch: int, batch: int) -> bool:
        """Puts back what `before_batch` copied; True when this batch was skipped."""
        if self._saved is None:
            return False
        weights, state, first = self._saved
        self._saved = None
        model.set_weights(weights)
        for v, value in zip(moment_slots(monitor), state):
            v.assign(value)
        last = int(monitor.iterations.numpy())
        if last > first:
            monitor.mark_discarded(first + 1, last)
        entry = {"epoch": int(epoch), "batch": int(batch),
                 "steps": list(range(first + 1, last + 1))}
        self.skipped.append(entry)
        self.current.append(entry)
        self.left -= 1
        return True
