"""Timeseries classification from scratch: a fully convolutional net (Conv1D + BN).

Adapted from keras-io `examples/timeseries/timeseries_classification_from_scratch.py`
(commit 02cfaa2fc681064105deb460bde3a5f5e4e0e817; Apache-2.0, hfawaz).
Model, compile and fit settings as published (sparse labels, batch 32,
validation_split 0.2, ReduceLROnPlateau and EarlyStopping on val_loss; the
ModelCheckpoint file left out); FordA replaced by synthetic z-normalized
univariate series of length 500 (two classes, two frequencies). Shrunk: 400
series (not 3601), epochs 3 (not 500).
"""

from __future__ import annotations

import keras
import numpy as np

from . import Setup

SOURCE = "examples/timeseries/timeseries_classification_from_scratch.py"
COMMIT = "02cfaa2fc681064105deb460bde3a5f5e4e0e817"
NOT_APPLICABLE = {
    "nan_label": "sparse integer labels: TF raises on a NaN label, before any gradient",
    "targets_x1e5": "sparse integer labels: a scaled label is out of range, TF raises",
}

num_classes = 2


def make_data(seed: int):
    rng = np.random.default_rng(seed)
    n, t = 400, 500
    y = rng.integers(0, 2, size=n)
    steps = np.arange(t)[None, :]
    freq = np.where(y == 1, 0.05, 0.08)[:, None] * (1 + 0.1 * rng.normal(size=(n, 1)))
    x = np.sin(2 * np.pi * freq * steps + rng.uniform(0, 6.3, size=(n, 1)))
    x = x + 0.5 * rng.normal(size=(n, t))
    x = (x - x.mean(axis=1, keepdims=True)) / x.std(axis=1, keepdims=True)
    return x.reshape(n, t, 1).astype("float32"), y


def make_model(input_shape):
    input_layer = keras.layers.Input(input_shape)
    conv1 = keras.layers.Conv1D(filters=64, kernel_size=3, padding="same")(input_layer)
    conv1 = keras.layers.BatchNormalization()(conv1)
    conv1 = keras.layers.ReLU()(conv1)
    conv2 = keras.layers.Conv1D(filters=64, kernel_size=3, padding="same")(conv1)
    conv2 = keras.layers.BatchNormalization()(conv2)
    conv2 = keras.layers.ReLU()(conv2)
    conv3 = keras.layers.Conv1D(filters=64, kernel_size=3, padding="same")(conv2)
    conv3 = keras.layers.BatchNormalization()(conv3)
    conv3 = keras.layers.ReLU()(conv3)
    gap = keras.layers.GlobalAveragePooling1D()(conv3)
    output_layer = keras.layers.Dense(num_classes, activation="softmax")(gap)
    return keras.models.Model(inputs=input_layer, outputs=output_layer)


def build(x, y) -> Setup:
    model = make_model(input_shape=x.shape[1:])
    callbacks = [
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=20,
                                          min_lr=0.0001),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=50, verbose=0),
    ]
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return Setup(model, x, y, dict(batch_size=32, epochs=3, callbacks=callbacks,
                                   validation_split=0.2), task="sparse")
