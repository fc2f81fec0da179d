"""A 2-layer bidirectional LSTM on integer reviews (IMDB sentiment).

Adapted from keras-io `examples/nlp/bidirectional_lstm_imdb.py` (commit
0a4be8bbc3ae126f3ca49a0bf173902866ec06f0; Apache-2.0, fchollet). Model,
compile and fit settings as published; IMDB replaced by synthetic padded
reviews (200 tokens, vocabulary 20000). Shrunk: 256 reviews (not 25000),
epochs 2 as published, the validation set left out.
"""

from __future__ import annotations

import keras
from keras import layers

from . import Setup, token_reviews

SOURCE = "examples/nlp/bidirectional_lstm_imdb.py"
COMMIT = "0a4be8bbc3ae126f3ca49a0bf173902866ec06f0"
NOT_APPLICABLE = {
    "nan_input": "integer token ids cannot hold NaN (an inf_label break instead)",
    "feature_x1e4": "integer token ids: a scaled id is out of the vocabulary, TF raises",
}

max_features = 20000
maxlen = 200


def make_data(seed: int):
    x, y = token_reviews(256, maxlen, max_features, seed=seed)
    return x.astype("int32"), y.astype("float32")


def build(x, y) -> Setup:
    inputs = keras.Input(shape=(None,), dtype="int32")
    h = layers.Embedding(max_features, 128)(inputs)
    h = layers.Bidirectional(layers.LSTM(64, return_sequences=True))(h)
    h = layers.Bidirectional(layers.LSTM(64))(h)
    outputs = layers.Dense(1, activation="sigmoid")(h)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    return Setup(model, x, y, dict(batch_size=32, epochs=2), task="binary")
