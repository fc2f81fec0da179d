"""What every entry point prints: start-up noise, line widths, `--help` time.

Runs each of the package's programs (the recipes, the doctor, every
benchmark) once, in its smallest configuration, as a user would from a
terminal (`TF_CPP_MIN_LOG_LEVEL` unset, stdout and stderr together), then
its `--help`, and reports per program:

- `noise`: lines among the first 15 that are TensorFlow/JAX/CUDA start-up
  notes or Python warnings (`recipes.console.STARTUP_NOISE`, `absl`,
  `cuInit`, `Warning:`);
- `widest` and `over_120`: the widest line and how many lines pass 120
  characters (a 120-column terminal wraps them);
- `help_s`: the wall time of `--help`.

Not run: `benchmarks.diagnosis_replay` (it reads a saved population run's
traces and tables; its console is `diagnosis`'s summary). Issue 32's targets are printed beside them as met / missed, never
asserted. A run that fails is reported with its exit status and last line.

Run from the repository root:

    python -m benchmarks.console_lines                 # every program, ~15 min on 2 cores
    python -m benchmarks.console_lines --only doctor   # programs whose name holds this
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
WIDTH = 120
# Beyond the start-up notes the recipes filter: any absl/CUDA/XLA mention and Python warnings.
NOISE = re.compile(r"absl|cuInit|cuda|Warning:|warnings\.warn|XLA|oneDNN", re.IGNORECASE)


def is_noise(line: str) -> bool:
    """A start-up note (`recipes.console.STARTUP_NOISE`) or a line `NOISE` finds."""
    from gradguard.recipes.console import STARTUP_NOISE

    return bool(STARTUP_NOISE.match(line) or NOISE.search(line))

# The doctor's input: a small compiled regression model and its data, saved by the checker itself.
DOCTOR_INPUT = """
import sys, numpy as np, keras
x = np.random.default_rng(0).normal(size=(256, 4)).astype("float32")
y = (x @ np.array([1.0, -2.0, 0.5, 3.0], dtype="float32"))[:, None]
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)])
model.compile(keras.optimizers.SGD(10.0), "mse")
model.save(sys.argv[1] + "/model.keras")
np.savez(sys.argv[1] + "/data.npz", x=x, y=y)
"""


def programs(work: pathlib.Path) -> list[tuple[str, list[str]]]:
    """Every entry point, with the arguments of its smallest run writing under `work`."""
    return [
        ("recipes.rnn_long_seq", ["--quick", "--cells", "simple_rnn", "--variants", "baseline", "global_clipnorm",
                                  "--out", str(work / "rnn")]),
        ("recipes.deep_dense", ["--quick", "--variants", "baseline", "global_clipnorm", "--out", str(work / "dd")]),
        ("recipes.cures_race", ["--quick", "--seeds", "1", "--methods", "baseline", "global_clipnorm", "rollback",
                               "--out", str(work / "race")]),
        ("recipes.linear_chain", ["--quick", "--out", str(work / "chain")]),
        ("recipes.doctor", ["--model", str(work / "model.keras"), "--data", str(work / "data.npz"),
                            "--max-trials", "2", "--epochs", "2", "--out", str(work / "doctor")]),
        ("benchmarks.batch_tap", ["--quick"]),
        ("benchmarks.callback_overhead", ["--quick", "--out", str(work / "overhead.md")]),
        ("benchmarks.callback_profile", ["--hooks-only"]),
        ("benchmarks.diagnosis", ["--limit", "2", "--traces", str(work / "traces")]),
        ("benchmarks.diagnosis_scripts", ["--only", "boston_regression", "--breaks", "lr_x100"]),
        ("benchmarks.doctor", ["--limit", "1", "--no-baseline", "--csv", str(work / "doctor.csv")]),
        ("benchmarks.gpu_recipe", ["--recipe", "deep_dense", "--backend", "tensorflow", "--quick",
                                   "--out", str(work / "gpu_recipe")]),
        ("benchmarks.long_run", ["--quick"]),
        ("benchmarks.mirrored_step", ["--quick"]),
        ("benchmarks.monitor_step", ["--rounds", "1", "--min-seconds", "0.3", "--no-jit"]),
        ("benchmarks.recurrent_gain_twins", ["--out", str(work / "twins.md")]),
        ("benchmarks.repeated_fit", ["--quick", "--repeats", "1"]),
        ("benchmarks.autotrainer_demos", ["--cases", "Improper_Activation_case", "--max-seconds", "30"]),
        ("benchmarks.replay_cost", ["--only", "boston_regression", "--breaks", "lr_x1000"]),
        ("benchmarks.console_lines", ["--help"]),
    ]


def build_parser() -> argparse.ArgumentParser:
    """The command line (it needs no Keras)."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.console_lines",
        description="Run every entry point once, small, and report its console: noise, widths, --help time.")
    parser.add_argument("--only", default=None, help="run only the programs whose name holds this text")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per program (default 900)")
    return parser


def run(module: str, argv: list[str], timeout: float) -> dict:
    """Runs `python -m module argv` as a user would; returns its console's measures."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["COLUMNS"] = str(WIDTH)
    start = time.perf_counter()
    try:
        out = subprocess.run([sys.executable, "-m", module, *argv], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, timeout=timeout)
        text, code = out.stdout, out.returncode
    except subprocess.TimeoutExpired as stop:
        text, code = (stop.stdout or b"").decode(errors="replace") if isinstance(stop.stdout, bytes) else (
            stop.stdout or ""), "timeout"
    seconds = time.perf_counter() - start
    lines = text.splitlines()
    helped = time.perf_counter()
    subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, env=env, capture_output=True, timeout=60)
    help_s = time.perf_counter() - helped
    return {
        "program": module, "exit": code, "run_s": round(seconds, 1), "lines": len(lines),
        "noise": sum(map(is_noise, lines[:15])),
        "widest": max(map(len, lines), default=0), "over_120": sum(len(line) > WIDTH for line in lines),
        "help_s": round(help_s, 2), "text": text,
    }


def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="console_lines-") as folder:
        work = pathlib.Path(folder)
        subprocess.run([sys.executable, "-c", DOCTOR_INPUT, str(work)], cwd=ROOT, check=True,
                       capture_output=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        rows = []
        for module, argv in programs(work):
            if args.only and args.only not in module:
                continue
            row = run(module, argv, args.timeout)
            rows.append(row)
            verdict = "met" if row["noise"] == 0 and row["over_120"] == 0 and row["help_s"] < 3 else "missed"
            print(f"{module:32} exit {row['exit']!s:7} {row['run_s']:7.1f} s  {row['lines']:4} lines  "
                  f"noise {row['noise']}  widest {row['widest']:4}  over 120: {row['over_120']:3}  "
                  f"--help {row['help_s']:.2f} s  {verdict}", flush=True)
            for line in row["text"].splitlines():
                if len(line) > WIDTH:
                    print(f"    {len(line)}: {line[:100]}...")
            for line in row["text"].splitlines()[:15]:
                if is_noise(line):
                    print(f"    noise: {line[:100]}")
            if row["exit"] != 0:
                print(f"    last line: {row['text'].splitlines()[-1][:110] if row['text'] else ''}")
        met = sum(r["noise"] == 0 and r["over_120"] == 0 and r["help_s"] < 3 and r["exit"] == 0 for r in rows)
        print(f"{met} of {len(rows)} programs: no noise in the first 15 lines, no line over {WIDTH}, "
              "--help under 3 s, exit 0")


if __name__ == "__main__":
    main(build_parser().parse_args())
