"""Walking an optimizer chain: wrappers (monitor, loss scaler) around the one that updates."""

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


def loss_scaler(optimizer):
    """The `LossScaleOptimizer` in the chain, or `None`."""
    while optimizer is not None:
        if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            return optimizer
        optimizer = getattr(optimizer, "inner_optimizer", None)
    return None
