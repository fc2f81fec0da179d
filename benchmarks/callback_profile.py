"""Where the callbacks' overhead goes: in-graph recording vs Python hooks.

A companion to `callback_overhead`, on its three models (LSTM, 20 x 64 MLP
with 42 variables, 14 x 64 MLP at batch 128). It splits the cost into

1. the compiled step: plain Adam, Keras' `global_clipnorm` (the norm Keras
   computes itself), `GradientMonitor` compiled in with no callback at all,
   without the `cond` that skips non-finite updates, with AutoClip's
   in-graph percentile, and plain Adam and the monitor under
   `jit_compile=True`; the variants are interleaved every 4 steps, which
   cancels most of the load that other processes put on a shared machine;
2. the Python hooks, timed one call at a time on a trained model:
   `GradientMonitor.read()` (two variable reads and the decoding), one
   variable read alone, `GradientNormLogger`'s batch hook when nothing is
   due and when a read is due, the logger recording a block of 64 rows, and
   `NaNGuard.on_train_batch_end` (a step with no alarm: the tally only);
3. the same hooks timed inside a real `fit` of 300 steps (logger, NaNGuard
   and AutoClip together): where they run in training, after a step, with
   snapshots and every rule as they come.

Run from the repository root: `python -m benchmarks.callback_profile`
(about 5 minutes on 2 cores; `--rounds N` sets part 1's rounds, default 100;
`--hooks-only` runs part 2 alone, about a minute). Prints plain text; writes nothing. Part 2
sets private attributes of the callbacks to replay one step, so it follows
their internals and may need updating.
"""

from __future__ import annotations

import argparse
import sys
import time

def build_parser() -> argparse.ArgumentParser:
    """The command line (it needs no Keras: `--help` answers before Keras loads)."""
    from gradguard.recipes.cli import program

    parser = argparse.ArgumentParser(prog=program("benchmarks.callback_profile"),
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100, help="part 1's interleaved rounds (default 100)")
    parser.add_argument("--hooks-only", action="store_true", help="run part 2 alone (about a minute)")
    return parser


from .program import begin  # noqa: E402

begin(__name__, build_parser)  # flags first as a program, then Keras, quietly

import keras  # noqa: E402
import numpy as np  # noqa: E402

from gradguard.callbacks import AutoClip, GradientMonitor, GradientNormLogger, NaNGuard  # noqa: E402
from gradguard.callbacks.attach import find_monitor  # noqa: E402
from gradguard.recipes.console import wrap  # noqa: E402


from .callback_overhead import MODELS, build_network, make_data  # noqa: E402

PROFILED = ("LSTM", "MLP 20x64 (42 vars)", "MLP 14x64 b128 (30 vars)")


