"""Walking an optimizer chain: wrappers (monitor, loss scaler) around the one that updates.

The one place that follows `inner_optimizer` links: to the updating
optimizer, its clipping, its step counter, the loss scaler and the
`GradientMonitor`.
"""

from __future__ import annotations

import keras

_CLIP_ATTRS = ("clipnorm", "clipvalue", "global_clipnorm")


def innermost_optimizer(optimizer):
    """Follows `inner_optimizer` links down to the optimizer that updates."""
    while hasattr(optimizer, "inner_optimizer"):
        optimizer = optimizer.inner_optimizer
    return optimizer


def clip_settings(optimizer) -> dict:
    """The clipping arguments set on the optimizer that does the update."""
    inner = innermost_optimizer(optimizer)
    return {a: getattr(inner, a) for a in _CLIP_ATTRS if getattr(inner, a)}


def find_monitor(optimizer):
    """Returns the `GradientMonitor` in an optimizer chain, or `None`.

    The monitor may be the optimizer itself or sit inside a wrapper such as
    `LossScaleOptimizer(GradientMonitor(...))`.
    """
    from .gradient_monitor import GradientMonitor  # it imports this module

    while optimizer is not None:
        if isinstance(optimizer, GradientMonitor):
            return optimizer
        optimizer = getattr(optimizer, "inner_optimizer", None)
    return None


def loss_scaler(optimizer):
    """The `LossScaleOptimizer` in the chain, or `None`."""
    while optimizer is not None:
        if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            return optimizer
        optimizer = getattr(optimizer, "inner_optimizer", None)
    return None


def step_counter(optimizer):
    """The variable that counts the updating optimizer's training steps.

    That is `iterations` itself, except under `gradient_accumulation_steps`,
    where Keras' `iterations` is a tensor (the applied updates, `_iterations
    // steps`) and the variable `_iterations` counts every step (micro-batch).
    """
    inner = innermost_optimizer(optimizer)
    if hasattr(inner, "_iterations"):
        return inner._iterations
    return inner.iterations


def accumulation_steps(optimizer) -> int | None:
    """The updating optimizer's `gradient_accumulation_steps` (None: off)."""
    return getattr(innermost_optimizer(optimizer), "gradient_accumulation_steps", None)


def replace_in_chain(model, old, new) -> bool:
    """Puts `new` where `old` sits: `model.optimizer`, or inside it (a loss scaler's inner).

    Returns:
        False, changing nothing, when `old` is neither.
    """
    optimizer = model.optimizer
    if optimizer is old:
        model.optimizer = new
    elif getattr(optimizer, "inner_optimizer", None) is old:
        optimizer.inner_optimizer = new
    else:
        return False
    return True
