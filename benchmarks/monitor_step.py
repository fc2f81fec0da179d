"""What the compiled-in `GradientMonitor` costs per step, against Keras' own norm.

A 14 x Dense(64) MLP (30 variables) at batch 128, compiled three ways:
plain Adam, Adam with `global_clipnorm=1e9` (Keras computes the global norm
every step and clips nothing: the floor the monitor aims at) and
`GradientMonitor(Adam())` with no callbacks. Each configuration gets its
own model, one warm-up fit, then `rounds` timed fits of the same number of
steps (at least `min_seconds` each), in rotating order within a round.
Each fit's wall time (`time.perf_counter`) and CPU time
(`time.process_time`) is divided by plain Adam's in the same round; the
table gives the median ratio and its min-max over rounds.

    python -m benchmarks.monitor_step            # jit_compile off and on
    python -m benchmarks.monitor_step --no-jit   # off only
"""

from __future__ import annotations

import argparse
import os
import time

def build_parser() -> argparse.ArgumentParser:
    """The command line (it needs no Keras: `--help` answers before Keras loads)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.monitor_step",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds")
    parser.add_argument("--min-seconds", type=float, default=3.0,
                        help="least duration of one timed fit")
    parser.add_argument("--no-jit", action="store_true", help="skip jit_compile=True")
    return parser


from .program import begin  # noqa: E402

begin(__name__, build_parser, log_level="3")  # flags first as a program, then Keras, quietly

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from gradguard.recipes.console import terminal  # noqa: E402

from gradguard.callbacks import GradientMonitor  # noqa: E402

DEPTH, WIDTH, FEATURES, BATCH = 14, 64, 32, 128

CONFIGS = {
    "Adam": lambda: keras.optimizers.Adam(1e-4),
    "Adam(global_clipnorm=1e9)": lambda: keras.optimizers.Adam(1e-4, global_clipnorm=1e9),
    "GradientMonitor(Adam)": lambda: GradientMonitor(keras.optimizers.Adam(1e-4)),
}


def build(optimizer, jit: bool) -> keras.Model:
    keras.utils.set_random_seed(0)
    layers = [keras.Input((FEATURES,))]
    layers += [keras.layers.Dense(WIDTH, activation="relu") for _ in range(DEPTH)]
    model = keras.Sequential(layers + [keras.layers.Dense(1)])
    model.compile(optimizer=optimizer, loss="mse", jit_compile=jit)
    return model


def timed_fit(model, x, y) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    return time.perf_counter() - wall, time.process_time() - cpu


def run(jit: bool, rounds: int, min_seconds: float, log=print) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    probe = rng.normal(size=(300 * BATCH, FEATURES)).astype("float32")
    models = {name: build(make(), jit) for name, make in CONFIGS.items()}
    for model in models.values():  # trace
        timed_fit(model, probe, probe[:, :1])
    per_step = min(timed_fit(models["Adam"], probe, probe[:, :1])[0]
                   for _ in range(2)) / 300
    steps = int(np.ceil(1.3 * min_seconds / per_step))
    x = rng.normal(size=(steps * BATCH, FEATURES)).astype("float32")
    y = x[:, :1] * 0.5
    for model in models.values():  # the warm-up fit, on the timed data
        timed_fit(model, x, y)
    log(f"jit_compile={jit}: {steps} steps a fit ({per_step * 1e3:.2f} ms a step in the probe)")
    names = list(models)
    times = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            times[name].append(timed_fit(models[name], x, y))
        log(f"  round {r + 1}: " + ", ".join(
            f"{n} {times[n][-1][0]:.2f}s" for n in names))
    rows = []
    base = np.array(times["Adam"])
    for name in names:
        t = np.array(times[name])
        wall, cpu = t[:, 0] / base[:, 0], t[:, 1] / base[:, 1]
        rows.append({
            "jit_compile": jit, "optimizer": name,
            "ms/step": 1e3 * np.median(t[:, 0]) / steps,
            "wall ratio": np.median(wall),
            "wall min-max": f"{wall.min():.3f}-{wall.max():.3f}",
            "cpu ratio": np.median(cpu),
            "cpu min-max": f"{cpu.min():.3f}-{cpu.max():.3f}",
        })
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    load = os.getloadavg()
    frames = [run(False, args.rounds, args.min_seconds)]
    if not args.no_jit:
        frames.append(run(True, args.rounds, args.min_seconds))
    table = pd.concat(frames, ignore_index=True)
    print(terminal(table.to_markdown(index=False, floatfmt=".3f")))
    print(f"load average at start {load[0]:.2f}, at end {os.getloadavg()[0]:.2f} "
          f"({os.cpu_count()} CPUs); keras {keras.__version__}, backend "
          f"{keras.backend.backend()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
