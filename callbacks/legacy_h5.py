"""A legacy `.h5` file saved with a callback's monitor attached loads without gradguard.

Keras' native `.keras` format saves the optimizer a model was compiled
with (its compile config holds that object), and the monitor saves the
inner optimizer's variables in their plain layout (`save_own_variables`),
so a `.keras` file never names gradguard. The legacy HDF5 writer
(`keras.src.legacy.saving.legacy_h5_format.save_model_to_hdf5`, behind
`model.save("m.h5")` and `ModelCheckpoint("m.h5")`) reads `model.optimizer`
instead: its class name, its config and its `variables`. With a monitor
that a callback put there, the file would name `GradientMonitor` and load
only where gradguard is installed, and under JAX its weight list would
hold the monitor's telemetry too, so that Keras drops the optimizer state
on load.

`install()` (called when a callback first places a monitor) wraps that one
writer: while it writes a model whose monitor a callback attached, the
model's optimizer chain is the one the user compiled (the monitor taken out,
put back after, whatever happens), and the learning rate written is the one
in use (a `NaNGuard` rollback's cut included, as in `.keras`). A model the
user compiled with `GradientMonitor(...)` themselves is written as it is,
monitor included: that file needs gradguard to load, as its `.keras` does.
Models without a monitor are written exactly as Keras writes them.
"""

from __future__ import annotations

import contextlib
import functools

import numpy as np

from .optimizer_chain import find_monitor

_MARK = "_gradguard_unwraps_monitor"


def install() -> None:
    """Wraps Keras' legacy HDF5 model writer once (idempotent)."""
    try:
        from keras.src.legacy.saving import legacy_h5_format
    except ImportError:  # a Keras without the legacy writer: nothing to wrap
        return
    original = legacy_h5_format.save_model_to_hdf5
    if getattr(original, _MARK, False):
        return

    @functools.wraps(original)
    def save_model_to_hdf5(model, filepath, overwrite=True, include_optimizer=True):
        with plain_optimizer(model) if include_optimizer else contextlib.nullcontext():
            return original(model, filepath, overwrite, include_optimizer)

    setattr(save_model_to_hdf5, _MARK, True)
    legacy_h5_format.save_model_to_hdf5 = save_model_to_hdf5


def attached_by_callback(model) -> bool:
    """Whether the model's monitor was placed by a callback, not compiled in by the user."""
    config = getattr(model, "_compile_config", None)
    compiled_with = getattr(config, "config", {}).get("optimizer") if config is not None else None
    return find_monitor(model.optimizer) is not None and find_monitor(compiled_with) is None


@contextlib.contextmanager
def plain_optimizer(model):
    """Inside the block, `model.optimizer` is the chain without a callback's monitor.

    The monitor goes back where it was when the block ends, and the learning
    rate variable gets back its value (the block writes the rate in use).
    """
    if not getattr(model, "compiled", False) or not attached_by_callback(model):
        yield
        return
    outer = model.optimizer
    monitor = find_monitor(outer)
    inner = monitor.inner_optimizer
    rate = getattr(inner, "_learning_rate", None)
    saved_rate = None
    multiplier = float(getattr(monitor, "lr_multiplier", 1.0))
    if multiplier != 1.0 and hasattr(rate, "assign") and hasattr(rate, "numpy"):
        saved_rate = rate.numpy()
        rate.assign(np.asarray(saved_rate * multiplier, saved_rate.dtype))
    if outer is monitor:
        model.optimizer = inner
    else:  # a LossScaleOptimizer around the monitor
        outer.inner_optimizer = inner
    try:
        yield
    finally:
        if outer is monitor:
            model.optimizer = monitor
        else:
            outer.inner_optimizer = monitor
        if saved_rate is not None:
            rate.assign(saved_rate)
