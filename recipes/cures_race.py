"""
Title: The cures race: every clipping mode and guard action on the same broken set-ups
Description: Train three set-ups that go wrong (a SimpleRNN whose gradient
explodes through time, a deep MLP fed poorly scaled inputs, a small
attention model at a high learning rate without warm-up) once per method
and seed, and rank the methods by the model each one leaves.

Methods (`--methods`, each a `variants.py` variant): `baseline` (nothing;
the recipe's `NaNGuard` stops the row at an explosion), Keras' `clipnorm`
(1.0), `clipvalue` (0.5) and `global_clipnorm` (1.0), `autoclip` (10th
percentile), `agc` (`AGC(clipping=0.01)`), `zclip` (`ZClip(z_threshold=2.5)`),
and the guard actions `rollback` (restore the snapshot before the onset,
halve the learning rate, go on), `rollback_skip` (the same, then skip the
next 10 batches, as PaLM does) and `rollback_reset` (the same, then reset
the optimizer's moments, as SPAM does). Every threshold is the paper's or
Keras' usual one, the same in every set-up: the race asks what works out
of the box.

The set-ups (`--setups`):

- `rnn_long_seq`: SimpleRNN(32) on the adding problem, 100 steps, plain SGD
  at lr 0.1 (the norm grows to 1e5 and beyond within ~10 steps);
- `deep_dense`: 20 x 64 ReLU MLP on 8 features scaled 1e-3..1e4, SGD at
  lr 0.01 (non-finite in 4 steps);
- `attention`: a 2-block post-LayerNorm Transformer encoder (d_model 32)
  on the adding problem, 40 steps, Adam at lr 0.01 with no warm-up (the
  norm spikes to ~100 in the first steps and the model never learns; at
  lr 1e-3 it does).

What you will see: each set-up's rows as `rnn_long_seq` prints them, then
one race table (`race.md`, `race.csv`): per set-up and method, the
explosion rate (seeds with a non-finite gradient or a NaNGuard event: a
spike 1000x the running median), the rate of rows stopped early, and
`val/trivial` (validation loss over the constant prediction's) as mean and
min..max over seeds, and a verdict against `baseline` that calls a
difference real only when it exceeds the seed spread (`analysis.compare`).
Each set-up's folder (`<out>/<setup>/`) holds its rows, `results.csv`,
`results.md`, plots and TensorBoard runs, and is resumable
(`--resume <out>`).

Run it with `python -m recipes.cures_race --seeds 3` (about 25 minutes on
2 shared CPU cores with the defaults; `--quick` for a smoke run).

References:
    - Brock et al., "High-Performance Large-Scale Image Recognition Without
      Normalization" (AGC), ICML 2021.
    - Kumar et al., "ZClip: Adaptive Spike Mitigation for LLM
      Pre-Training", 2025.
    - Huang et al., "SPAM: Spike-Aware Adam with Momentum Reset", ICLR 2025.
    - Chowdhery et al., "PaLM: Scaling Language Modeling with Pathways",
      2022 (section 5.1, loss spikes).
    - Seetharaman et al., "AutoClip", MLSP 2020; Pascanu et al., ICML 2013.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
from dataclasses import field

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from gradguard.datasets import ADDING_PROBLEM_BASELINE_MSE, adding_problem, poorly_scaled_regression

from .common import device_name, write_config
from .console import WIDTH, wrap
from .report import plot_report, run_main, write_report
from .run_files import markdown_table, write_atomic
from .sweep import RunConfig
from .variants import Row, clip_callbacks

if TYPE_CHECKING:
    from .experiment import Setup

# Keras (and so TensorFlow) loads inside the functions that train, not at
# import: `--help` and a bad flag answer at once, and `run_main` loads the
# backend quietly (`console.quiet_start`).

NAME = "cures_race"
METHODS = ("baseline", "clipnorm", "clipvalue", "global_clipnorm", "autoclip", "agc", "zclip",
           "rollback", "rollback_skip", "rollback_reset")
SETUPS = ("rnn_long_seq", "deep_dense", "attention")
# Each set-up's optimizer and learning rate: the step size that breaks it.
BROKEN = {"rnn_long_seq": ("sgd", 0.1), "deep_dense": ("sgd", 0.01), "attention": ("adam", 0.01)}
# The threshold of each clipping mode, the same in every set-up.
THRESHOLDS = {"clipnorm": 1.0, "clipvalue": 0.5, "global_clipnorm": 1.0, "autoclip": 10.0,
              "agc": 0.01, "zclip": 2.5}


# ---------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Config(RunConfig):
    """Settings of the cures race."""

    NAME = NAME
    QUICK_SIZES = (128, 64)  # 128 training and 64 validation examples, 1 epoch

    # Training examples per set-up: 32 steps per epoch at batch 32.
    n_train: int = field(default=1024, metadata={"help": "training examples per set-up"})
    # Validation examples.
    n_val: int = field(default=256, metadata={"help": "validation examples"})
    # Epochs per row.
    epochs: int = field(default=3, metadata={"help": "epochs per row"})
    # Mini-batch size (deep_dense uses twice this).
    batch_size: int = field(default=32, metadata={"help": "mini-batch size"})
    # Rows per method and set-up, seeds seed, seed + 1, ...
    seeds: int = field(default=3, metadata={"help": "seeds per method and set-up (spread)"})
    # Methods to race (variants of variants.py; baseline first: the reference).
    methods: tuple[str, ...] = field(default=METHODS, metadata={"help": "methods to race"})
    # Broken set-ups to race them on.
    setups: tuple[str, ...] = field(default=SETUPS, metadata={"help": (
        "set-ups: rnn_long_seq, deep_dense, attention")})

    def validate(self) -> str | None:
        """Returns what is wrong with the settings, or None."""
        for name in self.setups:
            if name not in SETUPS:
                return f"--setups received {name!r}; expected some of {', '.join(SETUPS)}."
        try:
            self.rows(self.setups[0])  # every method parsed
        except ValueError as error:  # Variant.parse names the flag of the recipes: --variants
            return str(error).replace("--variants received", "--methods received", 1)
        return super().validate()

    def rows(self, setup: str) -> list[Row]:
        """Every method x seed of one set-up."""
        return [Row(m, setup, self.seed + i) for m in self.methods for i in range(self.seeds)]


# ---------------------------------------------------------------------------
# Data and models
# ---------------------------------------------------------------------------


def make_data(name: str, config: Config):
    """`(x_train, y_train, x_val, y_val, trivial_mse)` of a set-up."""
    n_train, n_val, _ = config.sizes
    if name == "deep_dense":
        x, y = poorly_scaled_regression(n_train + n_val, 8, seed=config.seed)
        trivial = float(np.mean((y[n_train:] - y[:n_train].mean()) ** 2))
        return x[:n_train], y[:n_train], x[n_train:], y[n_train:], trivial
    seq_len = 100 if name == "rnn_long_seq" else 40
    x, y = adding_problem(n_train, seq_len, seed=config.seed)
    x_val, y_val = adding_problem(n_val, seq_len, seed=config.seed + 1)
    return x, y, x_val, y_val, ADDING_PROBLEM_BASELINE_MSE


def setup(row: Row) -> Setup:
    """One row: the set-up's model at its breaking lr, with the method's callbacks and guard."""
    from .experiment import Setup
    from .models import attention_regressor, deep_dense, sequence_model

    variant = row.spec
    optimizer, lr = BROKEN[row.cell]
    build = {
        "rnn_long_seq": lambda: sequence_model(100, 2, cell="simple_rnn", units=32),
        "deep_dense": lambda: deep_dense(8, depth=20, width=64),
        "attention": lambda: attention_regressor(40, 2),
    }[row.cell]
    return Setup(build=build, optimizer=optimizer, learning_rate=lr,
                 callbacks=clip_callbacks(variant.clip, THRESHOLDS.get(variant.clip)),
                 guard=variant.guard, model=row.cell)


# ---------------------------------------------------------------------------
# Run and report
# ---------------------------------------------------------------------------


def race_table(table: pd.DataFrame, epochs: int) -> pd.DataFrame:
    """One line per set-up and method: explosion and stop rates, val/trivial, verdict."""
    from .analysis import compare, exploded

    lines = []
    for (cell, method), g in table.groupby(["cell", "variant"], sort=False):
        ratios = g["val/trivial"].to_numpy(np.float64)
        base = table[(table["cell"] == cell) & (table["variant"] == "baseline")]
        verdict = ""
        if method != "baseline" and len(base):
            off = base["val/trivial"].to_numpy(np.float64)
            with np.errstate(invalid="ignore"):  # inf - inf: an overflowed loss
                diff, spread, real = compare(ratios, off)
            if not math.isfinite(diff):
                verdict = "not comparable (non-finite loss)"
            elif real is None:
                verdict = f"{diff:+.3g} (spread unknown)"
            else:
                verdict = (f"{'better' if diff < 0 else 'worse'} ({diff:+.3g} > spread {spread:.3g})"
                           if real else f"same ({diff:+.3g} within spread {spread:.3g})")
        n = len(g)
        lines.append({
            "setup": cell, "method": method, "seeds": n,
            "explosion_rate": f"{sum(exploded(r) for _, r in g.iterrows())}/{n}",
            "stopped": f"{int((g['epochs_run'].astype(int) < epochs).sum())}/{n}",
            # A loss that overflowed while every gradient stayed finite (clipped):
            # no explosion of the gradient, but no model either.
            "diverged": f"{int((~np.isfinite(ratios)).sum())}/{n}",
            "val/trivial": float(np.mean(ratios)),
            "val/trivial_min": float(np.min(ratios)), "val/trivial_max": float(np.max(ratios)),
            "learned": f"{int(g['learned'].sum())}/{n}",
            "vs_baseline": verdict,
        })
    return pd.DataFrame(lines)


def run(config: Config, out_dir: str | pathlib.Path) -> pd.DataFrame:
    """Trains every set-up's rows (each in `out_dir/<setup>/`) and writes the race table."""
    import keras

    from .experiment import Experiment

    out_dir = pathlib.Path(out_dir)
    if not config.resume:
        write_config(config, out_dir)
    device, backend = device_name(), keras.backend.backend()
    _, _, epochs = config.sizes
    tables = []
    for name in config.setups:
        *data, trivial = make_data(name, config)
        rows = config.rows(name)
        optimizer, lr = BROKEN[name]
        print(f"[{NAME}] {name}: {len(data[0])} examples, {optimizer} lr {lr:g}, {len(rows)} rows; "
              f"{backend} on {device}")
        folder = out_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        batch = config.batch_size * (2 if name == "deep_dense" else 1)
        table = Experiment(folder, rows, setup, tuple(data), epochs=epochs, batch_size=batch,
                           trivial_mse=trivial, device=device).run()
        tables.append(write_report(table, folder, title=name, caption=(
            f"{NAME} / {name}: {len(data[0])} examples, {epochs} epochs, batch {batch}, "
            f"{optimizer} lr {lr:g}. Backend {backend}, device {device}.")))
        plot_report(tables[-1])  # the set-up's figures, also in its TensorBoard's Images tab
    table = pd.concat(tables, ignore_index=True)
    race = race_table(table, epochs)
    budget = float(table["wall_time_s"].sum())
    summary = summarize(race, budget)
    write_atomic(out_dir / "race.csv", race.to_csv(index=False))
    write_atomic(out_dir / "race.md", (
        f"{NAME}: {len(config.setups)} set-ups x {len(config.methods)} methods x {config.seeds} seeds, "
        f"{epochs} epochs of {config.sizes[0]} examples each; {budget / 60:.1f} min of training "
        f"on {backend} / {device}.\n\n{markdown_table(race)}\nSummary:\n\n"
        + "".join(f"- {line}\n" for line in summary)))
    table.attrs.update(race=race, summary=summary, out_dir=str(out_dir))
    return table


