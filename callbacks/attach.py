"""Installing and removing the `GradientMonitor` behind a model.

Finding it in an optimizer chain is `optimizer_chain.find_monitor`; what a
`fit` call switches on and off is the monitor's own (`begin_fit`,
`end_fit`).
"""

from __future__ import annotations

import weakref

import keras

from . import distributed, legacy_h5
from .gradient_monitor import DOUBLE_LOSS_SCALE, GradientMonitor
from .host_read import to_int
from .optimizer_chain import find_monitor, replace_in_chain, step_counter

DEFAULT_HISTORY = 1024
__all__ = ["begin_fit", "end_fit", "ensure_monitor", "find_monitor",
           "rebuild_train_function", "remove_monitor", "require_compiled"]

# The monitor's own methods, under the names callbacks import them by.
begin_fit = GradientMonitor.begin_fit
end_fit = GradientMonitor.end_fit


def require_compiled(model, caller: str) -> None:
    """Raises a clear error when `model` has no optimizer to work with."""
    if model is None or getattr(model, "optimizer", None) is None or not getattr(
        model, "compiled", False
    ):
        raise RuntimeError(
            f"{caller} needs a compiled model with an optimizer; call "
            "model.compile(optimizer=..., loss=...) before model.fit(...)."
        )


def rebuild_train_function(model) -> None:
    """Makes the next `fit` step retrace with the current optimizer settings."""
    model.train_function = None
    model.make_train_function(force=True)


def ensure_monitor(
    model: keras.Model,
    caller: str,
    min_history: int | None = None,
    check_weights: bool = False,
    skip_nonfinite: bool = True,
) -> GradientMonitor:
    """Returns the model's `GradientMonitor`, installing it if needed.

    Called from a callback's `on_train_begin`. The first time, the model's
    optimizer is wrapped and the train function rebuilt (the user does not
    recompile; in the first `fit` nothing has been traced yet, so this costs
    nothing). The monitor then stays with the model for its life, like a
    `LossScaleOptimizer`: later `fit` calls reuse the compiled train function
    and the ring buffer, and checkpoints keep the inner optimizer's layout.
    The train function is rebuilt again only when a setting compiled into
    the step changes (a longer ring, or the weight check turned on).

    Args:
        model: a compiled `keras.Model`.
        caller: the callback's class name, used in error messages.
        min_history: the ring buffer length this caller needs, or `None`.
        check_weights: whether this caller needs the weight check.
        skip_nonfinite: whether this caller needs non-finite updates skipped
            (`NaNGuard`, the clipping callbacks). `GradientNormLogger`
            installs its monitor without: it applies every update, as plain
            Keras does, and its step holds no `cond`.

    Returns:
        The `GradientMonitor` that records the model's gradients.

    Raises:
        RuntimeError: if the model is not compiled.
        ValueError: if a monitor inside another wrapper is too short.
    """
    require_compiled(model, caller)
    distributed.check_strategy(model, caller)
    _check_one_loss_scaler(model.optimizer, caller)
    monitor = find_monitor(model.optimizer)
    rebuild = False
    if monitor is None or monitor.history < (min_history or 0):
        with distributed.strategy_scope(model):  # mirrored variables
            monitor = _new_monitor(model, monitor, min_history)
        _place(model, monitor, caller)
        rebuild = True
    if check_weights and monitor.require_weight_check():
        rebuild = True
    if skip_nonfinite and monitor.require_skip():
        rebuild = True
    if _continue_steps(model, monitor):
        rebuild = True
    if rebuild:
        rebuild_train_function(model)
    return monitor


class _StepCount:
    """What a model remembers of its monitor: where its step count stands.

    Held on the model (plain attribute, not tracked or saved), so that after
    `model.compile(optimizer=new)` the next monitor goes on from the last
    step instead of numbering steps 1, 2, ... again. It keeps the step
    counter variable only (one scalar), not the old optimizer's state.
    """

    def __init__(self, monitor: GradientMonitor):
        self.monitor = weakref.ref(monitor)
        self.counter = step_counter(monitor.inner_optimizer)
        self.offset = monitor.step_offset

    def last_step(self) -> int:
        return to_int(self.counter) + self.offset


