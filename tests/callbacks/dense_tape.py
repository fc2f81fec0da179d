"""An independent replay of training: GradientTape, densified gradients, numpy clipping.

`tf.convert_to_tensor` on a `tf.IndexedSlices` sums the rows of repeated
indices, which is what the update adds to the variable; every norm here is
taken on that densified gradient, never on `IndexedSlices.values`.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


def embedding_model(vocab: int = 12, seq_len: int = 6, mask_zero: bool = False) -> keras.Model:
    return keras.Sequential([
        keras.Input((seq_len,), dtype="int32"),
        keras.layers.Embedding(vocab, 4, mask_zero=mask_zero, name="emb"),
        keras.layers.GlobalAveragePooling1D(name="pool"),
        keras.layers.Dense(1, name="head"),
    ])


def token_data(n: int = 32, vocab: int = 12, seq_len: int = 6, seed: int = 0):
    """Token ids with many repeats: in a batch and inside one sequence."""
    rng = np.random.default_rng(seed)
    x = rng.integers(1, vocab, (n, seq_len)).astype("int32")
    x[:, :3] = x[:, :1]  # the same token three times in every sequence
    y = rng.normal(size=(n, 1)).astype("float32") * 3
    return x, y


def dense_gradients(model, loss_fn, x, y) -> list[np.ndarray]:
    """The tape's gradients of `loss_fn(y, model(x))`, densified, as numpy."""
    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x, training=True))
        if model.losses:
            loss = loss + tf.add_n(model.losses)
    grads = tape.gradient(loss, model.trainable_variables)
    return [np.zeros(v.shape, "float32") if g is None else tf.convert_to_tensor(g).numpy()
            for g, v in zip(grads, model.trainable_variables)]


def global_norm(grads) -> float:
    return float(np.sqrt(sum(np.sum(np.square(g.astype(np.float64))) for g in grads)))


def clip(grads, mode: str | None, value: float | None) -> list[np.ndarray]:
    """Keras' three clipping modes, on densified numpy gradients."""
    if mode == "clipnorm":
        return [g * min(1.0, value / max(np.linalg.norm(g), 1e-30)) for g in grads]
    if mode == "global_clipnorm":
        norm = global_norm(grads)
        return [g * min(1.0, value / norm) for g in grads]
    if mode == "clipvalue":
        return [np.clip(g, -value, value) for g in grads]
    return grads


def replay_sgd(model_fn, weights, x, y, batch_size, lr, steps, mode=None, value=None,
               autoclip=None):
    """Plain SGD on the batches in order, clipped as asked; returns (norms, weights).

    `autoclip`: a percentile; the global norm is clipped to that percentile
    of all norms so far, the current one included (AutoClip).
    """
    model = model_fn()
    model.set_weights(weights)
    loss_fn = keras.losses.MeanSquaredError()
    norms = []
    for step in range(steps):
        start = (step * batch_size) % len(x)
        grads = dense_gradients(model, loss_fn, x[start:start + batch_size],
                                y[start:start + batch_size])
        norms.append(global_norm(grads))
        grads = clip(grads, mode, value)
        if autoclip is not None:
            grads = clip(grads, "global_clipnorm", float(np.percentile(norms, autoclip)))
        for v, g in zip(model.trainable_variables, grads):
            v.assign(v.numpy() - lr * g)
    return np.array(norms), model.get_weights()
