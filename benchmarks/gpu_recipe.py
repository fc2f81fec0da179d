"""The default recipe on the GPU and on the CPU: time per row, and the same verdicts.

One prepared command for a machine with a GPU (a few minutes):

    KERAS_BACKEND=jax python -m benchmarks.gpu_recipe

It runs `python -m recipes.rnn_long_seq` (or `--recipe deep_dense`) twice in
fresh processes under the same Keras backend (default `jax`: the GPU
machines this project borrows have JAX and PyTorch with CUDA, no
TensorFlow): once as the backend finds the machine (the GPU), once with the
GPU hidden (`JAX_PLATFORMS=cpu`, `CUDA_VISIBLE_DEVICES=`). Both runs set
their backend's deterministic mode (`XLA_FLAGS=--xla_gpu_deterministic_ops=true`,
`CUBLAS_WORKSPACE_CONFIG=:4096:8`; the recipe does the rest).

It prints one Markdown table, a line per row (variant x cell x seed): the
device and recurrent kernel of each run (`cuDNN`, `fused` or `generic`, from
the recipe's `kernel` column), each run's `val/trivial`, exploded step and
wall time, the speed-up, and whether the two runs reach the same verdict
(exploded or not, learned or not). Numbers may differ (GPU kernels sum in
another order); verdicts should not. Exit code 0 when every row agrees, 1
when one does not, 2 when a run produced no table.

Each run gets `--timeout` seconds (default 270, so the command stays under
ten minutes); the recipe appends every finished row to `results.csv`, so a
run cut short still gives the rows it finished, and the table compares
those (the rows only one run finished are listed as missing).

    python -m benchmarks.gpu_recipe --quick      # the recipe's --quick: a smoke run
    python -m benchmarks.gpu_recipe --recipe deep_dense --backend torch
"""

from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import pandas as pd

from gradguard.recipes.run_files import markdown_table
from gradguard.recipes.console import terminal

ROOT = pathlib.Path(__file__).resolve().parent.parent
RECIPES = ("rnn_long_seq", "deep_dense")
BACKENDS = ("jax", "torch", "tensorflow")
KEYS = ["variant", "cell", "seed"]


