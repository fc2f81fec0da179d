"""Imbalanced classification (credit card fraud): Dense(256) x 3, Dropout, class weights.

Adapted from keras-io `examples/structured_data/imbalanced_classification.py`
(commit 0e2570ad95239574579c493d03eac955af344c24; Apache-2.0, fchollet).
Model, compile (Adam(1e-2), binary crossentropy, the six count metrics) and
fit settings as published: batch 2048, `class_weight` of 1 / count per class
(so every sample weighs ~1e-4 or less and the loss is that small), the last
20% held out for validation (`validation_split=0.2`, the same rows the
script slices off), the features standardized with the training part's
mean and std; the `ModelCheckpoint` (a file per epoch) left out. Kaggle's
transactions replaced by synthetic ones of the same 30 columns: Time in
seconds over two days, 28 PCA-like components with heavy tails, Amount
log-normal (median ~22, up to ~2e4), frauds (0.2%; 0.17% published)
shifted along a few components and in amount. Labels uint8 as published.
Shrunk: 20,480 transactions (not 284,807; 8 steps of 2048 an epoch),
epochs 10 (not 30).

Held out: added after every rule NaNGuard uses was set (session 6), run
once, not tuned on.
"""

from __future__ import annotations

import keras
import numpy as np

from . import Setup

SOURCE = "examples/structured_data/imbalanced_classification.py"
COMMIT = "0e2570ad95239574579c493d03eac955af344c24"
NOT_APPLICABLE = {"nan_label": "uint8 labels, as published, cannot hold NaN"}

N, FRAUD = 20_480, 0.002


def make_data(seed: int):
    rng = np.random.default_rng(seed)
    fraud = rng.random(N) < FRAUD
    time = np.sort(rng.uniform(0, 172_792, N))
    spreads = np.linspace(2.0, 0.3, 28)
    pca = rng.standard_t(4, size=(N, 28)) * spreads / np.sqrt(2.0)
    shift = np.zeros(28)
    shift[[2, 9, 11, 13, 16]] = (-4.0, -3.0, -3.5, -5.0, -4.0)
    pca[fraud] += shift * spreads
    amount = np.exp(rng.normal(3.1, 1.4, N)) + 40.0 * fraud
    x = np.column_stack([time, pca, np.minimum(amount, 25_691)]).astype("float32")
    y = fraud.astype("uint8")[:, None]
    # The script's normalization: the training part's statistics, both parts.
    train = x[: N - int(N * 0.2)]
    mean = train.mean(axis=0)
    std = (train - mean).std(axis=0)
    return ((x - mean) / std).astype("float32"), y


def build(x, y) -> Setup:
    counts = np.bincount(y[: len(y) - int(len(y) * 0.2), 0])
    model = keras.Sequential([
        keras.Input(shape=x.shape[1:]),
        keras.layers.Dense(256, activation="relu"),
        keras.layers.Dense(256, activation="relu"),
        keras.layers.Dropout(0.3),
        keras.layers.Dense(256, activation="relu"),
        keras.layers.Dropout(0.3),
        keras.layers.Dense(1, activation="sigmoid"),
    ])
    metrics = [
        keras.metrics.FalseNegatives(name="fn"),
        keras.metrics.FalsePositives(name="fp"),
        keras.metrics.TrueNegatives(name="tn"),
        keras.metrics.TruePositives(name="tp"),
        keras.metrics.Precision(name="precision"),
        keras.metrics.Recall(name="recall"),
    ]
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="binary_crossentropy",
                  metrics=metrics)
    class_weight = {0: 1.0 / counts[0], 1: 1.0 / counts[1]}
    return Setup(model, x, y, dict(batch_size=2048, epochs=10, validation_split=0.2,
                                   class_weight=class_weight),
                 task="binary_balanced")