def compiled_step_ms(model: str, variants: dict, x, y, rounds: int = 100,
                     block: int = 4, seed: int = 0) -> dict:
    """Median ms per `train_on_batch` step of each optimizer variant.

    One compiled model per variant (same seed), traced once, then `rounds`
    rounds of `block` steps each, the variants interleaved, so load from
    other processes hits every variant alike.
    """
    spec = MODELS[model]
    bs = spec.batch_size
    nets = {}
    for name, (optimizer_fn, jit) in variants.items():
        net = build_network(spec, x, seed)
        net.compile(optimizer=optimizer_fn(), loss=keras.losses.MeanSquaredError(),
                    jit_compile=jit)
        net.train_on_batch(x[:bs], y[:bs])  # trace
        nets[name] = net
    times = {name: [] for name in variants}
    for r in range(rounds):
        for name, net in nets.items():
            i = (r * block) % (len(x) // bs - block)
            start = time.perf_counter()
            for j in range(i, i + block):
                net.train_on_batch(x[j * bs:(j + 1) * bs], y[j * bs:(j + 1) * bs])
            times[name].append(1e3 * (time.perf_counter() - start) / block)
    return {name: float(np.median(t)) for name, t in times.items()}


def call_ms(fn, n: int = 200) -> float:
    """Median ms of `n` calls of `fn()`."""
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)  # --help answers here instead of running the benchmark
    rounds, hooks_only = args.rounds, args.hooks_only
    adam = lambda: keras.optimizers.Adam(1e-3)  # noqa: E731
    variants = {
        "plain Adam": (adam, False),
        "Adam(global_clipnorm=1e9)": (
            lambda: keras.optimizers.Adam(1e-3, global_clipnorm=1e9), False),
        "GradientMonitor (records, skips non-finite)": (
            lambda: GradientMonitor(adam()), False),
        "GradientMonitor, skip_nonfinite=False": (
            lambda: GradientMonitor(adam(), skip_nonfinite=False), False),
        "GradientMonitor + AutoClip percentile": (lambda: GradientMonitor(
            adam(), autoclip_percentile=10.0, autoclip_history=1000), False),
        "plain Adam, jit_compile=True": (adam, True),
        "GradientMonitor, jit_compile=True": (lambda: GradientMonitor(adam()), True),
    }
    print(wrap("1. Compiled step, no callbacks: ms per train_on_batch step "
               "(x plain Adam); variants interleaved in blocks of 4 steps, median"
               + (": skipped (--hooks-only)" if hooks_only else ""), indent="   "))
    for model in PROFILED if not hooks_only else ():
        spec = MODELS[model]
        x, y = make_data(spec, 64 * spec.batch_size)
        ms = compiled_step_ms(model, variants, x, y, rounds=rounds)
        base = ms["plain Adam"]
        for name, value in ms.items():
            print(f"  {model:26s} {name:50s} {value:7.3f}  x{value / base:.3f}",
                  flush=True)

    print("2. Python hooks on a trained model (ms per call, median of 200)")
    for model in PROFILED:
        spec = MODELS[model]
        x, y = make_data(spec, 64 * spec.batch_size)
        net = build_network(spec, x)
        # Compiled in by hand, so the callbacks leave it in place after fit.
        net.compile(optimizer=GradientMonitor(keras.optimizers.Adam(1e-3)),
                    loss=keras.losses.MeanSquaredError())
        logger, guard = GradientNormLogger(), NaNGuard()
        net.fit(x, y, batch_size=spec.batch_size, epochs=1, shuffle=False,
                verbose=0, callbacks=[logger, guard])
        monitor = find_monitor(net.optimizer)
        record = monitor.read()

        def fresh_read():
            monitor._read_cache.record = None  # what the first reader of a step pays
            monitor.read()

        def logger_due():  # every step: one read, logs, recorded in blocks
            monitor._read_cache.record = None
            logger._seen -= 1
            logger._read_every = 1  # reading every step (no step logs)
            logger._pending = logger.every_n_steps
            logger.on_train_batch_end(logger._last_batch, {})

        def logger_from_step():  # TensorFlow: the step's logs carry the norms
            logger._step_logs.active = True
            logger._read_every = 64
            logger._pending = 0
            logger.on_train_batch_end(logger._last_batch,
                                      {"grad_norm": 1.0, "grad_norm_clipped": 1.0})
            logger._step_logs.active = False

        def logger_not_due():
            logger._pending = -10**9
            logger.on_train_batch_end(logger._last_batch, {})

        def logger_block():  # recording 64 rows (table, statistics)
            logger._last_index = record.count - 64
            logger._collect(record)

        def guard_step():  # one new row, no alarm: the tally is all it reads
            monitor._read_cache.record = None
            guard._last_index = record.count - 1
            guard.on_train_batch_end(0, {"loss": 0.1})

        print(f"  {model}: {len(net.trainable_variables)} trainable variables",
              flush=True)
        rows = [
            ("GradientMonitor.read() (2 variable reads + decode)", fresh_read),
            ("monitor.last_step (1 variable read)", lambda: monitor.last_step),
            ("logger hook, batch with nothing due", logger_not_due),
            ("logger hook, every step (read + logs)", logger_due),
            ("logger hook, every step, norms in the step's logs", logger_from_step),
            ("logger recording a block of 64 rows", logger_block),
            ("NaNGuard.on_train_batch_end (1 new step, no alarm)", guard_step),
        ]
        for name, fn in rows:
            print(f"    {name:52s} {call_ms(fn):7.3f}", flush=True)

    print(wrap(f"3. The hooks inside a real fit ({FIT_STEPS + 1} steps, logger + NaNGuard + "
               "AutoClip, after the same fit untimed): ms per call (mean), and share of the steps' time", indent="   "))
    for model in PROFILED:
        hooks_in_fit(model)
    return 0


FIT_STEPS = 300


def timed(callback, name: str, times: dict) -> None:
    """Wraps one callback's `on_train_batch_end` (this instance) in a timer."""
    hook = callback.on_train_batch_end

    def timed_hook(batch, logs=None):
        start = time.perf_counter()
        hook(batch, logs)
        times.setdefault(name, []).append(time.perf_counter() - start)

    callback.on_train_batch_end = timed_hook


def hooks_in_fit(model: str) -> None:
    """Times each callback's batch hook in a real `fit`, and the fit itself.

    Unlike part 2 the hooks run where they run in training, right after a
    step (colder caches than a loop of calls), with snapshots and every
    rule as they come.
    """
    spec = MODELS[model]
    x, y = make_data(spec, (FIT_STEPS + 1) * spec.batch_size)
    net = build_network(spec, x)
    net.compile(optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.MeanSquaredError())
    callbacks = [GradientNormLogger(), NaNGuard(), AutoClip()]
    # The same fit once untimed: traces, installs, rebuilds (a warm-up on
    # fewer batches left a retrace in the timed fit).
    net.fit(x, y, batch_size=spec.batch_size, epochs=1, shuffle=False, verbose=0,
            callbacks=callbacks)
    times: dict = {}
    for callback in callbacks[:2]:
        timed(callback, type(callback).__name__, times)
    clock = _BatchClock()
    net.fit(x, y, batch_size=spec.batch_size, epochs=1, shuffle=False, verbose=0,
            callbacks=callbacks + [clock])
    # Steps 2..301, from the end of the first batch to the end of the last
    # (the fit's start and end, `on_train_begin`'s work, are left out).
    total = clock.ends[-1] - clock.ends[0]
    steps = len(clock.ends) - 1
    print(f"  {model}: {1e3 * total / steps:.3f} ms a step in all", flush=True)
    for name, spent in times.items():
        spent = spent[1:]
        print(f"    {name + '.on_train_batch_end':52s} {1e3 * np.mean(spent):7.3f}"
              f"  ({100 * sum(spent) / total:.1f}% of the steps' time)", flush=True)


class _BatchClock(keras.callbacks.Callback):
    """The time at the end of each batch (last in the callback list)."""

    def __init__(self):
        super().__init__()
        self.ends = []

    def on_train_batch_end(self, batch, logs=None):
        self.ends.append(time.perf_counter())


if __name__ == "__main__":
    sys.exit(main())
