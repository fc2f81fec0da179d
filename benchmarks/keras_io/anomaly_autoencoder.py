"""Timeseries anomaly detection: a Conv1D / Conv1DTranspose reconstruction autoencoder.

Adapted from keras-io `examples/timeseries/timeseries_anomaly_detection.py`
(commit 3aca0563e5cebb3e442bee3f7c30adc53cfe3102; Apache-2.0, pavithrasv).
The model (Conv1D 32 and 16, stride 2, Dropout 0.2, Conv1DTranspose 16, 32
and 1), compile (Adam(1e-3), mse) and fit as published (`x_train` as input
and target, batch 128, validation_split 0.1, EarlyStopping on val_loss with
patience 5), on windows of 288 steps of the standardized series. NAB's
`art_daily_small_noise.csv` (14 days at 5 minutes: 4,032 values, a daily
plateau between ~20 and ~80 with small noise) replaced by a synthetic
series of that shape. Shrunk: epochs 6 (not 50).

Held out: added after every rule NaNGuard uses was set (session 6), run
once, not tuned on.
"""

from __future__ import annotations

import numpy as np
from keras import layers
import keras

from . import Setup

SOURCE = "examples/timeseries/timeseries_anomaly_detection.py"
COMMIT = "3aca0563e5cebb3e442bee3f7c30adc53cfe3102"
NOT_APPLICABLE: dict = {}

TIME_STEPS = 288


def make_data(seed: int):
    rng = np.random.default_rng(seed)
    t = np.arange(288 * 14)
    day = (t % 288) / 288.0
    plateau = 1.0 / (1.0 + np.exp(-40 * (day - 0.35))) - 1.0 / (1.0 + np.exp(-40 * (day - 0.75)))
    values = 20.0 + 60.0 * plateau + rng.normal(0.0, 2.0, t.shape)
    values = (values - values.mean()) / values.std(ddof=1)  # pandas' std
    x = np.stack([values[i:i + TIME_STEPS] for i in range(len(values) - TIME_STEPS + 1)])
    x = x[..., None].astype("float32")
    return x, x.copy()


def build(x, y) -> Setup:
    model = keras.Sequential([
        layers.Input(shape=(x.shape[1], x.shape[2])),
        layers.Conv1D(filters=32, kernel_size=7, padding="same", strides=2, activation="relu"),
        layers.Dropout(rate=0.2),
        layers.Conv1D(filters=16, kernel_size=7, padding="same", strides=2, activation="relu"),
        layers.Conv1DTranspose(filters=16, kernel_size=7, padding="same", strides=2,
                               activation="relu"),
        layers.Dropout(rate=0.2),
        layers.Conv1DTranspose(filters=32, kernel_size=7, padding="same", strides=2,
                               activation="relu"),
        layers.Conv1DTranspose(filters=1, kernel_size=7, padding="same"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.001), loss="mse")
    early = keras.callbacks.EarlyStopping(monitor="val_loss", patience=5, mode="min")
    return Setup(model, x, y, dict(epochs=6, batch_size=128, validation_split=0.1,
                                   callbacks=[early]), task="reconstruction")
