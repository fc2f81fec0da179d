"""NaNGuard judged on a population: broken set-ups and healthy runs that look alarming.

Every run is labelled by construction: a set-up broken on purpose carries
the cause that was built into it (`learning_rate`, `input_scale`, `depth`,
`recurrence`, `bad_data`, `loss_scale`); a healthy run carries `healthy`.
Each trains once, tiny (a few hundred samples, a few epochs), with the
default `NaNGuard()` (action `"stop"`). The table reports:

- detection: the share of broken runs with at least one event;
- the cause confusion matrix (built cause x named cause, of the decisive
  event: the first that stopped training, else the first);
- false events on healthy runs, stops and skips apart;
- the step of the decisive event (time to detection; for bad data, how
  many steps after the first bad batch);
- on a stop, whether the model holds finite weights from before the event's
  step (compared exactly with an independent per-step copy).

Run from the repository root (writes benchmarks/results/diagnosis_<tag>.txt):

    python -m benchmarks.diagnosis --tag after          # the whole population
    python -m benchmarks.diagnosis --quick --tag quick  # one seed, a few runs
    python -m benchmarks.diagnosis --scripts --tag T    # keras-io scripts (diagnosis_scripts.py)
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import sys
import time
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from gradguard.recipes.console import terminal, wrap

if TYPE_CHECKING:
    import keras

# Keras (and TensorFlow) load inside the functions that train, so that
# `--help` answers at once; run as a program, TensorFlow's start-up notes
# are filtered out (`quiet_start`) unless only help is asked for.
if __name__ == "__main__" and not {"-h", "--help"} & set(sys.argv[1:]):
    from gradguard.recipes.console import quiet_start

    quiet_start()
else:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

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
               classes: int = 0) -> keras.Model:
    """A small model of `family`; `gain` scales every kernel's init (1: Glorot-like).

    Its head is one linear unit, or with `classes` a softmax over them.
    """
    import keras

    init = keras.initializers.VarianceScaling(gain**2, "fan_in", "truncated_normal")
    rec = ("orthogonal" if recurrent_gain is None
           else keras.initializers.Orthogonal(gain=recurrent_gain))
    inputs = keras.Input(input_shape, dtype="int32" if family == "embedding" else None)
    h = inputs
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
    elif case.label == "loss_scale":  # float16 overflow at every scale
        policy = "mixed_float16"
        lr = {"adam": 3.0, "sgd": 30.0, "momentum": 10.0}[opt]
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
        "loss_scale": (("mlp", "conv1d", "conv2d"), ("plain",)),
    }
    for cause, (families, variants) in broken.items():
        for i, (f, v) in enumerate(itertools.product(families, variants)):
            # bad data: one seed per set-up (x, y, inf, sequences x families)
            for seed in seeds if cause != "bad_data" else (i % 2,):
                opts = ((optimizers[(i + seed) % 3],) if cause != "recurrence"
                        else optimizers)
                for opt in opts:
                    if cause == "loss_scale" and opt == "adam":
                        opt = "sgd"
                    cases.append(Case(cause, f, v, opt, seed))
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


# -- one run -------------------------------------------------------------


def _recorders():
    """`(_Weights(), _Trace())`: the run's per-step weights and its trace (Keras loaded here)."""
    import keras

    class _Weights(keras.callbacks.Callback):
        """Host copies of the weights before training and after every batch."""

        def on_train_begin(self, logs=None):
            self.copies = [self.model.get_weights()]

        def on_train_batch_end(self, batch, logs=None):
            self.copies.append(self.model.get_weights())


    class _Trace(keras.callbacks.Callback):
        """Per-step running loss and the monitor's record, saved for offline study.

        Passive: reads what the guard reads. `save` writes one `.npz` per run
        (`--traces DIR`), so rules can be replayed on the runs without training.
        """

        def on_train_begin(self, logs=None):
            from gradguard.callbacks.model_evidence import initial_gains, weights_norm

            self.gains, self.recurrent_gain = initial_gains(self.model)
            self.start_norm = weights_norm(self.model)
            self.losses, self.loss_steps, self.rows, self._seen = [], [], [], 0

        def on_train_batch_end(self, batch, logs=None):
            from gradguard.callbacks.attach import find_monitor

            monitor = find_monitor(self.model.optimizer)
            record = monitor.read()
            new = record.since(self._seen)
            self._seen = record.count
            self.rows.append(new)
            self.record = record
            self.losses.append(float((logs or {}).get("loss", np.nan)))
            self.loss_steps.append(int(monitor.last_step))

        def save(self, path):
            from gradguard.callbacks.model_evidence import input_columns

            rows = [r for r in getattr(self, "rows", []) if len(r.steps)]
            if not rows:
                return
            paths = self.record.variable_paths
            columns = input_columns(self.model, paths)
            np.savez(
                path, loss=np.asarray(self.losses), loss_steps=np.asarray(self.loss_steps),
                steps=np.concatenate([r.steps for r in rows]),
                norm=np.concatenate([r.norm for r in rows]),
                status=np.concatenate([r.status for r in rows]),
                variable_norms=np.concatenate([r.variable_norms for r in rows]),
                weights_finite=np.concatenate([r.weights_finite for r in rows]),
                paths=np.asarray(paths), gains=np.asarray(self.gains, dtype=float),
                recurrent_gain=np.nan if self.recurrent_gain is None else self.recurrent_gain,
                input_columns=np.asarray(columns if columns else (-1, -1, 0)),
            )

    return _Weights(), _Trace()