def run_env(backend: str, *, hide_gpu: bool, base: dict | None = None) -> dict:
    """The environment of one recipe run: backend, determinism, GPU shown or hidden.

    Args:
        backend: `"jax"`, `"torch"` or `"tensorflow"`.
        hide_gpu: True for the CPU run: `CUDA_VISIBLE_DEVICES=` (every
            backend) and `JAX_PLATFORMS=cpu`.
        base: The environment to start from. Defaults to `os.environ`.

    Returns:
        A new dict.
    """
    env = dict(os.environ if base is None else base, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    flags = env.get("XLA_FLAGS", "")
    if "xla_gpu_deterministic_ops" not in flags:
        env["XLA_FLAGS"] = f"{flags} --xla_gpu_deterministic_ops=true".strip()
    env.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if hide_gpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
        env["JAX_PLATFORMS"] = "cpu"
    else:
        env.pop("JAX_PLATFORMS", None)
    return env


def verdicts(table: pd.DataFrame) -> pd.DataFrame:
    """One line per row: `exploded` and `learned` as booleans, keyed by variant, cell, seed."""
    out = table[KEYS].copy()
    out["exploded"] = table["exploded_step"].notna().to_numpy()
    out["learned"] = table["learned"].astype(str).str.lower().eq("true").to_numpy()
    return out


def compare_runs(gpu: pd.DataFrame, cpu: pd.DataFrame) -> pd.DataFrame:
    """The two runs' `results.csv` side by side, one line per row either run finished.

    Args:
        gpu: The first run's table (the GPU run).
        cpu: The second run's table (GPU hidden).

    Returns:
        Columns `variant`, `cell`, `seed`, then per run (`gpu`, `cpu`):
        `device`, `kernel`, `val/trivial`, `exploded`, `wall_s`; then
        `speedup` (cpu wall over gpu wall) and `agree` (same exploded and
        learned verdicts; `missing` where one run did not finish the row).
    """
    sides = []
    for name, table in (("gpu", gpu), ("cpu", cpu)):
        side = verdicts(table)
        side["device"] = table["device"].to_numpy()
        kernel = table["kernel"] if "kernel" in table else pd.Series([None] * len(table))
        side["kernel"] = kernel.astype(object).where(kernel.notna(), "").to_numpy()  # all-NaN reads float
        side["val/trivial"] = table["val/trivial"].to_numpy()
        side["exploded_step"] = table["exploded_step"].to_numpy()
        side["wall_s"] = table["wall_time_s"].to_numpy()
        sides.append(side.set_index(KEYS).add_prefix(f"{name} "))
    both = sides[0].join(sides[1], how="outer")
    order = list(dict.fromkeys([*sides[0].index, *sides[1].index]))  # the recipe's row order
    both = both.loc[order]
    same = ((both["gpu exploded"] == both["cpu exploded"])
            & (both["gpu learned"] == both["cpu learned"]))
    missing = both["gpu exploded"].isna() | both["cpu exploded"].isna()
    both["agree"] = ["missing" if m else ("yes" if s else "NO") for m, s in zip(missing, same)]
    both["speedup"] = both["cpu wall_s"] / both["gpu wall_s"]
    columns = [f"{s} {c}" for s in ("gpu", "cpu")
               for c in ("device", "kernel", "val/trivial", "exploded_step", "wall_s")]
    return both[columns + ["speedup", "agree"]].reset_index()


def run_recipe(recipe: str, out: pathlib.Path, env: dict, *, quick: bool, timeout: float) -> tuple[float, bool]:
    """Runs `python -m recipes.<recipe> --out OUT` in a fresh process.

    Returns:
        `(seconds, finished)`: wall time of the process, and False when it
        ran past `timeout` (its finished rows stay in `OUT/results.csv`).
    """
    command = [sys.executable, "-m", f"recipes.{recipe}", "--out", str(out), *(["--quick"] if quick else [])]
    start = time.perf_counter()
    try:
        subprocess.run(command, cwd=ROOT, env=env, check=True, timeout=timeout,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        finished = True
    except subprocess.TimeoutExpired:
        finished = False
    except subprocess.CalledProcessError as error:
        print(f"{' '.join(command)} failed (exit {error.returncode}):\n{error.stderr[-3000:]}", file=sys.stderr)
        finished = False
    return time.perf_counter() - start, finished


def report(comparison: pd.DataFrame, times: dict, header: str) -> str:
    """The Markdown text printed at the end: header, table, totals, verdict line."""
    shown = comparison.copy()
    for column in ("gpu val/trivial", "cpu val/trivial"):
        shown[column] = shown[column].map(lambda v: f"{v:.4g}")
    shown["speedup"] = shown["speedup"].map(lambda v: f"{v:.2f}x")
    for column in ("gpu exploded_step", "cpu exploded_step"):
        shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else str(int(v)))
    disagree = comparison[comparison["agree"] == "NO"]
    lines = [header, "", markdown_table(shown).rstrip(), ""]
    for name, (seconds, finished) in times.items():
        lines.append(f"- {name} run: {seconds:.0f} s{'' if finished else ' (cut short by --timeout or failed)'}")
    rows = len(comparison) - int((comparison["agree"] == "missing").sum())
    lines.append(f"- verdicts (exploded, learned): {'the same' if disagree.empty else 'DIFFERENT'} "
                 f"in {rows - len(disagree)} of {rows} rows both runs finished"
                 + ("" if disagree.empty else ": " + ", ".join(
                     f"{r.variant}/{r.cell}/seed{r.seed}" for r in disagree.itertuples())))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_recipe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", choices=RECIPES, default="rnn_long_seq", help="recipe to run (default rnn_long_seq)")
    parser.add_argument("--backend", choices=BACKENDS, default=os.environ.get("KERAS_BACKEND", "jax")
                        if os.environ.get("KERAS_BACKEND") in BACKENDS else "jax",
                        help="Keras backend of both runs (default: $KERAS_BACKEND, else jax)")
    parser.add_argument("--quick", action="store_true", help="pass --quick to the recipe (smoke run)")
    parser.add_argument("--timeout", type=float, default=270.0, help="seconds per run (default 270)")
    parser.add_argument("--out", default=None, help="folder for the two runs (default: a new temporary folder)")
    args = parser.parse_args(argv)
    if args.timeout <= 0:
        parser.error(f"--timeout received {args.timeout}; expected a number of seconds > 0.")
    out = pathlib.Path(args.out) if args.out else pathlib.Path(tempfile.mkdtemp(prefix="gpu_recipe-"))
    if out.exists() and any(out.iterdir()):
        parser.error(f"--out received {str(out)!r}, which is not empty; pass a new or empty folder.")
    times, tables = {}, {}
    for name, hide in (("gpu", False), ("cpu", True)):
        print(f"[gpu_recipe] {args.recipe}{' --quick' * args.quick} under {args.backend}, "
              f"{'GPU hidden' if hide else 'as found'}: {out / name}", flush=True)
        times[name] = run_recipe(args.recipe, out / name, run_env(args.backend, hide_gpu=hide),
                                 quick=args.quick, timeout=args.timeout)
        csv = out / name / "results.csv"
        if not csv.exists():
            print(f"[gpu_recipe] the {name} run wrote no results.csv; nothing to compare.", file=sys.stderr)
            return 2
        tables[name] = pd.read_csv(csv)
    comparison = compare_runs(tables["gpu"], tables["cpu"])
    if not (tables["gpu"]["device"] != "CPU").any():
        print("[gpu_recipe] note: the first run saw no GPU (device CPU); both columns are CPU runs.")
    header = (f"{args.recipe}{' --quick' * args.quick}, KERAS_BACKEND={args.backend}; "
              f"cores: {os.cpu_count()}; runs in {out}")
    print(terminal(report(comparison, times, header)))
    return 1 if (comparison["agree"] == "NO").any() else 0


if __name__ == "__main__":
    sys.exit(main())
