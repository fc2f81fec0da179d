"""`TapeGradientNorm`: the GradientTape-in-a-callback workaround, as a baseline."""

from __future__ import annotations

import keras
import numpy as np


class TapeGradientNorm(keras.callbacks.Callback):
    """Recomputes the gradient of the current batch in a callback.

    This is what users write when they want gradient norms without an
    optimizer wrapper: before each step, slice the batch `fit` is about to
    use out of the training arrays (so `fit` must run with `shuffle=False`),
    run a `tf.function` that does a forward and a backward pass under
    `tf.GradientTape`, and read the global norm. It doubles the
    forward/backward work of every step; `GradientMonitor` reuses the
    gradients the train step has already computed. The benchmark times it
    as configuration 5. TensorFlow only.

    Args:
        x: training inputs, the array passed to `fit`.
        y: training targets, the array passed to `fit`.
        batch_size: the `batch_size` passed to `fit`.
        loss: a Keras loss callable, the one compiled into the model.

    Attributes:
        norms: list of float, the global gradient norm of each step.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, loss):
        super().__init__()
        self.x, self.y = x, y
        self.batch_size = int(batch_size)
        self.loss = loss
        self.norms: list[float] = []
        self._fn = None

    def on_train_begin(self, logs=None):
        import tensorflow as tf

        model, loss = self.model, self.loss

        @tf.function
        def global_norm(x, y):
            with tf.GradientTape() as tape:
                loss_value = loss(y, model(x, training=True))
            grads = tape.gradient(loss_value, model.trainable_variables)
            return tf.linalg.global_norm(grads)

        self._fn = global_norm
        self.norms = []

    def on_train_batch_begin(self, batch, logs=None):
        start = batch * self.batch_size
        stop = start + self.batch_size
        norm = self._fn(self.x[start:stop], self.y[start:stop])
        self.norms.append(float(norm))
