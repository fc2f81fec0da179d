"""The models `callback_overhead` times, their data and input pipeline."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from gradguard.datasets import adding_problem, poorly_scaled_regression
from gradguard.recipes.models import deep_dense, sequence_model


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One benchmark model: its family, size and batch."""

    kind: str  # "lstm", "dense", "text" or "multi"
    batch_size: int  # batch of every fit
    depth: int = 20  # hidden Dense layers ("dense")
    width: int = 64  # units per hidden layer ("dense")
    n_features: int = 16  # inputs ("dense")
    seq_len: int = 100  # time steps ("lstm")
    units: int = 32  # recurrent units ("lstm")
    vocab: int = 20_000  # token ids ("text")


MODELS = {
    "LSTM": ModelSpec("lstm", 32),
    "MLP 20x64 (42 vars)": ModelSpec("dense", 32, depth=20),
    "MLP 14x64 b128 (30 vars)": ModelSpec("dense", 128, depth=14),
    "text Embedding 20k x 128": ModelSpec("text", 32, seq_len=64, width=128),
    "multi-input (2 inputs)": ModelSpec("multi", 64, n_features=16),
    "tiny MLP": ModelSpec("dense", 16, depth=2, width=8, n_features=4),  # --quick
}


def make_data(spec: ModelSpec, n: int, seed: int = 0):
    """The training arrays of a model: float32 `(x, y)` of `n` samples."""
    rng = np.random.default_rng(seed)
    if spec.kind == "text":  # Zipf: frequent tokens repeat within a batch
        x = (rng.zipf(1.2, (n, spec.seq_len)) % spec.vocab).astype("int32")
        return x, rng.normal(size=(n, 1)).astype("float32")
    if spec.kind == "multi":
        x = (rng.normal(size=(n, spec.n_features)).astype("float32"),
             rng.integers(0, 1000, (n, 4)).astype("int32"))
        return x, rng.normal(size=(n, 1)).astype("float32")
    if spec.kind == "dense":
        x, y = poorly_scaled_regression(n, spec.n_features, seed=seed)
    else:
        x, y = adding_problem(n, spec.seq_len, seed=seed)
    return x.astype("float32"), y.astype("float32").reshape(n, -1)


def _rows(x, n: int):
    """The first `n` samples of an array or a tuple of arrays."""
    return tuple(a[:n] for a in x) if isinstance(x, tuple) else x[:n]


def build_network(spec: ModelSpec, x: np.ndarray, seed: int = 0) -> keras.Model:
    """A fresh uncompiled model; the seed fixes its initial weights."""
    keras.utils.set_random_seed(seed)
    if spec.kind == "text":
        return keras.Sequential([
            keras.Input((spec.seq_len,), dtype="int32"),
            keras.layers.Embedding(spec.vocab, spec.width),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(1),
        ])
    if spec.kind == "multi":
        numbers = keras.Input((spec.n_features,))
        ids = keras.Input((4,), dtype="int32")
        h = keras.layers.Concatenate()([
            keras.layers.Dense(32, activation="relu")(numbers),
            keras.layers.Flatten()(keras.layers.Embedding(1000, 8)(ids)),
        ])
        h = keras.layers.Dense(32, activation="relu")(h)
        return keras.Model([numbers, ids], keras.layers.Dense(1)(h))
    if spec.kind == "dense":
        return deep_dense(x.shape[1], depth=spec.depth, width=spec.width,
                          standardize=x)
    return sequence_model(x.shape[1], x.shape[2], cell="lstm", units=spec.units)


def batches(x, y, batch_size: int, steps: int):
    """The first `steps` batches of `(x, y)` as a fixed `tf.data` pipeline.

    Autotuning and the default optimizations are off and nothing is
    prefetched, so every fit reads its batches the same way (Keras' own
    pipeline for arrays prefetches with AUTOTUNE, whose tuning differed from
    fit to fit and showed up as 0-4% between identical fits).
    """
    import tensorflow as tf

    n = steps * batch_size
    data = tf.data.Dataset.from_tensor_slices((_rows(x, n), y[:n])).batch(batch_size)
    options = tf.data.Options()
    options.autotune.enabled = False
    options.experimental_optimization.apply_default_optimizations = False
    return data.with_options(options)
