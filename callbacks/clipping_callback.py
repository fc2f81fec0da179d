"""`ClippingCallback`: the shape AGC, ZClip and AutoClip share.

Each of them switches one of the `GradientMonitor`'s clipping modes on for
the `fit` calls it is passed to: `on_train_begin` installs the monitor if
needed, starts the fit on it and sets the mode (a `ValueError` from the
monitor is reworded with the callback's own name), rebuilding the train
function the first time the mode's code enters the compiled step;
`on_train_end` sets the monitor's per-fit settings back.
"""

from __future__ import annotations

import keras

from .attach import ensure_monitor, rebuild_train_function
from .optimizer_chain import find_monitor


class ClippingCallback(keras.callbacks.Callback):
    """Base class: a callback that sets one clipping mode on the monitor per `fit`.

    Subclasses implement `configure(monitor) -> bool` (set the mode; True
    when the train function must be rebuilt) and `describe() -> str` (how
    an error names the callback, e.g. `"AGC(clipping=0.01)"`), and may set
    `min_history`, the ring length they need.
    """

    min_history: int | None = None

    def configure(self, monitor) -> bool:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def on_train_begin(self, logs=None):
        monitor = ensure_monitor(self.model, type(self).__name__, self.min_history)
        monitor.begin_fit(self.params)
        try:
            rebuild = self.configure(monitor)
        except ValueError as error:
            raise ValueError(f"{self.describe()} cannot be applied: {error}") from None
        if rebuild:
            rebuild_train_function(self.model)

    def on_train_end(self, logs=None):
        monitor = find_monitor(self.model.optimizer)
        if monitor is not None:
            monitor.end_fit()
