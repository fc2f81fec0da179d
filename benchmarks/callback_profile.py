"""Where the callbacks' overhead goes: in-graph recording vs Python hooks.

A companion to `callback_overhead`: it splits the cost of the recipes'
callbacks into

1. the compiled step: `GradientMonitor` compiled in with no callback at all
   (the ring-buffer writes), without the `cond` that skips non-finite
   updates, and with AutoClip's in-graph percentile; the variants are
   interleaved every 4 steps, which cancels most of the load that other
   processes put on a shared machine;
2. the Python hooks, timed one call at a time on a trained model:
   `GradientMonitor.read()`, `model.get_weights()`, the optimizer-state copy
   and the whole of `NaNGuard.on_train_batch_end`.

Run from the repository root: `python -m benchmarks.callback_profile`
(about 2.5 minutes on 2 cores). Prints plain text; writes nothing. Part 2
calls private methods of the callbacks (`_collect`, `_take_snapshot`) to
time them alone, so it follows their internals and may need updating.
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from gradguard.callbacks import GradientMonitor, GradientNormLogger, NaNGuard  # noqa: E402
from gradguard.callbacks.attach import find_monitor  # noqa: E402

from .callback_overhead import Config, build_model, make_data  # noqa: E402


def compiled_step_ms(model: str, variants: dict, config: Config, x, y,
                     rounds: int = 30, block: int = 4) -> dict:
    """Median ms per `train_on_batch` step of each optimizer variant.

    One compiled model per variant (same seed), traced once, then `rounds`
    rounds of `block` steps each, the variants interleaved, so load from
    other processes hits every variant alike.
    """
    bs = config.batch_size
    nets = {}
    for name, optimizer_fn in variants.items():
        net = build_model(model, x, config) if not nets else _rebuild(model, x, config)
        net.compile(optimizer=optimizer_fn(), loss=keras.losses.MeanSquaredError())
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


def _rebuild(model: str, x, config: Config) -> keras.Model:
    """`build_model` without clearing the session (the others stay usable)."""
    keras.utils.set_random_seed(config.seed)
    if model == "deep dense":
        from gradguard.recipes.models import deep_dense

        return deep_dense(x.shape[1], depth=config.depth, width=config.width,
                          standardize=x)
    from gradguard.recipes.models import sequence_model

    cell = {"LSTM": "lstm", "SimpleRNN": "simple_rnn"}[model]
    return sequence_model(x.shape[1], x.shape[2], cell=cell, units=config.units)


def call_ms(fn, n: int = 50) -> float:
    """Median ms of `n` calls of `fn()`."""
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def main(argv=None) -> int:
    config = Config()
    n = (config.steps + 1) * config.batch_size
    adam = lambda: keras.optimizers.Adam(1e-3)  # noqa: E731
    variants = {
        "plain Adam": adam,
        "GradientMonitor (records, skips non-finite)": lambda: GradientMonitor(adam()),
        "GradientMonitor, skip_nonfinite=False": lambda: GradientMonitor(
            adam(), skip_nonfinite=False),
        "GradientMonitor + AutoClip percentile": lambda: GradientMonitor(
            adam(), autoclip_percentile=10.0, autoclip_history=1000),
    }
    print("1. Compiled step, no callbacks: ms per train_on_batch step "
          "(x plain Adam); variants interleaved in blocks of 4 steps, median")
    for model in config.models:
        x, y = make_data(model, n, config)
        ms = compiled_step_ms(model, variants, config, x, y)
        base = ms["plain Adam"]
        for name, value in ms.items():
            print(f"  {model:10s} {name:45s} {value:7.2f}  x{value / base:.3f}")

    print("2. Python hooks on a trained model (ms per call, median of 50)")
    for model in config.models:
        x, y = make_data(model, n, config)
        net = build_model(model, x, config)
        # Compiled in by hand, so the callbacks leave it in place after fit.
        net.compile(optimizer=GradientMonitor(keras.optimizers.Adam(1e-3)),
                    loss=keras.losses.MeanSquaredError())
        logger, guard = GradientNormLogger(), NaNGuard()
        net.fit(x, y, batch_size=config.batch_size, epochs=1, shuffle=False,
                verbose=0, callbacks=[logger, guard])
        monitor = find_monitor(net.optimizer)

        def fresh_read():
            monitor._last_read = None  # what the first reader of a step pays
            monitor.read()

        snapshot_state = lambda: [  # noqa: E731
            keras.ops.convert_to_numpy(v) for v in monitor.inner_optimizer.variables]

        def logger_step():
            monitor._last_read = None
            logger._last_index = monitor.read().count - 1
            monitor._last_read = None
            logger._collect()

        def guard_step():
            monitor._last_read = None
            guard._last_index = monitor.read().count - 1
            guard.on_train_batch_end(0, {"loss": 0.1})

        print(f"  {model}: {len(net.trainable_variables)} trainable variables, "
              f"{len(monitor.inner_optimizer.variables)} optimizer variables")
        for name, fn in [
            ("GradientMonitor.read() (ring buffer to numpy)", fresh_read),
            ("model.get_weights()", net.get_weights),
            ("optimizer state to numpy", snapshot_state),
            ("GradientNormLogger._collect() (1 new step)", logger_step),
            ("NaNGuard._take_snapshot()", guard._take_snapshot),
            ("NaNGuard.on_train_batch_end (1 new step)", guard_step),
        ]:
            print(f"    {name:48s} {call_ms(fn):7.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
