"""Finding or installing the `GradientMonitor` behind a compiled model."""

from __future__ import annotations

import keras

from .gradient_monitor import GradientMonitor

DEFAULT_HISTORY = 1024


def find_monitor(optimizer) -> GradientMonitor | None:
    """Returns the `GradientMonitor` in an optimizer chain, or `None`.

    The monitor may be the optimizer itself or sit inside a wrapper such as
    `LossScaleOptimizer(GradientMonitor(...))`.
    """
    while optimizer is not None:
        if isinstance(optimizer, GradientMonitor):
            return optimizer
        optimizer = getattr(optimizer, "inner_optimizer", None)
    return None


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
    model: keras.Model, caller: str, min_history: int | None = None
) -> GradientMonitor:
    """Returns the model's `GradientMonitor`, wrapping its optimizer if needed.

    Called from a callback's `on_train_begin`: the train function is rebuilt,
    so the user does not recompile. A monitor whose ring buffer is shorter
    than `min_history` is replaced by a longer one around the same optimizer
    (its recorded steps are dropped; the optimizer's state is kept).

    Args:
        model: a compiled `keras.Model`.
        caller: the callback's class name, used in error messages.
        min_history: the ring buffer length this caller needs, or `None`.

    Returns:
        The `GradientMonitor` that now records the model's gradients.

    Raises:
        RuntimeError: if the model is not compiled.
    """
    require_compiled(model, caller)
    optimizer = model.optimizer
    monitor = find_monitor(optimizer)
    if monitor is not None and monitor.history >= (min_history or 0):
        return monitor
    if monitor is not None and monitor is not optimizer:
        raise ValueError(
            f"{caller} needs a GradientMonitor history of at least "
            f"{min_history} steps but the model's optimizer holds a monitor "
            f"with history={monitor.history} inside another wrapper; create "
            f"it with GradientMonitor(..., history={min_history})."
        )
    history = max(DEFAULT_HISTORY, min_history or 0)
    if monitor is not None:
        monitor = GradientMonitor(
            monitor.inner_optimizer,
            history=history,
            autoclip_percentile=monitor.autoclip_percentile,
            autoclip_history=monitor.autoclip_history,
            skip_nonfinite=monitor.skip_nonfinite,
        )
    else:
        monitor = GradientMonitor(optimizer, history=history)
    if monitor.inner_optimizer.built:
        monitor.build(model.trainable_variables)
    monitor.installed_by_callback = True
    model.optimizer = monitor
    rebuild_train_function(model)
    return monitor


def release_monitor(model: keras.Model) -> None:
    """Puts back the optimizer the user compiled, after training.

    Only a monitor that `ensure_monitor` installed is removed (the optimizer's
    state lives in the inner optimizer and is kept), so that `model.save()`
    after `fit` stores the optimizer named in the model's compile config. A
    monitor the user compiled with stays. Safe to call more than once.
    """
    optimizer = getattr(model, "optimizer", None)
    if isinstance(optimizer, GradientMonitor) and getattr(
        optimizer, "installed_by_callback", False
    ):
        model.optimizer = optimizer.inner_optimizer
        rebuild_train_function(model)
