"""Pre-trained word embeddings: a frozen Embedding into three Conv1D over 200 tokens, 20 topics.

Adapted from keras-io `examples/nlp/pretrained_word_embeddings.py` (commit
ef4cd453400aae442632ffdba260673ecc09500a; Apache-2.0, fchollet). The
embedding layer (20,002 tokens: the vectorizer's 20,000 and 2 more, as
published; 100 dimensions; `Constant(embedding_matrix)`,
`trainable=False`), the model (Conv1D(128, 5, relu) and MaxPooling1D(5)
twice, Conv1D(128, 5, relu), GlobalMaxPooling1D, Dense(128, relu),
Dropout(0.5), Dense(20, softmax)), compile (rmsprop, sparse categorical
crossentropy) and fit (batch 128, the validation set as `validation_data`)
as published, on int64 sequences right-padded to 200 tokens and int64
labels. Newsgroup20 and `TextVectorization` replaced by synthetic
vectorized messages (lengths 40 to 400 words, cut to 200; common words
Zipf-like over the vocabulary, 30% of the words drawn from 10 topic
words of the message's class); GloVe's 100d vectors replaced by a fixed
random matrix of GloVe's scale (N(0, 0.4)), with the script's zero rows for
padding, OOV and the 15% of words GloVe misses. Shrunk: 2,000 training and
500 validation messages (not 15,998 and 3,999), epochs 5 (not 20).

Held out (a third round, session 7): added after the second held-out run,
run once with the rules as they then were.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from . import Setup

SOURCE = "examples/nlp/pretrained_word_embeddings.py"
COMMIT = "ef4cd453400aae442632ffdba260673ecc09500a"
NOT_APPLICABLE = {
    "nan_label": "sparse integer labels: TF raises on a NaN label, before any gradient",
    "inf_label": "sparse integer labels: TF raises on an inf label too",
    "nan_input": "integer token ids cannot hold NaN (numpy refuses the injection)",
    "feature_x1e4": "integer token ids: a scaled id is out of the vocabulary, TF raises",
    "targets_x1e5": "sparse integer labels: a scaled label is out of range, TF raises",
}

num_classes = 20
num_tokens = 20_000 + 2
embedding_dim = 100
sequence_length = 200
TOPIC_WORDS = 10


def _messages(n: int, rng):
    y = rng.integers(0, num_classes, size=n)
    x = np.zeros((n, sequence_length), "int64")
    ranks = np.arange(2, 20_000)
    zipf = 1.0 / (ranks - 1.0)
    zipf /= zipf.sum()
    for i, k in enumerate(y):
        length = min(int(rng.integers(40, 400)), sequence_length)
        words = rng.choice(ranks, size=length, p=zipf)
        topic = rng.random(length) < 0.3
        words[topic] = rng.integers(1_000, 1_000 + TOPIC_WORDS, topic.sum()) + TOPIC_WORDS * k
        x[i, :length] = words
    return x, y.astype("int64")


def make_data(seed: int):
    return _messages(2_000, np.random.default_rng(seed))


def _embedding_matrix():
    rng = np.random.default_rng(1337)
    embedding_matrix = rng.normal(0.0, 0.4, (num_tokens, embedding_dim))
    misses = rng.random(num_tokens) < 0.15
    misses[:2] = True  # padding and OOV
    embedding_matrix[misses] = 0.0
    return embedding_matrix


def build(x, y) -> Setup:
    embedding_layer = layers.Embedding(
        num_tokens,
        embedding_dim,
        embeddings_initializer=keras.initializers.Constant(_embedding_matrix()),
        trainable=False,
    )
    int_sequences_input = keras.Input(shape=(None,), dtype="int64")
    embedded_sequences = embedding_layer(int_sequences_input)
    h = layers.Conv1D(128, 5, activation="relu")(embedded_sequences)
    h = layers.MaxPooling1D(5)(h)
    h = layers.Conv1D(128, 5, activation="relu")(h)
    h = layers.MaxPooling1D(5)(h)
    h = layers.Conv1D(128, 5, activation="relu")(h)
    h = layers.GlobalMaxPooling1D()(h)
    h = layers.Dense(128, activation="relu")(h)
    h = layers.Dropout(0.5)(h)
    preds = layers.Dense(num_classes, activation="softmax")(h)
    model = keras.Model(int_sequences_input, preds)
    model.compile(loss="sparse_categorical_crossentropy", optimizer="rmsprop",
                  metrics=["acc"])
    validation = _messages(500, np.random.default_rng(99))
    return Setup(model, x, y, dict(batch_size=128, epochs=5, validation_data=validation),
                 task="sparse")
