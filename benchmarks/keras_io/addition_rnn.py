"""Sequence to sequence addition ("535+61" -> "596"): LSTM encoder, RepeatVector, LSTM decoder.

Adapted from keras-io `examples/nlp/addition_rnn.py` (commit
0e2325b31f291531990c55fec009feee850b6ca9; Apache-2.0, Smerity and others).
The data as the script generates it (3-digit sums, questions reversed,
one-hot over "0123456789+ ", no question seen twice, the last 10% held
out for validation: `validation_split=0.1` holds out the same rows), the model (LSTM(128), RepeatVector(4), LSTM(128,
return_sequences=True), Dense(12, softmax)), compile (categorical
crossentropy, Adam) and the script's loop as published: one `fit(...,
epochs=1, batch_size=32, validation_data=...)` per iteration, the same
callbacks handed to each, the loop going on whatever a fit ended with.
One-hot arrays float32 (bool published: Keras feeds the model the same
0/1 values either way; as float32 they can carry the NaN and scale breaks).
Shrunk: 5,000 questions (not 50,000) and 4 iterations (not 29).

Held out: added after every rule NaNGuard uses was set (session 6), run
once, not tuned on.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from . import Setup

SOURCE = "examples/nlp/addition_rnn.py"
COMMIT = "0e2325b31f291531990c55fec009feee850b6ca9"
NOT_APPLICABLE: dict = {}

TRAINING_SIZE, DIGITS = 5_000, 3
MAXLEN = DIGITS + 1 + DIGITS
CHARS = sorted(set("0123456789+ "))
ITERATIONS = 4  # `for epoch in range(1, epochs)`: 29 published


def _encode(text: str, rows: int) -> np.ndarray:
    out = np.zeros((rows, len(CHARS)), "float32")
    for i, c in enumerate(text):
        out[i, CHARS.index(c)] = 1.0
    return out


def make_data(seed: int):
    rng = np.random.default_rng(seed)
    questions, expected, seen = [], [], set()
    while len(questions) < TRAINING_SIZE:
        a, b = (int("".join(rng.choice(list("0123456789"))
                            for _ in range(rng.integers(1, DIGITS + 1))))
                for _ in range(2))
        key = tuple(sorted((a, b)))
        if key in seen:
            continue
        seen.add(key)
        q = f"{a}+{b}"
        questions.append((q + " " * (MAXLEN - len(q)))[::-1])  # REVERSE = True
        ans = str(a + b)
        expected.append(ans + " " * (DIGITS + 1 - len(ans)))
    x = np.stack([_encode(q, MAXLEN) for q in questions])
    y = np.stack([_encode(a, DIGITS + 1) for a in expected])
    order = rng.permutation(len(y))
    return x[order], y[order]


def train(setup: Setup, callbacks: list) -> dict:
    """The script's loop: one-epoch fits, the same callbacks each time."""
    model, losses, stopped = setup.model, [], False
    for _ in range(ITERATIONS):
        # `validation_split=0.1` holds out the script's own last 10% (`split_at`).
        history = model.fit(setup.x, setup.y, batch_size=32, epochs=1, verbose=0,
                            validation_split=0.1, callbacks=list(callbacks))
        losses += history.history.get("loss", [])
        stopped |= bool(model.stop_training)
    model.stop_training = stopped  # a fit that was stopped (the next one starts anyway)
    return {"loss": losses}


def build(x, y) -> Setup:
    model = keras.Sequential()
    model.add(keras.Input((MAXLEN, len(CHARS))))  # `input_shape=` on the LSTM, published
    model.add(layers.LSTM(128))
    model.add(layers.RepeatVector(DIGITS + 1))
    model.add(layers.LSTM(128, return_sequences=True))
    model.add(layers.Dense(len(CHARS), activation="softmax"))
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    return Setup(model, x, y, dict(epochs=ITERATIONS, validation_split=0.1),
                 task="onehot", train=train)
