"""The generated population NaNGuard is judged on: its cases, data, models, set-ups.

Every run is labelled by construction (`benchmarks/diagnosis.py` trains and
reports them): a set-up broken on purpose carries the cause built into it, a
healthy run `healthy`. Keras loads inside the functions that build, so that
importing this module (and `--help`) stays fast.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import keras

CAUSES = ("learning_rate", "input_scale", "depth", "recurrence", "bad_data",
          "loss_scale")
FAMILIES = ("mlp", "conv1d", "conv2d", "simplernn", "gru", "lstm", "attention",
            "embedding")
SEQUENTIAL = ("simplernn", "gru", "lstm", "attention", "conv1d")
N, T, D, VOCAB = 256, 16, 4, 50  # samples, sequence length, features, tokens


@dataclasses.dataclass(frozen=True)
class Case:
    """One run of the population: what was built, and its label."""

    label: str  # the cause built in, or "healthy"
    family: str  # model family (FAMILIES)
    variant: str  # how the label was built (e.g. "nan_in_y", "cosine")
    optimizer: str  # "sgd", "momentum" or "adam"
    seed: int


# -- data ----------------------------------------------------------------


def make_data(family: str, seed: int, n: int = N, seq_len: int = T):
    """Inputs for `family` and a learnable regression target (numpy)."""
    rng = np.random.default_rng(seed)
    if family == "embedding":
        x = rng.integers(0, VOCAB, size=(n, T))
        table = rng.normal(size=VOCAB)
        y = np.tanh(table[x].mean(axis=1, keepdims=True) * 2)
        return x.astype("int32"), y.astype("float32")
    shape = {"mlp": (8,), "conv2d": (8, 8, 1)}.get(family, (seq_len, D))
    x = rng.normal(size=(n, *shape)).astype("float32")
    flat = x.reshape(n, -1)
    w = rng.normal(size=(flat.shape[1], 1)) / np.sqrt(flat.shape[1])
    y = np.tanh(flat @ w) + 0.1 * rng.normal(size=(n, 1))
    return x, y.astype("float32")


# -- models --------------------------------------------------------------


def make_model(family: str, input_shape, *, depth: int = 1, gain: float = 1.0,
               act: str = "tanh", recurrent_gain: float | None = None,
               rnn_act: str = "tanh", dropout: float = 0.0,
               batchnorm: bool = False, layernorm: bool = False,
               classes: int = 0, normalization=None) -> keras.Model:
    """A small model of `family`; `gain` scales every kernel's init (1: Glorot-like).

    Its head is one linear unit, or with `classes` a softmax over them.
    `normalization`: a layer (an adapted `keras.layers.Normalization`) the
    inputs pass through first.
    """
    import keras

    init = keras.initializers.VarianceScaling(gain**2, "fan_in", "truncated_normal")
    rec = ("orthogonal" if recurrent_gain is None
           else keras.initializers.Orthogonal(gain=recurrent_gain))
    inputs = keras.Input(input_shape, dtype="int32" if family == "embedding" else None)
    h = inputs if normalization is None else normalization(inputs)
    if family == "embedding":
        h = keras.layers.Embedding(VOCAB, 16)(h)
        h = keras.layers.GlobalAveragePooling1D()(h)
    elif family in ("conv1d", "conv2d"):
        conv, pool = {"conv1d": (keras.layers.Conv1D, keras.layers.GlobalAveragePooling1D),
                      "conv2d": (keras.layers.Conv2D, keras.layers.GlobalAveragePooling2D)}[family]
        for _ in range(depth):
            h = conv(8, 3, padding="same", activation=act, kernel_initializer=init)(h)
            if batchnorm:
                h = keras.layers.BatchNormalization()(h)
        h = pool()(h)
        depth = 0
    elif family in ("simplernn", "gru", "lstm"):
        layer = {"simplernn": keras.layers.SimpleRNN, "gru": keras.layers.GRU,
                 "lstm": keras.layers.LSTM}[family]
        h = layer(16, activation=rnn_act, recurrent_initializer=rec)(h)
        depth -= 1
    elif family == "attention":
        h = keras.layers.Dense(16, kernel_initializer=init)(h)
        a = keras.layers.MultiHeadAttention(2, 8, kernel_initializer=init)(h, h)
        h = keras.layers.LayerNormalization()(h + a)
        h = keras.layers.GlobalAveragePooling1D()(h)
        depth -= 1
    for _ in range(max(depth, 0)):
        h = keras.layers.Dense(16, activation=act, kernel_initializer=init)(h)
        if batchnorm:
            h = keras.layers.BatchNormalization()(h)
        if layernorm:
            h = keras.layers.LayerNormalization()(h)
        if dropout:
            h = keras.layers.Dropout(dropout)(h)
    out = (keras.layers.Dense(classes, activation="softmax", dtype="float32")(h) if classes
           else keras.layers.Dense(1, dtype="float32")(h))
    return keras.Model(inputs, out)


def one_hot_terciles(y: np.ndarray) -> np.ndarray:
    """A regression target as three classes (its terciles), one-hot."""
    edges = np.quantile(y, [1 / 3, 2 / 3])
    return np.eye(3, dtype="float32")[np.digitize(y[:, 0], edges)]


def constant_loss(y: np.ndarray, loss: str) -> float:
    """The loss of the best constant prediction: the targets' variance, or their entropy."""
    if loss == "mse":
        return float(np.nanvar(np.where(np.isfinite(y), y, np.nan)))
    p = y.mean(axis=0)
    return float(-(p[p > 0] * np.log(p[p > 0])).sum())