def _continue_steps(model, monitor: GradientMonitor) -> bool:
    """Gives a monitor new to `model` the step offset that keeps steps global.

    A recompile gives the model a new optimizer whose `iterations` start at
    0 again. Steps stay global: the new monitor's first recorded step is the
    old one's last step + 1 (the optimizer's own `iterations`, and so its
    learning-rate schedule, restart as Keras restarts them). A monitor that
    has already recorded steps keeps its numbering.

    Returns:
        True when the offset changed (the train step must be retraced).
    """
    before = getattr(model, "_gradguard_steps", None)
    changed = False
    if before is not None and before.monitor() is not monitor and not (
        monitor.built and monitor.read().count
    ):
        changed = monitor.continue_steps_from(before.last_step())
    # Past Keras' attribute tracking: not a layer, variable or saved state.
    object.__setattr__(model, "_gradguard_steps", _StepCount(monitor))
    return changed


def _check_one_loss_scaler(optimizer, caller: str) -> None:
    """Refuses a chain with two `LossScaleOptimizer`s (before training)."""
    chain = []
    while optimizer is not None:
        chain.append(type(optimizer).__name__)
        optimizer = getattr(optimizer, "inner_optimizer", None)
    if chain.count("LossScaleOptimizer") > 1:
        raise ValueError(DOUBLE_LOSS_SCALE.format(
            f"{caller} found two loss scalers in the model's optimizer, "
            f"{'('.join(chain)}{')' * (len(chain) - 1)}"
        ))


def _new_monitor(model, old: GradientMonitor | None, min_history) -> GradientMonitor:
    """A monitor around the model's optimizer, or a longer one replacing `old`.

    A new one skips nothing; a caller that needs the non-finite skip turns
    it on (`GradientMonitor.require_skip`), as for an existing monitor.
    """
    history = max(DEFAULT_HISTORY, min_history or 0)
    if old is None:
        monitor = GradientMonitor(_updater(model.optimizer), history=history,
                                  skip_nonfinite=False)
    else:  # a longer ring around the same optimizer
        monitor = old.with_history(history)
    if monitor.inner_optimizer.built:
        monitor.build(model.trainable_variables)
    return monitor


def _updater(optimizer):
    """What a new monitor wraps: the optimizer, or the one inside a loss scaler."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return optimizer.inner_optimizer
    return optimizer


def _place(model, monitor: GradientMonitor, caller: str) -> None:
    """Puts `monitor` around its inner optimizer in the model's chain.

    Under mixed precision it goes inside the `LossScaleOptimizer`, where
    Keras puts a monitor the user compiles with, so that checkpoints keep
    `LossScaleOptimizer(inner)`'s layout and the norms it sees are unscaled.
    """
    legacy_h5.install()  # a legacy .h5 save writes the optimizer without the monitor
    optimizer = model.optimizer
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        optimizer.inner_optimizer = monitor
    elif optimizer is monitor.inner_optimizer or isinstance(optimizer, GradientMonitor):
        model.optimizer = monitor
    else:
        raise ValueError(
            f"{caller} needs a GradientMonitor history of at least "
            f"{monitor.history} steps but the model's optimizer holds a "
            f"shorter monitor inside {type(optimizer).__name__}; create it "
            f"with GradientMonitor(..., history={monitor.history})."
        )


def remove_monitor(model: keras.Model) -> bool:
    """Takes the `GradientMonitor` out of a model's optimizer.

    The optimizer the monitor wrapped (with all its state) becomes
    `model.optimizer` again and the train function is rebuilt (one retrace).
    Not needed for saving: a monitor already saves in the inner optimizer's
    layout. Use it when later `fit` calls should not record or skip
    non-finite steps.

    Args:
        model: a compiled `keras.Model`.

    Returns:
        True if a monitor was removed.

    Raises:
        ValueError: if the monitor sits deeper than directly under the
            model's optimizer.
    """
    optimizer = getattr(model, "optimizer", None)
    monitor = find_monitor(optimizer)
    if monitor is None:
        return False
    if not replace_in_chain(model, monitor, monitor.inner_optimizer):  # or a loss scaler's inner
        raise ValueError(
            "remove_monitor() cannot take out a GradientMonitor that sits "
            f"deeper inside {type(optimizer).__name__}; recompile the model "
            "with the optimizer you want."
        )
    rebuild_train_function(model)
    return True