def _get(event, key):
    return event[key] if isinstance(event, dict) else getattr(event, key)


def decisive(events):
    """The first event that stopped or rolled back training, else the first."""
    for e in events:
        if _get(e, "action") in ("stop", "raise", "rollback"):
            return e
    return events[0] if events else None


def run_case(case: Case, traces: str | None = None) -> dict:
    """Trains one case with the default `NaNGuard()`; one row of results.

    With `traces`, a folder: the run's per-step loss and record go to
    `<traces>/<label>-<family>-<variant>-<optimizer>-s<seed>.npz`.
    """
    import keras

    keras.backend.clear_session()
    from gradguard.callbacks import NaNGuard

    start = time.perf_counter()
    row = dataclasses.asdict(case)
    try:
        x, y, model, optimizer, batch, epochs, policy = build(case)
        # Eager where the model has no recurrent loop: the same numbers as
        # the compiled step, without seconds of tracing for a few steps.
        model.compile(optimizer=optimizer, loss=loss_of(case),
                      run_eagerly=case.family not in ("simplernn", "gru", "lstm"))
        (copies, trace), guard = _recorders(), NaNGuard(verbose=False)
        history = model.fit(x, y, batch_size=batch, epochs=epochs, verbose=0,
                            callbacks=[copies, guard, trace])
        if traces:
            os.makedirs(traces, exist_ok=True)
            trace.save(os.path.join(traces, "-".join(
                str(v) for v in dataclasses.astuple(case)) + ".npz"))
    except Exception as error:  # noqa: BLE001  (a row, not a crash)
        row.update(error=f"{type(error).__name__}: {error}"[:200])
        return row
    finally:
        keras.config.set_dtype_policy("float32")
    events = guard.events
    e = decisive(events)
    actions = [_get(x_, "action") for x_ in events]
    row.update(
        error="",
        events=len(events),
        stops=sum(a in ("stop", "raise", "rollback") for a in actions),
        skips=sum(a not in ("stop", "raise", "rollback") for a in actions),
        trigger=_get(e, "trigger") if e else "",
        cause=_get(e, "cause") if e else "",
        step=_get(e, "step") if e else -1,
        final_loss=float(history.history["loss"][-1]),
        constant_loss=constant_loss(y, loss_of(case)),
        seconds=time.perf_counter() - start,
    )
    final = model.get_weights()
    row["weights_finite"] = all(np.isfinite(w).all() for w in final if w.dtype.kind == "f")
    if e is not None and _get(e, "action") == "stop":
        before = copies.copies[: max(int(_get(e, "step")), 1)]
        same = [all(np.array_equal(a, b) for a, b in zip(final, c)) for c in before]
        row["held_finite"] = all(np.isfinite(w).all() for w in final)
        row["held_pre_event"] = bool(any(same)) and row["held_finite"]
    return row


