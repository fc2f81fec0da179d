"""Callback overhead: what watching gradients costs per training step.

Trains the same model on the same data under six callback configurations and
reports steps per second and the time per step relative to plain `fit`:

1. plain `fit` (the limit);
2. `GradientNormLogger` reading every step, per layer (and again with
   `log_dir`, writing TensorBoard events);
3. `GradientNormLogger` reading every 50 steps (the ring buffer still holds
   every step);
4. `GradientNormLogger` + `NaNGuard` + `AutoClip`, the recipes' set;
5. the usual workaround: a callback that recomputes the batch's gradients
   under `tf.GradientTape` in a `tf.function` and takes their global norm;
6. Keras' `TensorBoard(histogram_freq=1, update_freq="batch")`.

Models: an LSTM and a SimpleRNN (32 units) on the adding problem at
`seq_len` 100, and a 20 x 64 ReLU MLP on standardized poorly scaled
regression. Then a scaling run: seconds per epoch of the LSTM for growing
`seq_len`, with and without the logger, and the fitted exponent `k` of
`time ~ seq_len**k`.

Timing: one process; every run builds and compiles a fresh model (same seed
within a round) and fits one epoch of `steps + 1` batches with `verbose=0`
and `shuffle=False`. The first step traces and compiles, so the clock
(`timing.StepClock`) starts when it ends; it stops when the epoch ends, so
every callback's batch and epoch hooks are inside. Configurations run in
round-robin order, `repeats` rounds, the order rotated each round; each
run's time is divided by the plain run of the same model and round, and the
table gives the median and the min-max of those ratios.

Run from the repository root:

    python -m benchmarks.callback_overhead            # about 8 minutes, 2 cores
    python -m benchmarks.callback_overhead --quick    # under a minute
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import pathlib
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from gradguard.callbacks import AutoClip, GradientNormLogger, NaNGuard  # noqa: E402
from gradguard.datasets import adding_problem, poorly_scaled_regression  # noqa: E402
from gradguard.recipes.models import deep_dense, sequence_model  # noqa: E402

from .machine import machine_header  # noqa: E402
from . import long_run, repeated_fit  # noqa: E402
from .report import markdown, overhead_table, render, scaling_table  # noqa: E402
from .tape_norm import TapeGradientNorm  # noqa: E402
from .timing import StepClock  # noqa: E402

DEFAULT_OUT = pathlib.Path(__file__).parent / "results" / "callback_overhead.md"

CONFIGS = (
    "plain fit",
    "logger every step, per layer",
    "logger every step, log_dir",
    "logger every 50 steps",
    "logger + NaNGuard + AutoClip",
    "GradientTape in callback",
    "TensorBoard(histogram_freq=1, update_freq='batch')",
)
MODELS = ("LSTM", "SimpleRNN", "deep dense")


@dataclasses.dataclass(frozen=True)
class Config:
    models: tuple = MODELS  # which models to time
    seq_len: int = 100  # time steps of the RNN models
    units: int = 32  # recurrent units
    n_features: int = 16  # inputs of the deep dense model
    depth: int = 20  # hidden layers of the deep dense model
    width: int = 64  # units per hidden layer
    batch_size: int = 32  # batch of every fit
    steps: int = 64  # timed steps per run (one more, untimed, traces)
    repeats: int = 3  # round-robin rounds
    scaling_seq_lens: tuple = (50, 100, 200, 400, 800)  # LSTM scaling run
    scaling_steps: int = 16  # timed steps per scaling run
    scaling_repeats: int = 2  # rounds of the scaling run
    seed: int = 0  # data and weight seed


QUICK = Config(
    models=("SimpleRNN",), seq_len=50, steps=16, repeats=1,
    scaling_seq_lens=(25, 50), scaling_steps=8, scaling_repeats=1,
)


# -- data and models ------------------------------------------------------

def make_data(model: str, n: int, config: Config, seq_len: int | None = None):
    """The training arrays of a model: float32 `(x, y)` of `n` samples."""
    if model == "deep dense":
        x, y = poorly_scaled_regression(n, config.n_features, seed=config.seed)
    else:
        x, y = adding_problem(n, seq_len or config.seq_len, seed=config.seed)
    return x.astype("float32"), y.astype("float32").reshape(n, -1)


def build_model(model: str, x: np.ndarray, config: Config) -> keras.Model:
    """A fresh compiled model; the seed fixes its initial weights."""
    keras.backend.clear_session()
    gc.collect()
    keras.utils.set_random_seed(config.seed)
    if model == "deep dense":
        net = deep_dense(x.shape[1], depth=config.depth, width=config.width,
                         standardize=x)
    else:
        cell = {"LSTM": "lstm", "SimpleRNN": "simple_rnn"}[model]
        net = sequence_model(x.shape[1], x.shape[2], cell=cell,
                             units=config.units)
    net.compile(optimizer=keras.optimizers.Adam(1e-3),
                loss=keras.losses.MeanSquaredError())
    return net


def make_callbacks(name: str, x, y, batch_size: int, log_dir: str) -> list:
    """The callbacks of one configuration, fresh instances."""
    if name == "plain fit":
        return []
    if name == "logger every step, per layer":
        return [GradientNormLogger(every_n_steps=1, per_layer=True)]
    if name == "logger every step, log_dir":
        return [GradientNormLogger(every_n_steps=1, log_dir=log_dir)]
    if name == "logger every 50 steps":
        return [GradientNormLogger(every_n_steps=50)]
    if name == "logger + NaNGuard + AutoClip":
        return [GradientNormLogger(), NaNGuard(), AutoClip()]
    if name == "GradientTape in callback":
        return [TapeGradientNorm(x, y, batch_size, keras.losses.MeanSquaredError())]
    if name.startswith("TensorBoard"):
        return [keras.callbacks.TensorBoard(
            log_dir=log_dir, histogram_freq=1, update_freq="batch")]
    raise ValueError(f"callback_overhead received configuration {name!r}; "
                     f"expected one of {CONFIGS}.")


def time_run(model: str, name: str, x, y, config: Config, steps: int) -> dict:
    """Fits a fresh model for one epoch; returns the clock's measurements."""
    net = build_model(model, x, config)
    with tempfile.TemporaryDirectory(prefix="gg_bench_") as log_dir:
        clock = StepClock()
        callbacks = make_callbacks(name, x, y, config.batch_size, log_dir)
        clock.fit_started = time.perf_counter()
        net.fit(x, y, batch_size=config.batch_size, epochs=1, shuffle=False,
                verbose=0, callbacks=callbacks + [clock])
    if clock.steps != steps:
        raise RuntimeError(f"{model} / {name}: timed {clock.steps} steps, "
                           f"expected {steps}; did training stop early?")
    return {"seconds": clock.seconds, "cpu_seconds": clock.cpu_seconds,
            "steps": clock.steps,
            "first_step_s": clock.first_step_s}


