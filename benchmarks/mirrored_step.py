"""MirroredStrategy: the step-time cost of gradguard's all-reduce-then-clip path.

Under `tf.distribute.MirroredStrategy` the monitor all-reduces the gradients
itself, measures and clips them once, and hands each replica its share
(whose sum the inner optimizer's own all-reduce restores): one more
all-reduce per step than plain Keras. This times, on 2 logical CPU devices
(2 GPUs stand-in; set before TensorFlow starts, so run it as its own
process), the LSTM test model (adding problem, `seq_len` 100, global batch
64) under:

- plain `fit`, no clipping (the reference);
- plain `fit` with Keras' own `global_clipnorm=1` (clips per replica);
- `GradientClipping(global_clipnorm=1)` (gradguard: after the all-reduce);
- `GradientNormLogger()` every step.

Each run: a fresh model, one untimed step, then `steps` timed steps;
configurations round-robin, the order rotated each round; the ratio is to
plain fit in the same round, medians over rounds.

Run from the repository root:

    python -m benchmarks.mirrored_step            # about 3 minutes, 2 cores
    python -m benchmarks.mirrored_step --quick
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    """The command line (it needs no TensorFlow: `--help` answers before it loads)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.mirrored_step",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 steps, 1 round")
    return parser


from .program import begin  # noqa: E402

begin(__name__, build_parser)  # flags first as a program, then TensorFlow, quietly

import tensorflow as tf  # noqa: E402

if __name__ == "__main__":  # logical devices must be set before TF starts
    _cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        _cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )

import keras  # noqa: E402
import pandas as pd  # noqa: E402

from gradguard.callbacks import GradientClipping, GradientNormLogger  # noqa: E402
from gradguard.datasets import adding_problem  # noqa: E402
from gradguard.recipes.models import sequence_model  # noqa: E402

from .machine import machine_header  # noqa: E402
from gradguard.recipes.console import terminal  # noqa: E402
from .report import markdown  # noqa: E402
from .step_clock import StepClock  # noqa: E402
from .timing import spread  # noqa: E402

CONFIGS = {
    "plain fit": ({}, lambda: []),
    "Keras global_clipnorm=1 (per replica)": ({"global_clipnorm": 1.0}, lambda: []),
    "GradientClipping(global_clipnorm=1)": (
        {}, lambda: [GradientClipping(global_clipnorm=1.0)]
    ),
    "GradientNormLogger every step": ({}, lambda: [GradientNormLogger()]),
}


def time_run(strategy, name: str, x, y, steps: int) -> float:
    """Seconds per step of one fresh model under `strategy`."""
    compile_kwargs, callbacks = CONFIGS[name]
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = sequence_model(x.shape[1], x.shape[2], cell="lstm", units=32)
        model.compile(optimizer=keras.optimizers.Adam(1e-3, **compile_kwargs), loss="mse")
    clock = StepClock()
    model.fit(x[: (steps + 1) * 64], y[: (steps + 1) * 64], batch_size=64, epochs=1,
              shuffle=False, verbose=0, callbacks=callbacks() + [clock])
    return clock.seconds / clock.steps


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    steps, repeats = (8, 1) if args.quick else (32, 3)
    devices = tf.config.list_logical_devices("CPU")
    if len(devices) < 2:
        parser.error("needs 2 logical CPU devices: run it as "
                     "`python -m benchmarks.mirrored_step`, in its own process.")
    strategy = tf.distribute.MirroredStrategy([d.name for d in devices[:2]])
    n = (steps + 1) * 64
    x, y = adding_problem(n, 100, seed=0)
    x, y = x.astype("float32"), y.astype("float32").reshape(n, -1)
    print(machine_header(), flush=True)
    names, rows = list(CONFIGS), []
    for repeat in range(repeats):
        k = repeat % len(names)
        for name in names[k:] + names[:k]:
            seconds = time_run(strategy, name, x, y, steps)
            rows.append({"config": name, "repeat": repeat, "seconds": seconds})
            print(f"  round {repeat + 1}/{repeats} {name:40s} "
                  f"{1e3 * seconds:7.2f} ms/step", flush=True)
    raw = pd.DataFrame(rows)
    plain = raw[raw["config"] == "plain fit"].set_index("repeat")["seconds"]
    raw["ratio"] = raw["seconds"] / raw["repeat"].map(plain)
    table = pd.DataFrame([
        {"configuration": name, "ms/step": 1e3 * spread(runs["seconds"])[0],
         "ratio": spread(runs["ratio"])[0],
         "ratio min-max": "{:.3f}-{:.3f}".format(*spread(runs["ratio"])[1:])}
        for name, runs in raw.groupby("config", sort=False)
    ])
    print(f"MirroredStrategy on 2 logical CPU devices, {steps} timed steps, "
          f"{repeats} round(s):")
    print(terminal(markdown(table)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
