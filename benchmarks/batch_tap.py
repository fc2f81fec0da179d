"""What NaNGuard's batch tap costs a training step: tapped vs Keras' own step, interleaved.

NaNGuard keeps references to the last batches `fit` drew (`callbacks/batch_tap.py`)
so that an event can replay the failing step. The tap draws each batch
from Keras' iterator itself and calls Keras' step on that one batch. This
benchmark times whole one-epoch fits of a model with the tap alone (no
monitor, no guard) against the same model without it, in rounds whose
order alternates, and prints the median time per step and the ratio.

What you will see: on the TensorFlow backend, on CPU, the tapped step is
no slower; Keras' step on an iterator (the graph reads the next batch)
pays more per call than its step on a batch.

    python -m benchmarks.batch_tap            # about 2 minutes on 2 cores
    python -m benchmarks.batch_tap --quick
"""

from __future__ import annotations

import argparse
import time


def build_parser() -> argparse.ArgumentParser:
    """The command line (it needs no Keras: `--help` answers before Keras loads)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.batch_tap",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and rounds (a smoke run)")
    parser.add_argument("--rounds", type=int, default=7, help="timed fits per configuration (default 7)")
    return parser


from .program import begin  # noqa: E402

begin(__name__, build_parser)  # flags first as a program, then Keras, quietly

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from gradguard.callbacks.batch_tap import BatchTap  # noqa: E402

from .machine import machine_header  # noqa: E402
from .report import markdown  # noqa: E402
from gradguard.recipes.console import terminal  # noqa: E402


class TapOnly(keras.callbacks.Callback):
    """The tap as NaNGuard installs it, with nothing else."""

    def on_train_begin(self, logs=None):
        self.tap = BatchTap()
        self.on = self.tap.install(self.model)

    def on_train_end(self, logs=None):
        self.tap.remove()


def mlp() -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((32,))] + [keras.layers.Dense(64, activation="relu")
                                                     for _ in range(14)] + [keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    return model


def lstm() -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((100, 2)), keras.layers.LSTM(32), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    return model


MODELS = {"MLP 15 x Dense(64)": (mlp, (32,), 100), "LSTM(32), 100 steps": (lstm, (100, 2), 40)}


def time_model(name: str, rounds: int, steps: int, batch_size: int = 32) -> dict:
    build, shape, _ = MODELS[name]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(steps * batch_size, *shape)).astype("float32")
    y = rng.normal(size=(steps * batch_size, 1)).astype("float32")
    nets = {"plain": build(), "tapped": build()}
    tapped = TapOnly()
    for key, model in nets.items():  # untimed: the trace
        model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0,
                  callbacks=[tapped] if key == "tapped" else [])
    assert tapped.on, "the tap did not install"
    times = {key: [] for key in nets}
    for round_ in range(rounds):
        order = list(nets) if round_ % 2 else list(reversed(nets))
        for key in order:
            start = time.perf_counter()
            nets[key].fit(x, y, batch_size=batch_size, epochs=1, verbose=0,
                          callbacks=[TapOnly()] if key == "tapped" else [])
            times[key].append(time.perf_counter() - start)
    plain, tap = np.median(times["plain"]), np.median(times["tapped"])
    return {"model": name, "steps per fit": steps, "plain ms/step": 1e3 * plain / steps,
            "tapped ms/step": 1e3 * tap / steps, "ratio": tap / plain}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds {args.rounds}: expected an int >= 1.")
    rounds = 2 if args.quick else args.rounds
    print(machine_header(), flush=True)
    rows = [time_model(name, rounds, 8 if args.quick else steps)
            for name, (_, _, steps) in MODELS.items()]
    print(f"BatchTap alone vs Keras' own step, {rounds} interleaved rounds, median fit time per step:")
    print(terminal(markdown(pd.DataFrame(rows))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
