"""Structured data classification: 13 dict inputs (6 normalized numbers, 7 one-hot).

Adapted from keras-io `examples/structured_data/structured_data_classification_from_scratch.py`
(commit 002c7bbfe68f2f82b7294b712e9784c03a16e960; Apache-2.0, fchollet).
Inputs, `Normalization` adapted on the training data, the `Classifier`
layer, compile and fit settings as published (batch 32). The Cleveland heart
disease CSV replaced by synthetic rows with its columns: the numeric
features with the dataset's means and spreads, the categorical ones given
already encoded as `encode_categorical` leaves them (int64 one-hot vectors,
one per feature, of the published vocabulary sizes), fed as a dict of numpy
arrays. Shrunk: 242 rows as published (the 80% split), epochs 10 (not 50),
the validation set left out.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from . import Setup

SOURCE = "examples/structured_data/structured_data_classification_from_scratch.py"
COMMIT = "002c7bbfe68f2f82b7294b712e9784c03a16e960"
NOT_APPLICABLE: dict = {}
NAN_KEY = "chol"  # the numeric input a NaN goes into
FEATURE_KEY = "ca"  # the (not normalized) one-hot input scaled x1e4

NUMERIC = {"age": (54.4, 9.0), "trestbps": (131.7, 17.6), "thalach": (149.6, 22.9),
           "oldpeak": (1.0, 1.2), "slope": (1.6, 0.6), "chol": (246.7, 51.8)}
CATEGORIES = {"sex": 2, "cp": 5, "fbs": 2, "restecg": 3, "exang": 2, "ca": 4, "thal": 5}
FEATURE_NAMES = list(NUMERIC) + list(CATEGORIES)


def make_data(seed: int):
    rng = np.random.default_rng(seed)
    n = 242
    x, risk = {}, rng.normal(scale=0.5, size=n)
    for name, (mean, spread) in NUMERIC.items():
        z = rng.normal(size=n)
        x[name] = (mean + spread * z).astype("float32").reshape(n, 1)
        risk += {"age": 0.6, "thalach": -0.8, "oldpeak": 0.7}.get(name, 0.0) * z
    for name, k in CATEGORIES.items():
        code = rng.integers(0, k, size=n)
        x[name] = np.eye(k, dtype="int64")[code]
        risk += {"cp": 0.5, "ca": 0.6, "exang": 0.8}.get(name, 0.0) * (code - (k - 1) / 2)
    return x, (risk > 0).astype("int64")


def encode_numerical_feature(feature, name, data):
    normalizer = layers.Normalization()
    normalizer.adapt(data[name])
    return normalizer(feature)


def create_model_inputs(data):
    inputs, encoded = {}, {}
    for name in FEATURE_NAMES:
        if name in CATEGORIES:
            inputs[name] = encoded[name] = layers.Input(
                name=name, shape=(CATEGORIES[name],), dtype="int64")
        else:
            inputs[name] = layers.Input(name=name, shape=(1,), dtype="float32")
            encoded[name] = encode_numerical_feature(inputs[name], name, data)
    return inputs, encoded


class Classifier(keras.layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense_1 = layers.Dense(32, activation="relu")
        self.dropout = layers.Dropout(0.5)
        self.dense_2 = layers.Dense(1, activation="sigmoid")

    def call(self, inputs):
        all_features = layers.concatenate(list(inputs.values()))
        return self.dense_2(self.dropout(self.dense_1(all_features)))

    def build(self, input_shape):
        self.built = True


def build(x, y) -> Setup:
    inputs, encoded = create_model_inputs(x)
    model = keras.Model(inputs, Classifier()(encoded))
    model.compile("adam", "binary_crossentropy", metrics=["accuracy"])
    return Setup(model, x, y.astype("float32"), dict(batch_size=32, epochs=10),
                 task="binary")