# -- runs -----------------------------------------------------------------

def rotate(items: tuple, k: int) -> tuple:
    k %= len(items)
    return items[k:] + items[:k]


def run(config: Config, log=print) -> pd.DataFrame:
    """Times every model x configuration; one row per run (tidy, raw)."""
    n = (config.steps + 1) * config.batch_size
    data = {m: make_data(m, n, config) for m in config.models}
    rows = []
    for repeat in range(config.repeats):
        for model in config.models:
            x, y = data[model]
            for name in rotate(CONFIGS, repeat):
                row = time_run(model, name, x, y, config, config.steps)
                row.update(model=model, config=name, repeat=repeat)
                rows.append(row)
                log(f"  round {repeat + 1}/{config.repeats} {model:10s} "
                    f"{name:52s} {1e3 * row['seconds'] / row['steps']:8.2f} "
                    "ms/step")
    return pd.DataFrame(rows)


def run_scaling(config: Config, log=print) -> pd.DataFrame:
    """Times the LSTM with and without the logger over `scaling_seq_lens`."""
    n = (config.scaling_steps + 1) * config.batch_size
    variants = ("plain fit", "logger every step, per layer")
    rows = []
    for repeat in range(config.scaling_repeats):
        for seq_len in config.scaling_seq_lens:
            x, y = make_data("LSTM", n, config, seq_len)
            for name in rotate(variants, repeat):
                row = time_run("LSTM", name, x, y, config, config.scaling_steps)
                row.update(seq_len=seq_len, config=name, repeat=repeat)
                rows.append(row)
                log(f"  scaling round {repeat + 1}/{config.scaling_repeats} "
                    f"seq_len {seq_len:4d} {name:30s} {row['seconds']:7.3f} s")
    return pd.DataFrame(rows)


# -- output ---------------------------------------------------------------

def output_path(out: str | None, parser: argparse.ArgumentParser) -> pathlib.Path:
    """Where to write: `--out` (refused if it exists) or a fresh default."""
    if out is not None:
        path = pathlib.Path(out)
        if path.exists():
            parser.error(f"--out {path} already exists; pass a new path or "
                         "move the old file away (it is never overwritten).")
        return path
    if not DEFAULT_OUT.exists():
        return DEFAULT_OUT
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return DEFAULT_OUT.with_name(f"{DEFAULT_OUT.stem}-{stamp}{DEFAULT_OUT.suffix}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.callback_overhead",
        description="Time gradguard's callbacks against plain fit.")
    parser.add_argument("--quick", action="store_true",
                        help="one model, 1 round, 2 seq_lens: under a minute")
    parser.add_argument("--out", default=None,
                        help=f"Markdown file to write (must not exist); "
                             f"default {DEFAULT_OUT} or a timestamped sibling")
    parser.add_argument("--repeats", type=int, default=None,
                        help="round-robin rounds (default 3, quick 1)")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps per run (default 64, quick 16)")
    args = parser.parse_args(argv)
    config = QUICK if args.quick else Config()
    for flag in ("repeats", "steps"):
        value = getattr(args, flag)
        if value is not None:
            if value < 1:
                parser.error(f"--{flag} {value}: expected an int >= 1.")
            config = dataclasses.replace(config, **{flag: value})
    path = output_path(args.out, parser)

    started = time.perf_counter()
    header = machine_header()
    print(header, flush=True)
    raw = run(config, log=lambda s: print(s, flush=True))
    raw_scaling = run_scaling(config, log=lambda s: print(s, flush=True))
    long = long_run.summary_table(long_run.run(
        3000 if args.quick else 8000, 1, log=lambda s: print(s, flush=True)
    ))
    repeated_config = repeated_fit.QUICK if args.quick else repeated_fit.Config()
    repeated = repeated_fit.summary_table(
        repeated_fit.run(repeated_config, log=lambda s: print(s, flush=True))
    )
    text = render(header, config, overhead_table(raw),
                  *scaling_table(raw_scaling, config),
                  time.perf_counter() - started)
    text += "\n".join([
        "", "## Repeated fit (benchmarks.repeated_fit)", "",
        f"{repeated_config}; the whole pattern after a warm-up fit, ratio to "
        "plain fit's same pattern in the same round.", "",
        markdown(repeated),
        "## Long run (benchmarks.long_run)", "",
        "A 20 x Dense(8) MLP, batch 8, each configuration in its own process; "
        "RSS growth is the slope after the first 1000 steps.", "",
        markdown(long),
    ])
    print(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "x") as f:  # "x": never overwrite
        f.write(text)
    print(f"Wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