def summarize(race: pd.DataFrame, budget_s: float) -> list[str]:
    """What the race shows: per set-up, the methods beyond the seed spread."""
    lines = []
    for cell, g in race.groupby("setup", sort=False):
        better = g[g["vs_baseline"].str.startswith("better")]["method"].tolist()
        worse = g[g["vs_baseline"].str.startswith("worse")]["method"].tolist()
        learned = g[~g["learned"].str.startswith("0/")]["method"].tolist()
        best = g.sort_values("val/trivial").iloc[0]
        lines.append(
            f"{cell}: better than baseline beyond the seed spread: {', '.join(better) or 'none'}; "
            f"worse: {', '.join(worse) or 'none'}; lowest val/trivial {best['method']} "
            f"({best['val/trivial']:.3g}); learned (val/trivial <= 0.1) in some seed: "
            f"{', '.join(learned) or 'none'}.")
    lines.append(f"budget: {budget_s / 60:.1f} min of training in all.")
    return lines


def show(table: pd.DataFrame, out_dir: pathlib.Path) -> None:
    """Prints the race table (at most 120 columns) and its summary, then where the files are."""
    from .report import closing_lines

    race = table.attrs["race"]
    several = race["seeds"].max() > 1
    shown = pd.DataFrame({
        "setup": race["setup"], "method": race["method"], "exploded": race["explosion_rate"],
        "stopped": race["stopped"], "diverged": race["diverged"],
        "val/trivial": [f"{m:.3g}" + (f" ({lo:.3g}..{hi:.3g})" if several else "") for m, lo, hi in zip(
            race["val/trivial"], race["val/trivial_min"], race["val/trivial_max"])],
        "learned": race["learned"]})
    print(shown.to_string(index=False, line_width=WIDTH))
    verdicts = [f"- {r.setup} / {r.method}: {r.vs_baseline}" for r in race.itertuples() if r.vs_baseline]
    print("\n".join(["", "Against baseline:", *(wrap(line) for line in verdicts)]))
    print("\n".join(["", "Summary:", *(wrap(f"- {line}") for line in table.attrs["summary"])]))
    out = pathlib.Path(out_dir).resolve()
    print(wrap(f"Race table: {out / 'race.md'}, {out / 'race.csv'}"))
    for name in dict.fromkeys(table["cell"]):
        print(f"{name}:")
        print("\n".join(closing_lines(out / name, figures(out / name), prefix="  ")))


def figures(folder: pathlib.Path) -> list[pathlib.Path]:
    """The PNG figures in a set-up's folder."""
    return sorted(folder.glob("*.png"))


def main(argv: list[str] | None = None) -> pd.DataFrame:
    """Parses flags (or resumes), runs, prints the race table and summary."""
    return run_main(Config, argv, run, __doc__, show=show)


if __name__ == "__main__":
    main()
