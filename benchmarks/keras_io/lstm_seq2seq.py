"""Character-level seq2seq translation: LSTM encoder states into an LSTM decoder (teacher forcing).

Adapted from keras-io `examples/nlp/lstm_seq2seq.py` (commit
1909c6710cd3f5af6401f1176dcee9e26781b4f3; Apache-2.0, fchollet). The
model (two inputs; LSTM(256, return_state=True) whose states start an
LSTM(256, return_sequences=True, return_state=True); Dense softmax over
the target characters), compile (RMSprop, categorical crossentropy) and
fit as published (a list of the encoder and decoder one-hot inputs, batch
64, validation_split 0.2), the vectorization as published (the decoder
target one step ahead of its input, spaces padding both). The English-French
pairs replaced by synthetic ones of the published shapes (70 input and 91
target characters, sentences of up to 14 and 59 characters): a target is
its source's characters mapped one to one, written twice, between the
script's start and end characters. Shrunk: 2,000 pairs (not 10,000),
epochs 4 (not 100).

Held out (a second round, session 6): added after the first held-out run
led to a change, run once with the rules as they then were.
"""

from __future__ import annotations

import keras
import numpy as np

from . import Setup

SOURCE = "examples/nlp/lstm_seq2seq.py"
COMMIT = "1909c6710cd3f5af6401f1176dcee9e26781b4f3"
NOT_APPLICABLE: dict = {}
NAN_KEY = 0  # the encoder's input carries the NaN and inf breaks
FEATURE_KEY = 0  # and the feature x1e4

N, LATENT = 2_000, 256
INPUT_CHARS = [" "] + [chr(c) for c in range(33, 33 + 69)]  # 70, the space first
TARGET_CHARS = ["\t", "\n", " "] + [chr(c) for c in range(161, 161 + 88)]  # 91


def make_data(seed: int):
    rng = np.random.default_rng(seed)
    mapping = {c: TARGET_CHARS[3 + i % 88] for i, c in enumerate(INPUT_CHARS[1:])}
    inputs, targets = [], []
    for _ in range(N):
        words = rng.choice(INPUT_CHARS[1:], size=rng.integers(2, 14))
        inputs.append("".join(words))
        mapped = "".join(mapping[c] for c in words)
        targets.append("\t" + (mapped + " " + mapped)[:57] + "\n")
    enc_len, dec_len = 14, 59
    enc = np.zeros((N, enc_len, len(INPUT_CHARS)), "float32")
    dec_in = np.zeros((N, dec_len, len(TARGET_CHARS)), "float32")
    dec_out = np.zeros((N, dec_len, len(TARGET_CHARS)), "float32")
    space_in, space_out = INPUT_CHARS.index(" "), TARGET_CHARS.index(" ")
    for i, (source, target) in enumerate(zip(inputs, targets)):
        for t, c in enumerate(source):
            enc[i, t, INPUT_CHARS.index(c)] = 1.0
        enc[i, t + 1:, space_in] = 1.0
        for t, c in enumerate(target):
            dec_in[i, t, TARGET_CHARS.index(c)] = 1.0
            if t > 0:
                dec_out[i, t - 1, TARGET_CHARS.index(c)] = 1.0
        dec_in[i, t + 1:, space_out] = 1.0
        dec_out[i, t:, space_out] = 1.0
    return [enc, dec_in], dec_out


def build(x, y) -> Setup:
    encoder_inputs = keras.Input(shape=(None, len(INPUT_CHARS)))
    encoder = keras.layers.LSTM(LATENT, return_state=True)
    _, state_h, state_c = encoder(encoder_inputs)
    decoder_inputs = keras.Input(shape=(None, len(TARGET_CHARS)))
    decoder_lstm = keras.layers.LSTM(LATENT, return_sequences=True, return_state=True)
    decoder_outputs, _, _ = decoder_lstm(decoder_inputs, initial_state=[state_h, state_c])
    decoder_outputs = keras.layers.Dense(len(TARGET_CHARS), activation="softmax")(decoder_outputs)
    model = keras.Model([encoder_inputs, decoder_inputs], decoder_outputs)
    model.compile(optimizer="rmsprop", loss="categorical_crossentropy", metrics=["accuracy"])
    return Setup(model, x, y, dict(batch_size=64, epochs=4, validation_split=0.2),
                 task="onehot")
