"""
Title: Exploding gradients in recurrent networks, and which cure gives a model that learns
Description: Train SimpleRNN and LSTM on the adding problem (100 steps) once
per variant, and judge every cure by the model it produces.

The adding problem (Hochreiter & Schmidhuber 1997) asks a recurrent network
to add the two marked numbers of a 100-step sequence; predicting the mean
scores an MSE of 1/6 (`ADDING_PROBLEM_BASELINE_MSE`). A row *learned* when
its validation MSE is at most a tenth of that (`val/trivial <= 0.1`).
Backpropagation through time multiplies the gradient by the recurrent
Jacobian once per step, so its norm can grow geometrically with the sequence
length (Pascanu et al. 2013).

What the default run shows (2 shared CPU cores, about 4 minutes):

- the explosion: plain SGD at lr 0.1 is too large a step for a SimpleRNN
  through 100 steps; the norm goes 6, 22, 24, 40, 387, ... 5.3e5 at step 12,
  where `NaNGuard` stops the row (1379x its running median);
- what stops it: clipping, standardized inputs, BatchNormalization and a
  lower lr all keep SGD finite, and none of them learns in 8 epochs
  (`val/trivial` about 1): stable is not the same as useful;
- what learns: an LSTM with Adam (lr 1e-2) and global-norm clipping at 1
  reaches `val/trivial` 0.006 at epoch 6, while a SimpleRNN trained the same
  way stays on the 1/6 line: the cure the task needs is the gated cell, as
  in Hochreiter & Schmidhuber (1997) and Arjovsky, Shah & Bengio (2016).

Variants (`--variants`) are `baseline` or modifiers joined with `+`:
`clipnorm`, `clipvalue`, `global_clipnorm` (Keras' clipping modes via
`GradientClipping`), `autoclip` (`AutoClip(percentile=10)`), `batchnorm`
(`BatchNormalization` after the RNN), `standardize` (a `Normalization`
layer adapted on the training inputs) and `lower_lr` (a fifth of the lr), `agc` (`AGC(clipping=0.01)`), `zclip`
(`ZClip(z_threshold=2.5)`), the guard actions `rollback`, `rollback_skip`
and `rollback_reset` (NaNGuard rolls back instead of stopping; then skips
10 batches, or resets the optimizer's moments), and the SimpleRNN cures
`irnn` (ReLU, identity recurrent init, Le et al. 2015; combine it with a
clipping mode, e.g. `irnn+global_clipnorm`) and `orthogonal` (ReLU, random
orthogonal recurrent init), which replace the cell by `models.relu_rnn`;
`@adam` (or `@sgd`, `@momentum`, `@rmsprop`) trains that variant with
another optimizer at its default lr. Every variant is trained for every cell
of `--cells` and every seed of `--seeds`: one row each. `--optimizer` sets
the optimizer of the variants without `@` (default lr per optimizer:
`DEFAULT_LR`); `--factorial` replaces the variants with BatchNormalization
on/off x standardization on/off (`--factorial-clip` adds a clipping mode as
a third factor), and the summary gives each factor's effect.

What you will see: one line per row and epoch, then the table (optimizer,
lr, val loss, `val/trivial`, `learned`, the epoch it learned, the step it
exploded, max and median unclipped gradient norm, NaNGuard's action, wall
time), with `--seeds` the mean and min..max over seeds, and a summary that
calls a difference real only when it exceeds the seed spread and suggests
one clipping threshold (Deep Learning Tuning Playbook: the 90th percentile
of the stable, unclipped rows' norms). In the run folder: `results.csv`
(one line per finished row, appended as each finishes), `results.md`,
`summary.txt`, `config.json`, `grad_norms.png` and `loss.png` (a panel per
variant), `gradient_flow.png` (a heatmap of layers x steps per row),
`rows/<row>/` (norms per step and per layer, losses, NaNGuard report) and
`tensorboard/` (`tensorboard --logdir <run folder>/tensorboard`): a run per
row under `exploded/`, `learned/` or `stable/`, with NaNGuard's words in its
Text tab, and the figures in `figures` (Images tab); untick "Ignore outliers
in chart scaling" to see the explosion on the scalar charts.
Ctrl-C or SIGTERM stops with the command that finishes the run
(`--resume <run folder>`), which skips the finished rows.

Every Keras backend runs it (`KERAS_BACKEND=tensorflow`, `jax` or `torch`)
and writes the same files; the first line and `results.csv` name the
backend, the device and the recurrent kernel that ran (`cuDNN`, `fused` or
`generic`, `common.rnn_kernel`). A seed draws other initial weights on
another backend, so the numbers differ while the verdicts agree (README,
Backends).

Run it with `python -m recipes.rnn_long_seq` (`--quick` for a smoke run,
`--help` for every flag). The published LSTM-vs-RNN result at T=100 with 10k
training sequences and 3 seeds:
`python -m recipes.rnn_long_seq --optimizer adam --variants global_clipnorm
--cells simple_rnn lstm --n-train 10000 --epochs 10 --seeds 3`.

References:
    - Pascanu, Mikolov & Bengio, "On the difficulty of training recurrent
      neural networks", ICML 2013, https://arxiv.org/abs/1211.5063.
    - Hochreiter & Schmidhuber, "Long Short-Term Memory", 1997.
    - Arjovsky, Shah & Bengio, "Unitary Evolution Recurrent Neural
      Networks", ICML 2016, https://arxiv.org/abs/1511.06464.
    - Seetharaman et al., "AutoClip: Adaptive Gradient Clipping for Source
      Separation Networks", MLSP 2020.
    - Godbole et al., "Deep Learning Tuning Playbook", 2023.
"""