def loss_of(case: Case) -> str:
    """The loss a case compiles with: cross-entropy for the classifier variant."""
    return "categorical_crossentropy" if case.variant == "batch_size_1_classes" else "mse"


def unscaled(x: np.ndarray, factor: float = 1.0) -> np.ndarray:
    """`x` with its features spread over 1e-2 .. 1e3 (times `factor`).

    Per feature: the last axis, or every pixel of a one-channel image
    (logspace over one channel gave a single scale of 1e-2: no spread).
    """
    features = x.shape[-1] if x.shape[-1] > 1 else x[0].size
    scales = np.logspace(-2, 3, features).astype("float32")
    if factor != 1.0:
        scales *= factor
    return (x.reshape(len(x), -1, features) * scales).reshape(x.shape)


def make_optimizer(name: str, lr):
    import keras

    if name == "adam":
        return keras.optimizers.Adam(lr)
    if name == "momentum":
        return keras.optimizers.SGD(lr, momentum=0.9, nesterov=True)
    return keras.optimizers.SGD(lr)


# -- the population ------------------------------------------------------


def build(case: Case):
    """(x, y, model, optimizer, batch_size, epochs, policy) of a case."""
    import keras

    keras.utils.set_random_seed(case.seed)
    f, v, opt = case.family, case.variant, case.optimizer
    x, y = make_data(f, case.seed)
    shape = x.shape[1:]
    sane = {"adam": 1e-3, "sgd": 1e-2, "momentum": 1e-2}[opt]
    kw, lr, batch, epochs, policy = {"depth": 2}, sane, 32, 3, "float32"
    rng = np.random.default_rng(case.seed + 100)
    if case.label == "learning_rate":  # a sane net, a rate 100-3000x too high
        lr = {"adam": 3.0, "sgd": 30.0, "momentum": 10.0}[opt]
        if v == "early":
            lr *= 100
        elif v == "mixed_float16":  # the same rate under a float16 policy
            # Float32 at this rate blows up as well (the loss 1e23-7e30 at
            # the first epoch's end, NaN weights; at a tenth of it too):
            # the rate is the cause, the loss scaler only sees it first.
            policy = "mixed_float16"
    elif case.label == "input_scale":  # features spanning 1e-2 .. 1e3
        x = unscaled(x, 30.0 if v == "early" else 1.0)
        # Non-saturating units, so the scale reaches the gradients: a tanh
        # cell maps 1e3 to 1 (a stall indistinguishable from a healthy
        # sequence net in 24 steps), a ReLU cell carries it.
        kw["act"] = "relu"
        if f in ("simplernn", "gru", "lstm"):
            kw["rnn_act"] = "relu"
    elif case.label == "depth":  # 8 layers at init gain 3
        kw.update(depth=8, gain=3.0 if v != "early" else 6.0, act="linear")
        if f in ("simplernn", "gru", "lstm", "attention", "embedding"):
            kw["depth"] = 9
    elif case.label == "recurrence":  # a loop that amplifies, 40-step sequences
        # A ReLU SimpleRNN whose recurrent gain is above 1: after 40 steps
        # its state at init is 190x its gain-1 twin's at 1.3, 2e9x at 2.0.
        # Not a tanh cell (it saturates: 1.3x at gain 2) and not a GRU/LSTM
        # (their gates damp the loop: at gain 2 their state is within 10-20%
        # of gain 1's, and so is their loss; the `gated_gain` twins).
        # `python -m benchmarks.recurrent_gain_twins` measures both.
        x, y = make_data(f, case.seed, seq_len=40)
        shape = x.shape[1:]
        kw.update(recurrent_gain={"gain_1.3": 1.3, "gain_1.5": 1.5, "early": 2.0}[v],
                  rnn_act="relu")
        lr = sane * 10 if opt != "adam" else sane
    elif case.label == "bad_data":
        row = int(rng.integers(N // 2, N))
        if v == "nan_in_x":
            if f == "embedding":  # integer tokens cannot hold NaN
                y[row, 0] = np.nan
            else:
                x.reshape(N, -1)[row, int(rng.integers(x[0].size))] = np.nan
        elif v == "inf_in_x":
            if f == "embedding":
                y[row, 0] = np.inf
            else:
                x.reshape(N, -1)[row, int(rng.integers(x[0].size))] = np.inf
        elif v == "nan_in_y":
            y[row, 0] = np.nan
        elif v == "nan_in_sequence":  # a whole time step of one sequence
            if x.ndim == 3:
                x[row, int(rng.integers(T))] = np.nan
            elif f == "embedding":
                y[row, 0] = np.nan
            else:
                x.reshape(N, -1)[row] = np.nan
    elif case.label == "loss_scale":  # float16 overflow in a net float32 trains
        # Raw counts (mean 1e5, sd 3e4 per feature) through an adapted
        # Normalization layer, a sane rate: float32 learns; under
        # mixed_float16 the inputs are cast to float16 on the way in, and
        # 1e5 is past its range (6.55e4): inf from the first step. Until
        # 7 Dec 2026 these cases were the learning-rate set-up under
        # mixed_float16, which blows up in float32 too (the
        # `learning_rate/mixed_float16` cases below).
        policy = "mixed_float16"
        x = (x * 3e4 + 1e5).astype("float32")
        kw["normalization"] = "adapt"
    # healthy, but alarming
    elif v == "heavy_tailed":
        y = (y + 0.3 * rng.standard_t(1.5, size=y.shape)).astype("float32")
    elif v == "warmup_cosine":
        peak = sane * 10 if opt != "adam" else 1e-2
        lr = keras.optimizers.schedules.CosineDecay(
            peak / 100, decay_steps=16, warmup_target=peak, warmup_steps=8)
    elif v == "batch_size_2":
        x, y, batch, epochs = x[:64], y[:64], 2, 2
    elif v in ("batch_size_1", "batch_size_1_classes"):
        # Per-example steps at a tenth of the rate (the rate scaled with the
        # batch): norms range over orders of magnitude while the net learns;
        # with three softmax classes, most of them near 0 once examples are
        # classified. AUTOTRAINER's Oscillating_Loss_Case trains this way.
        x, y, batch, epochs = x[:256], y[:256], 1, 2
        if v == "batch_size_1_classes":
            y = one_hot_terciles(y)
            kw["classes"] = 3
    elif v == "high_momentum":
        opt = "momentum_099"
    elif v == "dropout":
        kw.update(dropout=0.5, depth=3)
        batch = 8
        x, y = x[:128], y[:128]
    elif v == "batchnorm":
        kw.update(batchnorm=True, depth=3, act="relu")
    elif v == "large_initial_loss":
        y = y * 30.0 + 100.0
        lr = 1e-2 if opt == "adam" else 1e-4
    elif v == "mixed_precision":
        policy = "mixed_float16"
    elif v in ("gated_gain", "relu_cell"):  # twins of the sequence set-ups
        # The recurrence cases' sequences and rate: a GRU/LSTM at recurrent
        # gain 2.0 (the structural sign, but gated), and ReLU cells at gain 1
        # on unit-scale inputs. Both sit near the constant prediction's loss
        # for most of their 24 steps, as the broken sequence nets do.
        x, y = make_data(f, case.seed, seq_len=40)
        shape = x.shape[1:]
        lr = sane * 10 if opt != "adam" else sane
        kw.update({"recurrent_gain": 2.0} if v == "gated_gain" else {"rnn_act": "relu"})
    # Healthy, with a structural sign (`diagnosis.structural_sign`): what
    # the `stalled` rule may not warn about, since they learn.
    elif v == "deep_batchnorm":  # the depth set-up's 8 layers at gain 3, each normalized
        kw.update(depth=8, gain=3.0, act="relu", batchnorm=True)
    elif v == "normalized_scale":  # the input-scale set-up, each hidden layer normalized
        x = unscaled(x)
        kw.update(act="relu", layernorm=True)
    elif v == "short_loop":  # the recurrence set-up's ReLU loop at gain 1.3, 5 steps
        # At the sane rate: at the recurrence set-ups' 10x rate under
        # momentum it diverged unguarded (a loss of 9e11 by step 24).
        x, y = make_data(f, case.seed, seq_len=5)
        shape = x.shape[1:]
        kw.update(recurrent_gain=1.3, rnn_act="relu")
    keras.config.set_dtype_policy(policy)
    if kw.get("normalization") == "adapt":
        kw["normalization"] = keras.layers.Normalization()
        kw["normalization"].adapt(x)
    model = make_model(f, shape, **kw)
    if opt == "momentum_099":
        optimizer = keras.optimizers.SGD(sane / 10, momentum=0.99, nesterov=True)
    else:
        optimizer = make_optimizer(opt, lr)
    return x, y, model, optimizer, batch, epochs, policy


def population(quick: bool = False) -> list[Case]:
    """The broken set-ups (>= 120) and the healthy runs (>= 40)."""
    cases = []
    seeds = (0,) if quick else (0, 1)
    optimizers = ("sgd", "momentum", "adam")
    broken = {
        "learning_rate": (FAMILIES, ("plain", "early")),
        "input_scale": (tuple(f for f in FAMILIES if f != "embedding"),
                        ("plain",)),
        "depth": (("mlp", "conv1d", "conv2d", "embedding", "attention"),
                  ("plain", "early")),
        # One family (see `build`), so each variant meets every optimizer.
        "recurrence": (("simplernn",), ("gain_1.3", "gain_1.5", "early")),
        "bad_data": (FAMILIES, ("nan_in_x", "nan_in_y", "inf_in_x",
                                "nan_in_sequence")),
        "loss_scale": (("mlp", "conv1d", "conv2d"), ("raw_counts",)),
    }
    for cause, (families, variants) in broken.items():
        for i, (f, v) in enumerate(itertools.product(families, variants)):
            # bad data: one seed per set-up (x, y, inf, sequences x families)
            for seed in seeds if cause != "bad_data" else (i % 2,):
                opts = ((optimizers[(i + seed) % 3],) if cause != "recurrence"
                        else optimizers)
                for opt in opts:
                    cases.append(Case(cause, f, v, opt, seed))
                if cause == "loss_scale":  # the rate set-up under float16, as before 7 Dec
                    opt = optimizers[(i + seed) % 3]
                    cases.append(Case("learning_rate", f, "mixed_float16",
                                      "sgd" if opt == "adam" else opt, seed))
    healthy = ("heavy_tailed", "warmup_cosine", "batch_size_2",
               "high_momentum", "dropout", "batchnorm", "large_initial_loss",
               "mixed_precision", "batch_size_1", "batch_size_1_classes")
    families = ("mlp", "conv1d", "conv2d", "gru", "lstm", "attention",
                "embedding", "simplernn")
    for i, v in enumerate(healthy):
        fams = families[i % 3::3][:3] if v != "batchnorm" else ("mlp", "conv1d", "conv2d")
        for j, f in enumerate(fams if not quick else fams[:1]):
            for seed in seeds:
                cases.append(Case("healthy", f, v, optimizers[(i + j + seed) % 3], seed))
    twins = {"gated_gain": ("gru", "lstm"), "relu_cell": ("simplernn", "gru", "lstm"),
             "deep_batchnorm": ("mlp", "conv1d"), "normalized_scale": ("mlp",),
             "short_loop": ("simplernn",)}
    for i, (v, fams) in enumerate(twins.items()):
        for j, f in enumerate(fams if not quick else fams[:1]):
            for seed in seeds:
                cases.append(Case("healthy", f, v, optimizers[(i + j + seed) % 3], seed))
    if quick:  # one of each cause and a few healthy runs
        keep, seen = [], set()
        for c in cases:
            key = (c.label, c.variant if c.label in ("healthy", "bad_data") else "")
            if key not in seen:
                seen.add(key)
                keep.append(c)
        cases = keep
    return cases
