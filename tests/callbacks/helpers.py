"""Small real models, data and an independent gradient computation."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


def dense_model(n_features: int = 8) -> keras.Model:
    return keras.Sequential([
        keras.Input((n_features,)),
        keras.layers.Dense(16, activation="tanh", name="hidden"),
        keras.layers.Dense(8, activation="relu", name="middle"),
        keras.layers.Dense(1, name="head"),
    ])


def lstm_model(seq_len: int = 12, n_features: int = 3) -> keras.Model:
    return keras.Sequential([
        keras.Input((seq_len, n_features)),
        keras.layers.LSTM(8, name="lstm"),
        keras.layers.Dense(1, name="head"),
    ])


def tanh_data(n: int = 256, d: int = 8, seed: int = 0):
    """A learnable regression: tanh of a random projection, plus 0.1 noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype("float32")
    w = rng.normal(size=(d, 1)).astype("float32")
    y = (np.tanh(x @ w / np.sqrt(d)) + 0.1 * rng.normal(size=(n, 1))).astype("float32")
    return x, y


def custom_scalars_layout(logdir) -> dict:
    """The custom-scalars layout TensorBoard's own plugin serves for `logdir`."""
    import json

    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.custom_scalar.custom_scalars_plugin import CustomScalarsPlugin

    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(str(logdir))
    mux.Reload()
    data = data_provider.MultiplexerDataProvider(mux, str(logdir))
    plugin = CustomScalarsPlugin(base_plugin.TBContext(logdir=str(logdir), multiplexer=mux,
                                                       data_provider=data))
    return json.loads(plugin.layout_impl(context.RequestContext(), ""))


def regression_data(shape, n: int = 64, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, *shape)).astype("float32")
    y = rng.normal(size=(n, 1)).astype("float32")
    return x, y


def adding_data(n: int, seq_len: int, seed: int = 0):
    """The adding problem (a copy kept here so the tests' trajectories stay fixed)."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, seq_len, 2), "float32")
    x[:, :, 0] = rng.random((n, seq_len))
    first = rng.integers(0, seq_len // 2, n)
    second = rng.integers(seq_len // 2, seq_len, n)
    rows = np.arange(n)
    x[rows, first, 1] = x[rows, second, 1] = 1.0
    return x, (x[rows, first, 0] + x[rows, second, 0])[:, None]


def tape_steps(model_fn, weights, x, y, batch_size, lr, steps):
    """Replays plain SGD with tf.GradientTape; returns per-step gradients.

    Returns a list (one entry per step) of lists of numpy gradients, computed
    on a fresh copy of the model from `weights`, batch after batch in order.
    """
    model = model_fn()
    model.set_weights(weights)
    loss_fn = keras.losses.MeanSquaredError()
    out = []
    for step in range(steps):
        start = (step * batch_size) % len(x)
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        out.append([g.numpy() for g in grads])
        for v, g in zip(model.trainable_variables, grads):
            v.assign_sub(lr * g)
    return out


def global_norm(grads) -> float:
    return float(np.sqrt(sum(np.sum(np.square(g.astype(np.float64))) for g in grads)))


class WeightsPerStep(keras.callbacks.Callback):
    """Keeps a copy of the weights after every batch-end call (step -> list)."""

    def on_train_begin(self, logs=None):
        self.weights = {0: self.model.get_weights()}
        self.step = 0

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        self.weights[self.step] = self.model.get_weights()


class LastRecord(keras.callbacks.Callback):
    """Reads the GradientMonitor's ring buffer when training ends.

    Put it first: a monitor a callback installed is removed in that
    callback's own `on_train_end`.
    """

    def on_train_end(self, logs=None):
        from gradguard.callbacks.attach import find_monitor

        self.record = find_monitor(self.model.optimizer).read()