from __future__ import annotations

import dataclasses
import pathlib
from dataclasses import field
from typing import Literal

import pandas as pd

from gradguard.datasets import ADDING_PROBLEM_BASELINE_MSE, adding_problem

from .common import rnn_kernel
from .report import run_main
from .sweep import SweepConfig, run_sweep
from .variants import Row, Variant

# Keras (and so TensorFlow) loads inside the functions that train, not at
# import: `--help` and a bad flag answer at once, and `run_main` loads the
# backend quietly (`console.quiet_start`).

NAME = "rnn_long_seq"
VARIANTS = ("baseline", "global_clipnorm", "autoclip", "batchnorm", "standardize", "lower_lr",
            "global_clipnorm@adam")
# The learning rate of each optimizer when --lr is not given: plain SGD at 0.1
# explodes a SimpleRNN at 100 steps; Adam at 1e-2 with clipping teaches an
# LSTM the task in about 800 steps; momentum and RMSprop at the step sizes
# usually tried first for them.
DEFAULT_LR = {"sgd": 0.1, "momentum": 0.01, "adam": 0.01, "rmsprop": 0.001}
Cell = Literal["simple_rnn", "lstm", "gru"]


# ---------------------------------------------------------------------------
# Config: the sweep's settings (sweep.SweepConfig) with this recipe's defaults
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Config(SweepConfig):
    """Settings of the long-sequence RNN recipe."""

    NAME, DEFAULT_LR = NAME, DEFAULT_LR
    QUICK_SIZES = (512, 256)  # 512 training and 256 validation sequences, 1 epoch
    AT_LEAST_ONE = (*SweepConfig.AT_LEAST_ONE, "units")
    POSITIVE = (*SweepConfig.POSITIVE, "input_scale", "agc", "zclip")

    # The variants of the default run (baseline first: it is the reference).
    variants: tuple[str, ...] = field(default=VARIANTS, metadata={"help": (
        "variants to train: baseline, or modifiers joined by + (clipnorm, clipvalue, "
        "global_clipnorm, autoclip, agc, zclip, batchnorm, standardize, lower_lr, rollback, "
        "rollback_skip, rollback_reset, irnn, orthogonal), optionally "
        "@optimizer (e.g. global_clipnorm+batchnorm@adam, irnn+global_clipnorm)")})
    # Validation sequences (drawn with seed + 1).
    n_val: int = field(default=512, metadata={"help": "validation sequences"})
    # Mini-batch size: 128 steps per epoch of 4096 sequences.
    batch_size: int = field(default=32, metadata={"help": "mini-batch size"})
    # Epochs per row: the Adam LSTM learns in about 6.
    epochs: int = field(default=8, metadata={"help": "epochs per row"})
    # Recurrent cells to train every variant with; the old --cell still works.
    cells: tuple[Cell, ...] = field(default=("simple_rnn", "lstm"), metadata={"help": "recurrent cells"})
    # One cell (the old flag): the same as --cells CELL.
    cell: Cell | None = field(default=None, metadata={"help": "one recurrent cell; overrides --cells"})
    # Size of the recurrent state.
    units: int = field(default=32, metadata={"help": "recurrent units"})
    # Time steps per sequence; the gradient crosses all of them.
    seq_len: int = field(default=100, metadata={"help": "sequence length (>= 2)"})
    # Multiplies the value channel of the inputs (1.0: values in [0, 1)).
    input_scale: float = field(default=1.0, metadata={"help": "scale of the value channel"})
    # AGC's ratio lambda of the agc modifier (the paper's 0.01).
    agc: float = field(default=0.01, metadata={"help": "clipping ratio of agc"})
    # ZClip's z-score threshold of the zclip modifier (the paper's 2.5).
    zclip: float = field(default=2.5, metadata={"help": "z-score threshold of zclip"})

    def lower_lr_of(self, lr: float) -> float:
        """A fifth of the learning rate (0.02 for SGD)."""
        return lr / 5

    def row_cells(self) -> tuple[str, ...]:
        """`--cell` if given, else `--cells`."""
        return (self.cell,) if self.cell else self.cells

    def validate(self) -> str | None:
        """Returns what is wrong with the settings, or None."""
        if self.seq_len < 2:
            return f"--seq-len received {self.seq_len}; expected an int >= 2 (one marker per half)."
        if len(set(self.cells)) != len(self.cells):
            return f"--cells received {' '.join(self.cells)}; name each once."
        problem = super().validate()
        if problem is not None or self.factorial:
            return problem
        relu = [v for v in self.variants if Variant.parse(v).rnn_init]
        gated = [c for c in self.row_cells() if c != "simple_rnn"]
        if relu and gated:
            flag = "--cell" if self.cell else "--cells"
            return (f"--variants {' '.join(relu)} trains a ReLU SimpleRNN whatever the cell, so "
                    f"{flag} {' '.join(gated)} would label it {gated[0]}; use {flag} simple_rnn "
                    "with these variants, or drop them.")
        return problem


