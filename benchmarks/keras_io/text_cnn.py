"""Text classification from scratch: Embedding + Conv1D on integer reviews.

Adapted from keras-io `examples/nlp/text_classification_from_scratch.py`
(commit 01ae2db402523e96f804c6fc3b0a59582e6a671e; Apache-2.0, Mark Omernick
and Francois Chollet). Model, compile and fit settings as published; the
IMDB text files and `TextVectorization` are replaced by synthetic integer
reviews of the vectorized shape (500 tokens, vocabulary 20000, int64), fed
as numpy with the dataset's batch size 32. Shrunk: 320 reviews (not 20000),
epochs 3 as published; the validation set is left out.
"""

from __future__ import annotations

import keras
from keras import layers

from . import Setup, token_reviews

SOURCE = "examples/nlp/text_classification_from_scratch.py"
COMMIT = "01ae2db402523e96f804c6fc3b0a59582e6a671e"
NOT_APPLICABLE = {
    "nan_input": "integer token ids cannot hold NaN (an inf_label break instead)",
    "feature_x1e4": "integer token ids: a scaled id is out of the vocabulary and "
                    "TF raises in the Embedding gather",
}

max_features = 20000
embedding_dim = 128
sequence_length = 500


def make_data(seed: int):
    x, y = token_reviews(320, sequence_length, max_features, seed=seed)
    return x, y.astype("float32")


def build(x, y) -> Setup:
    inputs = keras.Input(shape=(None,), dtype="int64")
    h = layers.Embedding(max_features, embedding_dim)(inputs)
    h = layers.Dropout(0.5)(h)
    h = layers.Conv1D(128, 7, padding="valid", activation="relu", strides=3)(h)
    h = layers.Conv1D(128, 7, padding="valid", activation="relu", strides=3)(h)
    h = layers.GlobalMaxPooling1D()(h)
    h = layers.Dense(128, activation="relu")(h)
    h = layers.Dropout(0.5)(h)
    predictions = layers.Dense(1, activation="sigmoid", name="predictions")(h)
    model = keras.Model(inputs, predictions)
    model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
    return Setup(model, x, y, dict(batch_size=32, epochs=3), task="binary")
