"""How long one examination by the doctor takes on a small model.

The issue's budget: one examination of a small model in at most 3 minutes
on 2 cores. Three set-ups, each a user's script with one fault, examined
with the defaults (`epochs=3`, `batch_size=32`, `max_trials=8`, stopping
at the first cure that learns):

- `healthy`: an MLP at a sound learning rate: one trial;
- `learning_rate`: the same MLP with SGD at 50x that rate;
- `input_scale`: the same MLP on inputs 1000x too large.

Data: 2048 rows of 16 features, a linear target (20% held out). The table
gives the wall time of the whole `examine` call (copies, every trial, the
judgment), the trials it trained and the per-trial times, with the load
average before and after: other processes on a shared machine are the
largest source of noise, so read the time beside the load.

Run from the repository root:

    python -m benchmarks.doctor            # about 1-2 minutes on 2 idle cores
    python -m benchmarks.doctor --quick    # the learning_rate set-up only
"""

from __future__ import annotations

import argparse
import os
import time

if __name__ == "__main__":  # run as a program: TensorFlow's start-up notes filtered out
    from gradguard.recipes.console import quiet_start

    quiet_start()
else:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from gradguard.benchmarks.machine import machine_header  # noqa: E402
from gradguard.recipes.doctor import examine  # noqa: E402
from gradguard.recipes.run_files import markdown_table  # noqa: E402

BUDGET_S = 180.0  # the target for one examination on 2 cores


def data(n: int = 2048, d: int = 16, *, seed: int = 0, scale: float = 1.0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype("float32")
    y = (x @ rng.normal(size=(d, 1)) / np.sqrt(d)).astype("float32")
    return x * np.float32(scale), y


def mlp(learning_rate: float, d: int = 16) -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((d,)), keras.layers.Dense(64, activation="relu"),
                              keras.layers.Dense(64, activation="relu"), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate), loss="mse")
    return model


SETUPS = {  # name -> (model, data)
    "healthy": lambda: (mlp(0.02), data()),
    "learning_rate": lambda: (mlp(1.0), data()),
    "input_scale": lambda: (mlp(0.02), data(scale=1000.0)),
}


def measure(name: str) -> dict:
    model, (x, y) = SETUPS[name]()
    load = os.getloadavg()[0]
    start = time.perf_counter()
    found = examine(model, x, y, verbose=False)
    wall = time.perf_counter() - start
    trained = found.trials[found.trials["note"] == ""]
    return {
        "set-up": name, "cause": found.cause, "cure": found.cure or "",
        "trials": len(trained), "examine_s": round(wall, 1),
        "trial_s": " ".join(f"{t:.1f}" for t in trained["wall_time_s"]),
        "val/trivial before": found.trials["val/trivial"].iloc[0],
        "val/trivial after": found.trials["val/trivial"].iloc[-1],
        "within 3 min": wall <= BUDGET_S,
        "load before": round(load, 2), "load after": round(os.getloadavg()[0], 2),
    }


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.doctor", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="the learning_rate set-up only")
    args = parser.parse_args(argv)
    names = ["learning_rate"] if args.quick else list(SETUPS)
    table = pd.DataFrame([measure(name) for name in names])
    print(machine_header())
    print()
    print(markdown_table(table))
    return table


if __name__ == "__main__":
    main()
