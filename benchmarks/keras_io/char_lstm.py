"""Character-level text generation: one LSTM(128) over 40 one-hot characters, the next one by softmax.

Adapted from keras-io `examples/generative/lstm_character_level_text_generation.py`
(commit 61b6dba5e62808524df142b4c56d8266add5d349; Apache-2.0, fchollet). The
vectorization (the lowercased text without newlines cut into windows of
`maxlen` 40 characters every `step` 3, each window one-hot over the sorted
character set, its next character the one-hot target), the model
(Input((40, 56)), LSTM(128), Dense(56, softmax)), compile (RMSprop(learning_rate
=0.01), categorical crossentropy, no metrics) and fit (batch 128, no
validation) as published. One-hot arrays float32 (bool published: Keras feeds
the model the same 0/1 values either way; as float32 they can carry the NaN
and scale breaks). The script's loop (one `fit(epochs=1)` per epoch, 400
characters sampled at four temperatures after each) is one `fit` over the
shrunk epochs here, without the sampling (it only prints; training is the
same). Nietzsche's text (56 characters once lowercased and its newlines
made spaces) replaced by a synthetic corpus over 56 characters of the same
kinds (space, 15 punctuation marks, 10 digits, 26 letters, 4 accented
letters): sentences from a small grammar (determiner, optional adjective,
noun, verb, object or adverb, now and then a clause after a comma, a
parenthesis, a quoted, _underlined_ or possessive noun, a bracketed note),
over a vocabulary of 66 words and a few set phrases, in numbered sections
("12. ") as the book's aphorisms are; the words and the grammar are
learnable, which word comes next is not (a healthy fit reaches ~0.74
accuracy, the space, the commonest character, being 0.17). Shrunk: a
corpus of 24,000 characters (7,987 windows; not 600,893 characters,
200,285 windows), epochs 4 (not 40).

Held out (a sixth round, session 8): added after the fifth held-out run, run once with the rules as they then were.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from . import Setup

SOURCE = "examples/generative/lstm_character_level_text_generation.py"
COMMIT = "61b6dba5e62808524df142b4c56d8266add5d349"
NOT_APPLICABLE: dict = {}

CORPUS_CHARS = 24_000  # 600,893 published
EPOCHS = 4  # 40 published
MAXLEN, STEP = 40, 3
CHARS = sorted(" !\"'(),-.:;=?[]_" + "0123456789" + "abcdefghijklmnopqrstuvwxyz" + "äæéë")

DETERMINERS = ["the", "a", "every", "no", "this", "our"]
ADJECTIVES = ["good", "evil", "noble", "weak", "strong", "free", "deep", "proud",
              "modern", "naive", "quiet", "jealous", "exquisite", "vulgar"]
NOUNS = ["truth", "will", "spirit", "morality", "philosopher", "soul", "virtue",
         "power", "woman", "german", "herd", "science", "religion", "cæsar",
         "mädchen", "noël", "réflexion", "zeal", "judgment", "sky"]
VERBS = ["loves", "fears", "seeks", "despises", "conquers", "deceives", "knows",
         "questions", "overcomes", "wants", "hides", "mocks", "believes", "exalts"]
ADVERBS = ["perhaps", "always", "never", "quickly", "secretly", "rarely", "thereby"]
CLAUSES = ["and", "but", "for", "so", "yet"]
ASIDES = ["(as it seems)", "(who knows?)", "(alas!)", "(so to speak)"]


def _noun_phrase(rng) -> str:
    words = [DETERMINERS[rng.integers(len(DETERMINERS))]]
    if rng.random() < 0.5:
        words.append(ADJECTIVES[rng.integers(len(ADJECTIVES))])
    noun = NOUNS[rng.integers(len(NOUNS))]
    r = rng.random()
    if r < 0.08:
        noun = f'"{noun}"'
    elif r < 0.14:
        noun = f"_{noun}_"
    elif r < 0.2:
        noun = f"{NOUNS[rng.integers(len(NOUNS))]}'s {noun}"
    words.append(noun)
    return " ".join(words)


def _clause(rng) -> str:
    parts = [_noun_phrase(rng), VERBS[rng.integers(len(VERBS))]]
    r = rng.random()
    if r < 0.6:
        parts.append(_noun_phrase(rng))
    elif r < 0.85:
        parts.append(ADVERBS[rng.integers(len(ADVERBS))])
    else:
        parts.append("what is " + ADJECTIVES[rng.integers(len(ADJECTIVES))])
    if rng.random() < 0.1:
        parts.append(ASIDES[rng.integers(len(ASIDES))])
    return " ".join(parts)


def _sentence(rng) -> str:
    text = _clause(rng)
    if rng.random() < 0.35:
        text += ", " + CLAUSES[rng.integers(len(CLAUSES))] + " " + _clause(rng)
    elif rng.random() < 0.1:
        text += " -- " + _clause(rng)
    if rng.random() < 0.05:
        text += f" [{rng.integers(1, 10)}]"
    if rng.random() < 0.03:
        text += " = " + NOUNS[rng.integers(len(NOUNS))]
    end = rng.choice([".", ".", ".", ".", "!", "?", ";", ":"])
    return text + end


def corpus(seed: int, length: int = CORPUS_CHARS) -> str:
    """A synthetic text of `length` characters over `CHARS`, numbered sections of sentences."""
    rng = np.random.default_rng(seed)
    pieces, section, size = [], int(rng.integers(1, 50)), 0
    while size < length:
        sentences = [_sentence(rng) for _ in range(rng.integers(2, 6))]
        piece = f"{section}. " + " ".join(sentences) + " "
        pieces.append(piece)
        size += len(piece)
        section += 1
    return "".join(pieces)[:length]


def make_data(seed: int):
    text = corpus(seed)
    char_indices = {c: i for i, c in enumerate(CHARS)}
    starts = range(0, len(text) - MAXLEN, STEP)
    x = np.zeros((len(starts), MAXLEN, len(CHARS)), dtype="float32")
    y = np.zeros((len(starts), len(CHARS)), dtype="float32")
    for i, s in enumerate(starts):
        for t, char in enumerate(text[s:s + MAXLEN]):
            x[i, t, char_indices[char]] = 1.0
        y[i, char_indices[text[s + MAXLEN]]] = 1.0
    return x, y


def build(x, y) -> Setup:
    model = keras.Sequential([
        keras.Input(shape=(MAXLEN, len(CHARS))),
        layers.LSTM(128),
        layers.Dense(len(CHARS), activation="softmax"),
    ])
    optimizer = keras.optimizers.RMSprop(learning_rate=0.01)
    model.compile(loss="categorical_crossentropy", optimizer=optimizer)
    return Setup(model, x, y, dict(batch_size=128, epochs=EPOCHS), task="onehot")
