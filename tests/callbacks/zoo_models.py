"""The model zoo: small models of every common Keras kind, with their data.

Backend-agnostic (`keras` only), so that the JAX run (`test_zoo.py`, in a
subprocess) builds the same models; each factory returns a fresh, compiled
model, and `data(name, n, seed)` its inputs and targets. Dropout is off
where a model has it by default, so that a step is deterministic and its
gradient can be recomputed with a tape; `regularized_dropout` keeps it on
(its norms are then checked for being finite, not equal).
"""

from __future__ import annotations

import keras
import numpy as np

VOCAB = 50
SEQ = 8


def embedding():
    return keras.Sequential([
        keras.Input((SEQ,), dtype="int32"),
        keras.layers.Embedding(VOCAB, 8, name="emb"),
        keras.layers.Flatten(name="flat"),
        keras.layers.Dense(1, name="head"),
    ])


def embedding_masked():
    return keras.Sequential([
        keras.Input((SEQ,), dtype="int32"),
        keras.layers.Embedding(VOCAB, 8, mask_zero=True, name="emb"),
        keras.layers.LSTM(8, name="lstm"),
        keras.layers.Dense(1, name="head"),
    ])


def conv_batchnorm():
    return keras.Sequential([
        keras.Input((6, 6, 2)),
        keras.layers.Conv2D(4, 3, name="conv"),
        keras.layers.BatchNormalization(name="bn"),
        keras.layers.ReLU(name="relu"),
        keras.layers.Flatten(name="flat"),
        keras.layers.Dense(1, name="head"),
    ])


def attention_layernorm():
    inputs = keras.Input((SEQ, 8))
    attended = keras.layers.MultiHeadAttention(2, 4, name="mha")(inputs, inputs)
    h = keras.layers.LayerNormalization(name="ln")(inputs + attended)
    h = keras.layers.GlobalAveragePooling1D(name="pool")(h)
    return keras.Model(inputs, keras.layers.Dense(1, name="head")(h))


def shared_layers():
    left, right = keras.Input((5,), name="left"), keras.Input((5,), name="right")
    shared = keras.layers.Dense(6, activation="tanh", name="shared")
    h = keras.layers.Concatenate(name="cat")([shared(left), shared(right)])
    return keras.Model([left, right], keras.layers.Dense(1, name="head")(h))


def dict_io():
    a, b = keras.Input((4,), name="a"), keras.Input((3,), name="b")
    h = keras.layers.Dense(8, activation="relu", name="trunk")(
        keras.layers.Concatenate(name="cat")([a, b]))
    outputs = {"score": keras.layers.Dense(1, name="score")(h),
               "label": keras.layers.Dense(3, activation="softmax", name="label")(h)}
    return keras.Model({"a": a, "b": b}, outputs)


def frozen_layers():
    model = keras.Sequential([
        keras.Input((6,)),
        keras.layers.Dense(8, activation="tanh", name="frozen"),
        keras.layers.Dense(8, activation="tanh", name="trained"),
        keras.layers.Dense(1, name="head"),
    ])
    model.get_layer("frozen").trainable = False
    return model


def bidirectional_timedistributed():
    return keras.Sequential([
        keras.Input((SEQ, 3)),
        keras.layers.Bidirectional(keras.layers.GRU(4, return_sequences=True), name="bigru"),
        keras.layers.TimeDistributed(keras.layers.Dense(2), name="td"),
        keras.layers.Flatten(name="flat"),
        keras.layers.Dense(1, name="head"),
    ])


def regularized_dropout():
    l2 = keras.regularizers.L2(1e-3)
    return keras.Sequential([
        keras.Input((6,)),
        keras.layers.Dense(16, activation="relu", kernel_regularizer=l2, name="hidden"),
        keras.layers.Dropout(0.3, name="dropout"),
        keras.layers.Dense(1, kernel_regularizer=l2, bias_regularizer=l2, name="head"),
    ])


def keras_hub_gpt2():
    import keras_hub

    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=VOCAB, num_layers=1, num_heads=2, hidden_dim=16,
        intermediate_dim=32, dropout=0.0, max_sequence_length=16, name="gpt2",
    )
    h = keras.layers.GlobalAveragePooling1D(name="pool")(backbone(backbone.input))
    return keras.Model(backbone.input, keras.layers.Dense(1, name="head")(h))


FACTORIES = {f.__name__: f for f in [
    embedding, embedding_masked, conv_batchnorm, attention_layernorm, shared_layers,
    dict_io, frozen_layers, bidirectional_timedistributed, regularized_dropout,
    keras_hub_gpt2,
]}
DETERMINISTIC = set(FACTORIES) - {"regularized_dropout"}


def build(name: str) -> keras.Model:
    """A fresh model, compiled with plain SGD and its loss(es)."""
    model = FACTORIES[name]()
    loss = {"score": "mse", "label": "sparse_categorical_crossentropy"} \
        if name == "dict_io" else "mse"
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss=loss)
    return model


def data(name: str, n: int, seed: int = 0):
    """Inputs and targets for the model `name`: tokens repeat in every batch."""
    rng = np.random.default_rng(seed)
    y = rng.normal(size=(n, 1)).astype("float32")
    tokens = rng.integers(1, VOCAB, (n, SEQ)).astype("int32")
    tokens[:, 1] = tokens[:, 0]  # a token twice in every sequence
    if name == "embedding_masked":
        tokens[:, -3:] = 0  # padding, masked
        return tokens, y
    if name == "embedding":
        return tokens, y
    if name == "keras_hub_gpt2":
        mask = np.ones((n, SEQ), "int32")
        mask[:, -2:] = 0
        return {"token_ids": tokens, "padding_mask": mask}, y
    if name == "conv_batchnorm":
        return rng.normal(size=(n, 6, 6, 2)).astype("float32"), y
    if name in ("attention_layernorm", "bidirectional_timedistributed"):
        width = 8 if name == "attention_layernorm" else 3
        return rng.normal(size=(n, SEQ, width)).astype("float32"), y
    if name == "shared_layers":
        return [rng.normal(size=(n, 5)).astype("float32") for _ in range(2)], y
    if name == "dict_io":
        x = {"a": rng.normal(size=(n, 4)).astype("float32"),
             "b": rng.normal(size=(n, 3)).astype("float32")}
        return x, {"score": y, "label": rng.integers(0, 3, (n, 1)).astype("int32")}
    return rng.normal(size=(n, 6)).astype("float32"), y


def take(tree, start: int, stop: int):
    """Rows `start:stop` of every array in a nest of inputs or targets."""
    if isinstance(tree, dict):
        return {k: take(v, start, stop) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [take(v, start, stop) for v in tree]
    return tree[start:stop]


class WeightsBefore(keras.callbacks.Callback):
    """The weights every step starts from (a copy per step)."""

    def on_train_begin(self, logs=None):
        self.seen = []

    def on_train_batch_begin(self, batch, logs=None):
        self.seen.append(self.model.get_weights())
