"""Long runs: memory growth, time per step and event-file bytes of the logger.

A logger left on for a week must cost nothing that grows with the run. Each
configuration trains the same small deep MLP (20 Dense(8) layers, batch 8)
for `steps` steps in a process of its own (so resident memory is its own),
recording the resident set size (RSS) every 1000 steps:

- plain `fit`;
- `GradientNormLogger()` every step, per layer;
- `GradientNormLogger(log_dir=...)` every step, per layer, TensorBoard on;
- `GradientNormLogger(every_n_steps=50, log_dir=...)`.

Reported: RSS growth in MiB per 1000 steps (least-squares slope after the
first 1000 steps), ms per step (the same window), its ratio to plain `fit`,
and the event-file bytes per step. Configurations run one after another,
`repeats` rounds; the table gives medians.

Run from the repository root:

    python -m benchmarks.long_run            # about 5 minutes, 2 cores
    python -m benchmarks.long_run --quick    # about a minute
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np
import pandas as pd
from gradguard.recipes.console import terminal

CONFIGS = (
    "plain fit",
    "logger every step",
    "logger every step, log_dir",
    "logger every 50 steps, log_dir",
)
SAMPLE_EVERY = 1000  # steps between RSS samples


def rss_mib() -> float:
    """Resident set size of this process, MiB (Linux /proc)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(config: str, steps: int, log_dir: str) -> dict:
    """Trains in this process and returns its measurements."""
    import keras

    from gradguard.callbacks import GradientNormLogger

    class Sampler(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.step, self.samples = 0, []

        def on_train_batch_end(self, batch, logs=None):
            self.step += 1
            if self.step % SAMPLE_EVERY == 0:
                self.samples.append((self.step, time.perf_counter(), rss_mib()))

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8 * SAMPLE_EVERY, 16)).astype("float32")
    y = x[:, :1] + 0.1 * rng.normal(size=(8 * SAMPLE_EVERY, 1)).astype("float32")
    model = keras.Sequential(
        [keras.Input((16,))]
        + [keras.layers.Dense(8, activation="relu") for _ in range(20)]
        + [keras.layers.Dense(1)]
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    callbacks = {
        "plain fit": [],
        "logger every step": [GradientNormLogger()],
        "logger every step, log_dir": [GradientNormLogger(log_dir=log_dir)],
        "logger every 50 steps, log_dir": [
            GradientNormLogger(every_n_steps=50, log_dir=log_dir)
        ],
    }[config]
    sampler = Sampler()
    model.fit(x, y, batch_size=8, epochs=steps // SAMPLE_EVERY, shuffle=False,
              verbose=0, callbacks=callbacks + [sampler])
    step, seconds, rss = (np.array(c, dtype=float) for c in zip(*sampler.samples))
    events = sum(p.stat().st_size for p in pathlib.Path(log_dir).glob("**/events.*"))
    return {
        "mib_per_1000": float(np.polyfit(step[1:], rss[1:], 1)[0] * 1000),
        "ms_per_step": float(1e3 * (seconds[-1] - seconds[0]) / (step[-1] - step[0])),
        "event_bytes_per_step": events / steps,
        "rss_end_mib": float(rss[-1]),
    }


def run(steps: int, repeats: int, log=print) -> pd.DataFrame:
    """One child process per configuration and round; one row each."""
    module = __spec__.name if __spec__ else "benchmarks.long_run"
    rows = []
    for repeat in range(repeats):
        for config in CONFIGS:
            with tempfile.TemporaryDirectory(prefix="gg_long_") as log_dir:
                done = subprocess.run(
                    [sys.executable, "-m", module, "--child", config,
                     "--steps", str(steps), "--log-dir", log_dir],
                    capture_output=True, text=True, check=False,
                )
            if done.returncode != 0:
                raise RuntimeError(f"{config}: {done.stderr[-2000:]}")
            row = json.loads(done.stdout.strip().splitlines()[-1])
            row.update(config=config, repeat=repeat)
            rows.append(row)
            log(f"  round {repeat + 1}/{repeats} {config:32s} "
                f"{row['ms_per_step']:6.2f} ms/step, "
                f"{row['mib_per_1000']:+7.2f} MiB/1000 steps, "
                f"{row['event_bytes_per_step']:7.0f} event B/step")
    return pd.DataFrame(rows)


def summary_table(raw: pd.DataFrame) -> pd.DataFrame:
    """Medians per configuration, with the time ratio to plain fit."""
    med = raw.groupby("config", sort=False).median(numeric_only=True)
    plain = med.loc["plain fit", "ms_per_step"]
    return pd.DataFrame({
        "configuration": med.index,
        "ms/step": med["ms_per_step"].to_numpy(),
        "ratio": (med["ms_per_step"] / plain).to_numpy(),
        "RSS growth MiB/1000 steps": med["mib_per_1000"].to_numpy(),
        "RSS at end MiB": med["rss_end_mib"].to_numpy(),
        "event bytes/step": med["event_bytes_per_step"].to_numpy(),
    })


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.long_run",
        description="Memory growth and cost of the logger over long runs.")
    parser.add_argument("--quick", action="store_true", help="3000 steps, 1 round")
    parser.add_argument("--steps", type=int, default=None,
                        help="steps per run, a multiple of 1000 (default 8000)")
    parser.add_argument("--repeats", type=int, default=None, help="rounds (default 2)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--log-dir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    steps = args.steps or (3000 if args.quick else 8000)
    if steps < 3 * SAMPLE_EVERY or steps % SAMPLE_EVERY:
        parser.error(f"--steps {steps}: expected a multiple of {SAMPLE_EVERY} "
                     f">= {3 * SAMPLE_EVERY}.")
    if args.child is not None:  # its stderr is read only when it fails
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        print(json.dumps(child(args.child, steps, args.log_dir)))
        return 0
    from gradguard.recipes.console import quiet_start

    quiet_start()  # the header names Keras' version: the backend loads here, quietly
    from .machine import machine_header
    from .report import markdown

    print(machine_header(), flush=True)
    repeats = args.repeats or (1 if args.quick else 2)
    table = summary_table(run(steps, repeats, log=lambda s: print(s, flush=True)))
    print(f"{steps} steps per run, {repeats} round(s), medians:")
    print(terminal(markdown(table)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