# ---------------------------------------------------------------------------
# Data and model
# ---------------------------------------------------------------------------


def make_data(config: Config):
    """`(x_train, y_train, x_val, y_val)` of the adding problem."""
    n_train, n_val, _ = config.sizes
    x, y = adding_problem(n_train, config.seq_len, seed=config.seed, input_scale=config.input_scale)
    x_val, y_val = adding_problem(n_val, config.seq_len, seed=config.seed + 1,
                                  input_scale=config.input_scale)
    return x, y, x_val, y_val


def setup(row: Row, config: Config, x_train):
    """How to train one row: the recurrent model its variant asks for, through `Config.setup`."""
    from .models import relu_rnn, sequence_model

    batch_norm, standardize = "batchnorm" in row.spec.mods, "standardize" in row.spec.mods
    build = lambda: sequence_model(config.seq_len, 2, cell=row.cell, units=config.units,  # noqa: E731
                                   batch_norm=batch_norm,
                                   standardize=x_train if standardize else None)
    model = f"{'standardize+' * standardize}{row.cell}({config.units}){'+bn' * batch_norm}"
    if row.spec.rnn_init:  # a ReLU SimpleRNN whatever the cell (IRNN or orthogonal)
        init = "identity" if row.spec.rnn_init == "irnn" else "orthogonal"
        build = lambda: relu_rnn(config.seq_len, 2, recurrent_init=init, units=config.units,  # noqa: E731
                                 standardize=x_train if standardize else None)
        model = f"{'standardize+' * standardize}relu_rnn_{init}({config.units})"
    return config.setup(row, build=build, model=model, kernel=rnn_kernel(row.cell))


# ---------------------------------------------------------------------------
# Run and report
# ---------------------------------------------------------------------------


def run(config: Config, out_dir: str | pathlib.Path | None = None) -> pd.DataFrame:
    """Trains every row not yet in `out_dir/results.csv` and writes the report (`sweep.run_sweep`)."""
    data = make_data(config)
    cells = dict.fromkeys(row.cell for row in config.rows())
    return run_sweep(
        config, out_dir, data, trivial_mse=ADDING_PROBLEM_BASELINE_MSE,
        setup=lambda row: setup(row, config, data[0]),
        about=f"adding problem, seq_len {config.seq_len}, {len(data[0])} training sequences",
        title=f"adding problem, seq_len {config.seq_len}, {config.units} units",
        kernels=", ".join(f"{cell} {rnn_kernel(cell)}" for cell in cells))


def main(argv: list[str] | None = None) -> pd.DataFrame:
    """Parses flags (or resumes), runs, prints the table and summary, then plots."""
    return run_main(Config, argv, run, __doc__)


if __name__ == "__main__":
    main()
