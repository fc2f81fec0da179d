"""Callback overhead: what watching gradients costs per training step.

Trains the same model on the same data under each configuration and
reports the time per step relative to plain `fit`:

- plain `fit` (the limit);
- `GradientMonitor(Adam, skip_nonfinite=False)` compiled in, no
  callbacks: the floor the logger can reach (the logger and AutoClip
  install the same monitor); and `GradientMonitor(Adam)`, which skips
  non-finite steps with a `cond` around the update, as `NaNGuard` sets it;
- Keras' own `Adam(global_clipnorm=1e9)`: what Keras pays to compute the
  same global norm every step (nothing is clipped);
- `GradientNormLogger` reading every step (per layer), every 50 steps, and
  every step with `log_dir` (TensorBoard events);
- `GradientNormLogger` + `NaNGuard` + `AutoClip`, the recipes' set;
- plain `fit` and the compiled-in monitor again with `jit_compile=True`
  (the default, `"auto"`, is False on a CPU-only TensorFlow; the table's
  `jit_compile` column says what each row ran with).

Models: an LSTM (32 units, adding problem, `seq_len` 100, batch 32), a
20 x Dense(64) ReLU MLP (42 variables, batch 32) and a 14 x Dense(64) MLP
(30 variables, batch 128) on standardized poorly scaled regression; a text
model (`Embedding(20_000, 128)` over 64 Zipf-distributed tokens, average
pooling, Dense(64), batch 32: under TensorFlow its gradient is an
`IndexedSlices`) and a small multi-input model (16 numeric features and 4
categorical ids through an `Embedding(1000, 8)`, batch 64).

Whole short fits with fresh callbacks (`fresh_fits.py`): on the models in
`fresh_models` (the MLPs by default), plain fit, the logger and the
logger + NaNGuard + AutoClip stack each run `fresh_rounds` whole fits of
`fresh_steps` steps, with callbacks created anew for each fit, after two
untimed fits; the ratio is a fit's wall time over plain fit's in the same
round (median over rounds). A retrace at a `fit` boundary shows there
and in the "first batch" column.

Method, chosen so that 3% differences show on a shared 2-core machine
(`interleave.py` says why timing whole fits one after the other does not):

- every configuration of every model gets its own model (same seed),
  compiled once and warmed up by a short `fit` (tracing, the monitor's
  installation, any rebuild a callback forces), with the same callback
  instances for all its fits;
- the number of steps per fit comes from a measured step time of plain
  `fit`, so that each timed fit lasts at least `--seconds` (3 s);
- the fits of one model's configurations run interleaved step by step
  (`interleave.interleave`: each takes one step in turn, in an order
  shuffled every cycle), so drift in the machine's speed falls on all of
  them alike; a round is one such interleaved fit of every configuration,
  and there are at least 5 rounds;
- each fit reads the same batches from a fixed `tf.data` pipeline
  (autotuning off, no prefetch thread, whose tuning differed from fit to
  fit) and times its steps from its second on: every callback's batch and
  epoch hooks are inside, `fit`'s set-up is not;
- interleaved, every step starts cold (the other fits' steps ran in
  between: plain fit's steps took up to 40% longer than alone on the
  MLPs), so each round also times plain fit alone, once, before the
  interleaved fits in even rounds and after them in odd ones;
- extra ms/step = a configuration's time per step minus plain fit's in
  the same interleaved round (median over rounds); ratio = 1 + extra /
  plain fit's time per step alone (median over rounds), with the min-max
  of the same per round. It errs high rather than low (if running cold
  slows the extra work too, the extra reads larger); the interleaved ratio
  of medians, beside it, errs low;
- a second, identical plain fit (the A/A row) measures the noise floor: a
  ratio nearer 1.00 than the A/A row's distance from 1.00 is not a
  measurable difference. Targets (issue 20) are printed beside the ratios
  as met / missed, never asserted.

Run from the repository root:

    python -m benchmarks.callback_overhead            # about 20 min on 2 idle cores
    python -m benchmarks.callback_overhead --quick    # smoke run, seconds
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import math
import pathlib
import sys
import tempfile
import time

DEFAULT_OUT = pathlib.Path(__file__).parent / "results" / "callback_overhead.md"


def build_parser() -> argparse.ArgumentParser:
    """The command line (it needs no Keras: `--help` answers before Keras loads)."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.callback_overhead",
        description="Time gradguard's callbacks against plain fit.")
    parser.add_argument("--quick", action="store_true",
                        help="a tiny MLP, 2 short rounds: a smoke run of seconds")
    parser.add_argument("--out", default=None,
                        help=f"Markdown file to write (must not exist); "
                             f"default {DEFAULT_OUT.relative_to(DEFAULT_OUT.parents[2])} or a "
                             "timestamped sibling")
    parser.add_argument("--rounds", type=int, default=None,
                        help="interleaved rounds (default 5, quick 2)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="least duration of a timed plain fit (default 3)")
    parser.add_argument("--models", default=None,
                        help="comma-separated models (default: all), of MODELS in "
                             "benchmarks/overhead_models.py")
    parser.add_argument("--fresh-rounds", type=int, default=None,
                        help="whole fits per configuration with fresh callbacks "
                             "(default 7, quick 2; 0 skips them)")
    parser.add_argument("--extras", action="store_true",
                        help="also the GradientTape and Keras TensorBoard rows")
    return parser


from .program import begin  # noqa: E402

begin(__name__, build_parser)  # flags first as a program, then Keras, quietly

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from gradguard.callbacks import (  # noqa: E402
    AutoClip, GradientMonitor, GradientNormLogger, NaNGuard,
)

from . import fresh_fits  # noqa: E402
from .overhead_models import (  # noqa: E402
    MODELS, ModelSpec, batches, build_network, make_data,
)
from .machine import load_average, machine_header  # noqa: E402
from .interleave import interleave  # noqa: E402
from .report import (  # noqa: E402
    MONITOR, PLAIN, PLAIN_AGAIN, PLAIN_ALONE, alone_lines, markdown,
    overhead_table, target_lines,
)
from .tape_norm import TapeGradientNorm  # noqa: E402
from gradguard.recipes.console import terminal, wrap  # noqa: E402


MONITOR_SKIP = "GradientMonitor compiled in, skipping non-finite steps (as NaNGuard sets it)"
KERAS_NORM = "Keras Adam(global_clipnorm=1e9)"
EVERY_STEP = "logger every step, per layer"
EVERY_50 = "logger every 50 steps"
LOG_DIR = "logger every step, log_dir"
STACK = "logger + NaNGuard + AutoClip"
PLAIN_XLA = "plain fit, jit_compile=True"
MONITOR_XLA = "GradientMonitor compiled in, jit_compile=True"
CONFIGS = (PLAIN, PLAIN_AGAIN, MONITOR, MONITOR_SKIP, KERAS_NORM, EVERY_STEP, EVERY_50, LOG_DIR, STACK)
XLA_CONFIGS = (PLAIN_XLA, MONITOR_XLA)
# Comparisons from the first version of this benchmark (`--extras`).
TAPE = "GradientTape in callback"
KERAS_TB = "TensorBoard(histogram_freq=1, update_freq='batch')"
EXTRA_CONFIGS = (TAPE, KERAS_TB)


@dataclasses.dataclass(frozen=True)
class Config:
    models: tuple = ("LSTM", "MLP 20x64 (42 vars)", "MLP 14x64 b128 (30 vars)")  # timed models
    xla_models: tuple = ("MLP 20x64 (42 vars)", "MLP 14x64 b128 (30 vars)")  # also with jit_compile=True
    rounds: int = 5  # interleaved rounds (each configuration once per round)
    seconds: float = 3.0  # each timed fit of plain fit lasts at least this
    margin: float = 1.15  # steps for seconds * margin at the probed step time
    min_steps: int = 50  # fewest timed steps per fit
    warmup_steps: int = 20  # steps of the untimed warm-up fit
    probe_steps: int = 100  # steps timed to choose the steps per fit
    configs: tuple = CONFIGS  # configurations timed on every model
    extras: bool = False  # also the tape and Keras TensorBoard rows
    seed: int = 0  # data and weight seed
    fresh_models: tuple = ("MLP 20x64 (42 vars)", "MLP 14x64 b128 (30 vars)")  # whole fits
    fresh_rounds: int = 7  # whole fits per configuration (fresh callbacks each)
    fresh_steps: int = 30  # steps per whole fit


QUICK = Config(models=("tiny MLP",), xla_models=(), rounds=2, seconds=0.02,
               min_steps=8, warmup_steps=3, probe_steps=8, fresh_models=("tiny MLP",),
               fresh_rounds=2, fresh_steps=5)


def optimizer_of(name: str) -> keras.optimizers.Optimizer:
    """The optimizer a configuration compiles with."""
    if name in (MONITOR, MONITOR_XLA):
        return GradientMonitor(keras.optimizers.Adam(1e-3), skip_nonfinite=False)
    if name == MONITOR_SKIP:
        return GradientMonitor(keras.optimizers.Adam(1e-3))
    if name == KERAS_NORM:
        return keras.optimizers.Adam(1e-3, global_clipnorm=1e9)
    return keras.optimizers.Adam(1e-3)


def make_callbacks(name: str, x, y, batch_size: int, log_dir: str) -> list:
    """The callbacks of one configuration, fresh instances."""
    if name in (PLAIN, PLAIN_AGAIN, MONITOR, MONITOR_SKIP, KERAS_NORM, PLAIN_XLA,
                MONITOR_XLA):
        return []
    if name == EVERY_STEP:
        return [GradientNormLogger(every_n_steps=1, per_layer=True)]
    if name == LOG_DIR:
        return [GradientNormLogger(every_n_steps=1, log_dir=log_dir)]
    if name == EVERY_50:
        return [GradientNormLogger(every_n_steps=50)]
    if name == STACK:
        return [GradientNormLogger(), NaNGuard(), AutoClip()]
    if name == TAPE:
        return [TapeGradientNorm(x, y, batch_size, keras.losses.MeanSquaredError())]
    if name == KERAS_TB:
        return [keras.callbacks.TensorBoard(
            log_dir=log_dir, histogram_freq=1, update_freq="batch")]
    raise ValueError(f"callback_overhead received configuration {name!r}; "
                     f"expected one of {CONFIGS + XLA_CONFIGS + EXTRA_CONFIGS}.")


class Run:
    """One model x configuration: compiled once, warmed up, then timed fits."""

    def __init__(self, model: str, name: str, spec: ModelSpec, x, y,
                 config: Config, log_dir: str):
        self.model, self.name, self.spec = model, name, spec
        self.x, self.y = x, y
        self.net = build_network(spec, x, config.seed)
        self.net.compile(optimizer=optimizer_of(name),
                         loss=keras.losses.MeanSquaredError(),
                         jit_compile=name in XLA_CONFIGS or "auto")
        self.callbacks = make_callbacks(name, x, y, spec.batch_size, log_dir)
        self.fit(config.warmup_steps)  # traces, installs, rebuilds
        self.jit_compile = bool(self.net.jit_compile)

    def fit(self, steps: int, extra: list = ()) -> None:
        """One epoch of `steps + 1` batches, `extra` callbacks last."""
        self.net.fit(batches(self.x, self.y, self.spec.batch_size, steps + 1),
                     epochs=1, shuffle=False, verbose=0,
                     callbacks=self.callbacks + list(extra))


def steps_for(spec: ModelSpec, x, y, config: Config) -> tuple[int, float]:
    """Steps per timed fit from plain fit's measured step time (ms)."""
    probe = Run("probe", PLAIN, spec, x, y, config, "")
    [seconds] = interleave([lambda extra: probe.fit(config.probe_steps, extra)])
    per_step = float(np.median(seconds))
    steps = max(config.min_steps, math.ceil(config.seconds * config.margin / per_step))
    return steps, 1e3 * per_step


def time_round(model: str, timed: list, steps: int, round_: int,
               config: Config, log=print) -> list[dict]:
    """One round of one model: its fits interleaved, and plain fit alone.

    Plain fit alone runs before the interleaved fits in even rounds and
    after them in odd ones, so that slow drift falls on both alike.
    """
    plain = next(r for r in timed if r.name == PLAIN)

    def alone() -> list[float]:
        return interleave([lambda extra: plain.fit(steps, extra)])[0]

    gc.collect()
    hot = alone() if round_ % 2 == 0 else None
    seconds = interleave([lambda extra, r=r: r.fit(steps, extra) for r in timed],
                         seed=config.seed + round_)
    if hot is None:
        hot = alone()
    rows = []
    for r, name, per_step in [(plain, PLAIN_ALONE, hot)] + [
            (r, r.name, s) for r, s in zip(timed, seconds)]:
        if len(per_step) != steps:
            raise RuntimeError(f"{model} / {name}: timed {len(per_step)} steps, "
                               f"expected {steps}; did training stop early?")
        rows.append({"model": model, "config": name, "repeat": round_,
                     "jit_compile": r.jit_compile, "steps": steps,
                     "seconds": float(np.sum(per_step))})
        log(wrap(f"  round {round_ + 1}/{config.rounds} {1e3 * np.mean(per_step):8.3f} ms/step  {model}: {name}",
                 indent=" " * 30))
    return rows


def run(config: Config, log=print) -> tuple[pd.DataFrame, dict]:
    """Times every model x configuration; one row per timed fit (tidy, raw).

    Returns the rows and, per model, the steps per fit and probed ms/step.
    """
    keras.backend.clear_session()
    gc.collect()
    runs, plan = [], {}
    with tempfile.TemporaryDirectory(prefix="gg_bench_") as tmp:
        for model in config.models:
            spec = MODELS[model]
            names = config.configs + (XLA_CONFIGS if model in config.xla_models else ())
            names += EXTRA_CONFIGS if config.extras else ()
            x, y = make_data(spec, (config.probe_steps + 1) * spec.batch_size,
                             config.seed)
            steps, probed = steps_for(spec, x, y, config)
            plan[model] = (steps, probed)
            log(f"{model}: plain fit {probed:.2f} ms/step -> {steps} steps per fit")
            x, y = make_data(spec, (steps + 1) * spec.batch_size, config.seed)
            for name in names:
                log_dir = tempfile.mkdtemp(dir=tmp)
                runs.append(Run(model, name, spec, x, y, config, log_dir))
        rows = []
        for round_ in range(config.rounds):
            for model in config.models:
                rows += time_round(model, [r for r in runs if r.model == model],
                                   plan[model][0], round_, config, log)
    del runs
    keras.backend.clear_session()
    gc.collect()
    return pd.DataFrame(rows), plan


def run_fresh(config: Config, log=print) -> pd.DataFrame:
    """Whole short fits with fresh callbacks per fit (`fresh_fits.py`)."""
    rows = []
    for model in config.fresh_models:
        spec = MODELS[model]
        x, y = make_data(spec, (config.fresh_steps + 1) * spec.batch_size, config.seed)

        def build(name, spec=spec, x=x):
            net = build_network(spec, x, config.seed)
            net.compile(optimizer=keras.optimizers.Adam(1e-3),
                        loss=keras.losses.MeanSquaredError())
            return net

        rows += fresh_fits.time_fresh_fits(
            model, build, lambda steps, spec=spec, x=x, y=y: batches(x, y, spec.batch_size, steps),
            config.fresh_steps, config.fresh_rounds, config.seed, log)
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


def render(header: str, config: Config, raw: pd.DataFrame, plan: dict,
           load_end: str, elapsed: float, fresh: pd.DataFrame | None = None) -> str:
    """The whole report as Markdown."""
    sizes = "; ".join(
        f"{m}: {steps} steps per fit (plain fit probed at {ms:.2f} ms/step), "
        f"batch {MODELS[m].batch_size}" for m, (steps, ms) in plan.items())
    settings = (
        f"{config.rounds} rounds; in each, one model's configurations ran "
        "interleaved step by step (each one step in turn, the order shuffled "
        f"every cycle), after a {config.warmup_steps}-step warm-up fit per "
        "configuration, and plain fit ran once more alone (before the "
        "interleaved fits in even rounds, after them in odd ones); each timed "
        f"fit sized to last >= {config.seconds:g} s of plain fit. {sizes}. "
        "Batches from a fixed tf.data pipeline (autotuning off, no prefetch). "
        "ms/step: interleaved (every step starts cold). extra ms/step: the "
        "configuration's minus plain fit's, same round (median over rounds). "
        "ratio = 1 + extra / plain fit's ms/step alone (medians; errs high "
        "rather than low); min-max over the per-round ratios. interleaved "
        "ratio: the cold ratio of medians (errs low). The A/A row (a second plain fit) is the noise floor. "
        "jit_compile: what the row ran with (Keras' default 'auto' is False "
        "on CPU-only TensorFlow)."
    )
    table = overhead_table(raw)
    return "\n".join([
        "# Callback overhead", "", header, "", settings, "",
        "## Time per step relative to plain fit", "",
        markdown(table),
        "Plain fit alone and interleaved:", "", *alone_lines(raw), "",
        "## Targets (issue 20; reported, not asserted)", "",
        *target_lines(table), "",
        *_fresh_section(config, fresh),
        f"Load average at the end: {load_end}. "
        f"Wall time of the runs above: {elapsed:.0f} s.", "",
    ])


def _fresh_section(config: Config, fresh: pd.DataFrame | None) -> list[str]:
    """The whole-fit table, or nothing when it was not run."""
    if fresh is None or fresh.empty:
        return []
    return [
        "## Whole short fits, fresh callbacks per fit", "",
        f"{config.fresh_rounds} rounds of one whole fit ({config.fresh_steps} steps) per "
        "configuration, callbacks created for each fit, the order shuffled every round, "
        "after two untimed fits per configuration. ratio: the fit's wall time over plain "
        "fit's in the same round (median; min-max over rounds). Targets (issue 29) "
        "reported, not asserted.", "",
        markdown(fresh_fits.fresh_table(fresh)),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    config = QUICK if args.quick else Config()
    if args.rounds is not None:
        if args.rounds < 1:
            parser.error(f"--rounds {args.rounds}: expected an int >= 1.")
        config = dataclasses.replace(config, rounds=args.rounds)
    if args.seconds is not None:
        if not args.seconds > 0:
            parser.error(f"--seconds {args.seconds}: expected a number > 0.")
        config = dataclasses.replace(config, seconds=args.seconds)
    if args.models is not None:
        models = tuple(m.strip() for m in args.models.split(","))
        unknown = [m for m in models if m not in MODELS]
        if unknown:
            parser.error(f"--models {unknown[0]!r}: expected one of {list(MODELS)}.")
        config = dataclasses.replace(
            config, models=models,
            xla_models=tuple(m for m in config.xla_models if m in models))
    if args.extras:
        config = dataclasses.replace(config, extras=True)
    if args.fresh_rounds is not None:
        config = dataclasses.replace(
            config, fresh_rounds=args.fresh_rounds,
            fresh_models=config.fresh_models if args.fresh_rounds > 0 else ())
    path = output_path(args.out, parser)

    started = time.perf_counter()
    header = machine_header()
    print(header, flush=True)
    raw, plan = run(config, log=lambda s: print(s, flush=True))
    fresh = run_fresh(config, log=lambda s: print(s, flush=True))
    text = render(header, config, raw, plan, load_average(),
                  time.perf_counter() - started, fresh)
    print(terminal(text))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "x") as f:  # "x": never overwrite
        f.write(text)
    print(f"Wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
