"""`GradientClipping`: set Keras' clipping on an already compiled model."""

from __future__ import annotations

import keras

from . import distributed
from .attach import (
    begin_fit, ensure_monitor, find_monitor, rebuild_train_function, require_compiled,
)
from .optimizer_chain import clip_settings, innermost_optimizer
from .validation import check, is_number

MODES = ("clipnorm", "clipvalue", "global_clipnorm")


class GradientClipping(keras.callbacks.Callback):
    """Applies one Keras clipping mode to a compiled model before training.

    `clipnorm` clips each variable's gradient to that norm, `global_clipnorm`
    rescales all gradients together so that their global norm is at most the
    value, `clipvalue` clips each element to `[-clipvalue, clipvalue]`. As in
    Keras, only one may be set. The setting is made on the optimizer that does
    the update (inside a `GradientMonitor` or `LossScaleOptimizer`) and stays
    after training, so a saved model records how it was trained, and a
    second `fit` with the same callback does not retrace. None of these
    modes protects against NaN/Inf; `NaNGuard` does.

    Under `tf.distribute.MirroredStrategy` or `MultiWorkerMirroredStrategy`
    Keras clips each replica's gradient before the all-reduce, so the update
    can exceed the bound (up to replicas x `global_clipnorm`). There this
    callback installs the `GradientMonitor`, which clips the all-reduced
    gradient once: the applied update is exactly what one device would apply
    to the global batch.

    Under TensorFlow an `Embedding`'s gradient is a `tf.IndexedSlices`, one
    row per token, and Keras clips its rows as if they were the gradient:
    when a token repeats in the batch the densified gradient (what the
    update adds) can exceed every bound (`clipvalue=c` gives elements up to
    k x c for a token seen k times). For a model with an `Embedding` this
    callback also installs the `GradientMonitor`, which sums repeated rows
    first, so that all three modes bound the update itself.

    Args:
        clipnorm: float > 0 or `None`. Defaults to `None`.
        clipvalue: float > 0 or `None`. Defaults to `None`.
        global_clipnorm: float > 0 or `None`. Defaults to `None`.

    Raises:
        ValueError: if not exactly one mode is set, or a value is not > 0; in
            `on_train_begin`, if the optimizer already clips another way or
            `AutoClip` is on.

    Example:

    ```python
    model.fit(x, y, callbacks=[GradientClipping(global_clipnorm=1.0)])
    ```

    References:
        Pascanu, Mikolov and Bengio, "On the difficulty of training recurrent
        neural networks", ICML 2013.
    """

    def __init__(
        self,
        clipnorm: float | None = None,
        clipvalue: float | None = None,
        global_clipnorm: float | None = None,
    ):
        super().__init__()
        given = {
            k: v
            for k, v in zip(MODES, (clipnorm, clipvalue, global_clipnorm))
            if v is not None
        }
        if len(given) != 1:
            raise ValueError(
                "GradientClipping received "
                f"clipnorm={clipnorm}, clipvalue={clipvalue}, "
                f"global_clipnorm={global_clipnorm}; set exactly one of them, "
                "as Keras allows only one clipping mode."
            )
        (self.mode, self.value), = given.items()
        check(
            is_number(self.value) and self.value > 0,
            "GradientClipping", self.mode, self.value, "a number > 0",
        )

    def on_train_begin(self, logs=None):
        require_compiled(self.model, "GradientClipping")
        if distributed.num_replicas(self.model) > 1 or has_sparse_gradients(self.model):
            # Keras would clip each replica's share before the all-reduce,
            # and an IndexedSlices' rows one by one; the monitor clips the
            # reduced, densified gradient once instead.
            monitor = ensure_monitor(self.model, "GradientClipping")
            begin_fit(monitor, self.params)
            if has_sparse_gradients(self.model) and monitor.require_combined_sparse():
                rebuild_train_function(self.model)
        optimizer = self.model.optimizer
        current = clip_settings(optimizer)
        monitor = find_monitor(optimizer)
        if monitor is not None and monitor.autoclip_percentile is not None:
            raise ValueError(
                f"GradientClipping({self.mode}={self.value}) cannot be "
                "combined with AutoClip: use one clipping mode only."
            )
        if monitor is not None and monitor.adaptive.mode is not None:
            raise ValueError(
                f"GradientClipping({self.mode}={self.value}) cannot be "
                f"combined with {monitor.adaptive.mode}: use one clipping mode only."
            )
        if current and current != {self.mode: self.value}:
            raise ValueError(
                f"GradientClipping({self.mode}={self.value}) cannot be applied: "
                f"the optimizer already clips with {current}. Use one "
                "clipping mode only: compile without clipping, or drop this "
                "callback."
            )
        if current == {self.mode: self.value}:
            return  # set by an earlier fit: the compiled step already clips
        setattr(innermost_optimizer(optimizer), self.mode, float(self.value))
        rebuild_train_function(self.model)


def has_sparse_gradients(model) -> bool:
    """True under TensorFlow when a trainable `Embedding` gives `IndexedSlices`."""
    if keras.backend.backend() != "tensorflow":
        return False
    return any(
        isinstance(layer, keras.layers.Embedding) and layer.trainable_weights
        for layer in model._flatten_layers(include_self=False)
    )