# -- report --------------------------------------------------------------


def summarize(df: pd.DataFrame) -> str:
    """The report: detection, confusion matrix, healthy runs' false events."""
    lines = []
    ok = df[df["error"] == ""]
    broken = ok[ok["label"] != "healthy"]
    healthy = ok[ok["label"] == "healthy"]
    detected = broken["events"] > 0
    correct = broken["cause"] == broken["label"]
    lines.append(f"runs: {len(df)} ({len(broken)} broken, {len(healthy)} healthy, "
                 f"{int((df['error'] != '').sum())} errors)")
    lines.append(f"detection: {detected.sum()}/{len(broken)} = "
                 f"{detected.mean():.1%}")
    lines.append(f"cause accuracy (of all broken): {correct.sum()}/{len(broken)} = "
                 f"{correct.mean():.1%}; of detected: "
                 f"{correct[detected].mean() if detected.any() else 0:.1%}")
    missed = broken[~detected]
    stuck = missed["final_loss"] <= 1.1 * missed["constant_loss"]
    lines.append(f"undetected broken runs: {len(missed)}; of them stuck at the constant "
                 f"prediction's loss (final loss <= 1.1x the targets' variance, "
                 f"nothing exploded): {int(stuck.sum())}")
    lines.append(f"healthy runs with a false event: {(healthy['events'] > 0).sum()}"
                 f"/{len(healthy)}; stopped: {(healthy['stops'] > 0).sum()}; "
                 f"skip-only: {((healthy['skips'] > 0) & (healthy['stops'] == 0)).sum()}"
                 f" (skipped steps in all: {int(healthy['skips'].sum())})")
    stopped = broken[broken.get("held_pre_event").notna()] if "held_pre_event" in broken else broken.iloc[:0]
    if len(stopped):
        lines.append(f"stops that left finite pre-event weights: "
                     f"{int(stopped['held_pre_event'].sum())}/{len(stopped)}")
    lines.append("")
    lines.append("cause confusion matrix (rows: built, columns: named; '' = no event)")
    matrix = pd.crosstab(broken["label"], broken["cause"].replace("", "(none)"))
    lines.append(matrix.to_string())
    lines.append("")
    lines.append("step of the decisive event (median, max) by built cause")
    steps = broken[detected].groupby("label")["step"].agg(["median", "max"])
    lines.append(steps.to_string())
    lines.append("")
    lines.append("detection and cause accuracy by family")
    fam = broken.assign(detected=detected, correct=correct).groupby("family")[
        ["detected", "correct"]].mean()
    lines.append(fam.to_string(float_format="%.2f"))
    misses = broken[~correct]
    if len(misses):
        lines.append("")
        lines.append("misses (no event or another cause)")
        cols = ["label", "family", "variant", "optimizer", "seed", "trigger",
                "cause", "step", "final_loss", "constant_loss"]
        lines.append(misses[cols].to_string(index=False, float_format="%.3g"))
    false = healthy[healthy["events"] > 0]
    if len(false):
        lines.append("")
        lines.append("healthy runs with events")
        cols = ["family", "variant", "optimizer", "seed", "trigger", "cause",
                "step", "stops", "skips", "final_loss", "constant_loss"]
        lines.append(false[cols].to_string(index=False, float_format="%.3g"))
    errors = df[df["error"] != ""]
    if len(errors):
        lines.append("")
        lines.append("errors")
        lines.append(errors[["label", "family", "variant", "error"]].to_string(index=False))
    lines.append("")
    lines.append(f"total seconds: {df['seconds'].sum():.0f}")
    return "\n".join(lines)


