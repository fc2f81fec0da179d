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

from .optimizer_chain import find_monitor, replace_in_chain

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
    return find_monitor(model.optimizer) is not None and find_monitor(_compiled_with(model)) is None


def _compiled_with(model):
    """The optimizer argument of the model's `compile` call (Keras keeps it), or `None`."""
    config = getattr(model, "_compile_config", None)
    return getattr(config, "config", {}).get("optimizer") if config is not None else None


@contextlib.contextmanager
def plain_optimizer(model):
    """Inside the block, `model.optimizer` is the chain without a callback's monitor.

    The monitor goes back where it was when the block ends, and the learning
    rate variable gets back its value (the block writes the rate in use,
    `GradientMonitor.rate_in_use`, as the monitor's `.keras` files hold it).
    """
    monitor = find_monitor(model.optimizer) if getattr(model, "compiled", False) else None
    if monitor is None or find_monitor(_compiled_with(model)) is not None:
        yield
        return
    found = monitor.rate_in_use()
    saved = found[0].numpy() if found is not None else None
    if found is not None:
        found[0].assign(found[1])
    replace_in_chain(model, monitor, monitor.inner_optimizer)
    try:
        yield
    finally:
        replace_in_chain(model, monitor.inner_optimizer, monitor)
        if found is not None:
            found[0].assign(saved)
