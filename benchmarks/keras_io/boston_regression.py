"""Regression on tabular data (Boston housing): Dense(32)-Dense(32)-Dense(1), mse.

Adapted from keras-io `examples/structured_data/regression_boston_housing.py`
(commit abf63bfae530c46a8bb7e6a84843fa58270a3d1f; Apache-2.0, Robert).
Model, compile and fit settings as published (the 13 raw, unnormalized
features, batch 32, validation_split 0.3, EarlyStopping on val_loss with
patience 10); the data replaced by synthetic features with the dataset's
means and spreads and a price in $1000s (5 to 50) that depends on them.
Shrunk: 354 rows as published (the 70% split), epochs 20 (not 100; 8 steps an epoch of a 13-32-32-1 MLP are cheap).
"""

from __future__ import annotations

import numpy as np
import keras  # `from tensorflow import keras` as published: Keras 3 either way
from keras import layers

from . import Setup

SOURCE = "examples/structured_data/regression_boston_housing.py"
COMMIT = "abf63bfae530c46a8bb7e6a84843fa58270a3d1f"
NOT_APPLICABLE: dict = {}

# CRIM ZN INDUS CHAS NOX RM AGE DIS RAD TAX PTRATIO B LSTAT: means and spreads
MEANS = np.array([3.6, 11.4, 11.1, 0.07, 0.55, 6.3, 68.6, 3.8, 9.5, 408.2, 18.5, 356.7, 12.7])
SPREADS = np.array([8.6, 23.3, 6.9, 0.25, 0.12, 0.7, 28.1, 2.1, 8.7, 168.5, 2.2, 91.3, 7.1])


def make_data(seed: int):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(354, 13))
    x = np.abs(MEANS + SPREADS * z)
    price = 22.5 + 6.0 * z[:, 5] - 5.0 * z[:, 12] - 1.5 * z[:, 10] + rng.normal(size=354)
    return x.astype("float32"), np.clip(price, 5, 50).astype("float32")


def build(x, y) -> Setup:
    model = keras.Sequential([
        layers.Dense(32, activation="relu", input_shape=[x.shape[1]]),
        layers.Dense(32, activation="relu"),
        layers.Dense(1),
    ])
    model.compile(loss="mse", optimizer="adam", metrics=["mae", "mse"])
    early_stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=10)
    return Setup(model, x, y, dict(batch_size=32, epochs=20, validation_split=0.3,
                                   callbacks=[early_stop]), task="regression")