def main(argv=None) -> pd.DataFrame:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--scripts" in argv:  # the keras-io population: its own module and flags
        from .diagnosis_scripts import main as scripts_main

        argv.remove("--scripts")
        return scripts_main(argv)
    from gradguard.recipes.cli import program

    parser = argparse.ArgumentParser(prog=program("benchmarks.diagnosis"), description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="one seed, one run per cause and healthy variant")
    parser.add_argument("--tag", default=None,
                        help="results file suffix (none: print only)")
    parser.add_argument("--limit", type=int, default=None,
                        help="run only the first N cases")
    parser.add_argument("--only", default=None,
                        help="run only cases whose label or family is this")
    parser.add_argument("--shard", default=None,
                        help="i/n: run every n-th case from the i-th (0-based) "
                             "and write diagnosis_<tag>_<i>of<n>.csv; "
                             "--merge reads the shards back")
    parser.add_argument("--traces", default=None,
                        help="folder: save each run's per-step loss and "
                             "gradient record (.npz) for offline study")
    parser.add_argument("--merge", type=int, default=None,
                        help="n: summarize the n shards of --tag")
    args = parser.parse_args(argv)
    folder = os.path.join(os.path.dirname(__file__), "results")
    if args.merge:
        df = pd.concat([pd.read_csv(os.path.join(
            folder, f"diagnosis_{args.tag}_{i}of{args.merge}.csv"),
            keep_default_na=False, na_values=[""])
            for i in range(args.merge)])
        for column in ("error", "cause", "trigger"):
            df[column] = df[column].astype(object).fillna("")
        return _report(df, args.tag, folder)
    cases = population(args.quick)
    if args.only:
        cases = [c for c in cases if args.only in (c.label, c.family, c.variant)]
    cases = cases[: args.limit]
    if args.shard:  # in a fixed random order: a shard cut short is still a sample
        i, n = (int(v) for v in args.shard.split("/"))
        order = np.random.default_rng(0).permutation(len(cases))
        cases = [cases[j] for j in order][i::n]
    rows = []
    for i, case in enumerate(cases):
        row = run_case(case, args.traces)
        rows.append(row)
        print(wrap(f"[{i + 1}/{len(cases)}] {case.label:13s} {case.family:9s} "
                   f"{case.variant:16s} {case.optimizer:8s} s{case.seed} -> "
                   f"{row.get('cause', '') or '-':13s} {row.get('trigger', '')} "
                   f"{row.get('error', '')} ({row.get('seconds', 0):.1f}s)", indent="    "),
              flush=True)
        if args.shard:  # written as it goes
            i_, n_ = args.shard.split("/")
            os.makedirs(folder, exist_ok=True)
            pd.DataFrame(rows).to_csv(os.path.join(
                folder, f"diagnosis_{args.tag}_{i_}of{n_}.csv"), index=False)
    df = pd.DataFrame(rows)
    if args.shard:
        os.makedirs(folder, exist_ok=True)
        i, n = args.shard.split("/")
        df.to_csv(os.path.join(folder, f"diagnosis_{args.tag}_{i}of{n}.csv"), index=False)
        return df
    return _report(df, args.tag, folder)


def _report(df: pd.DataFrame, tag: str | None, folder: str) -> pd.DataFrame:
    text = summarize(df)
    print(terminal(text))
    if tag:
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"diagnosis_{tag}.txt"), "w") as f:
            f.write(text + "\n")
        df.to_csv(os.path.join(folder, f"diagnosis_{tag}.csv"), index=False)
    return df


if __name__ == "__main__":
    main(sys.argv[1:])
