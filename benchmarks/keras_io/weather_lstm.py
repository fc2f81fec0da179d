"""Timeseries forecasting for weather: LSTM(32) on 120 hourly steps of 7 features.

Adapted from keras-io `examples/timeseries/timeseries_weather_forecasting.py`
(commit 0a57de48c864d63b80083820e8988368ee5c3149; Apache-2.0, Prabhanshu
Attri, Yashika Sharma, Kilaru Yasaswi Sri Chandra Gandhi). Model, compile and
fit settings as published (Adam(0.001), mse, batch 256); the validation
set, and with it the EarlyStopping (patience 5, more than the 3 epochs run)
and ModelCheckpoint callbacks on val_loss, left out.
The Jena climate series is replaced by synthetic normalized windows of the
same shape (120 x 7 float32) given as numpy, not through
`timeseries_dataset_from_array` (one bad value then stays in one window);
the target is the temperature 12 hours on (a noisy function of the window).
Shrunk: 1536 windows (not 300000), epochs 3 (not 10).
"""

from __future__ import annotations

import keras
import numpy as np

from . import Setup

SOURCE = "examples/timeseries/timeseries_weather_forecasting.py"
COMMIT = "0a57de48c864d63b80083820e8988368ee5c3149"
NOT_APPLICABLE: dict = {}

learning_rate = 0.001
batch_size = 256
epochs = 3  # 10 as published
sequence_length = 120


def make_data(seed: int):
    rng = np.random.default_rng(seed)
    n = 6 * batch_size
    drift = np.cumsum(rng.normal(scale=0.2, size=(n, sequence_length, 7)), axis=1)
    x = (drift / drift.std()).astype("float32")
    y = x[:, -12:, 1].mean(axis=1, keepdims=True) + 0.1 * rng.normal(size=(n, 1))
    return x, y.astype("float32")


def build(x, y) -> Setup:
    inputs = keras.layers.Input(shape=(x.shape[1], x.shape[2]))
    lstm_out = keras.layers.LSTM(32)(inputs)
    outputs = keras.layers.Dense(1)(lstm_out)
    model = keras.Model(inputs=inputs, outputs=outputs)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate), loss="mse")
    return Setup(model, x, y, dict(batch_size=batch_size, epochs=epochs),
                 task="regression")
