"""
Title: Exploding gradients in a plain RNN on long sequences, and eight cures
Description: Train SimpleRNN(32) on the adding problem (100 steps) with plain
SGD once per variant, and compare what each mitigation does to the gradient
norm.

The adding problem (Hochreiter & Schmidhuber 1997) asks a recurrent network
to add the two marked numbers of a 100-step sequence; predicting the mean
scores an MSE of 1/6 (`ADDING_PROBLEM_BASELINE_MSE`). Backpropagation through
time multiplies the gradient by the recurrent Jacobian once per step, so its
norm can grow geometrically with the sequence length (Pascanu et al. 2013).

What drives the explosion with the defaults: the learning rate. The data are
well scaled (inputs in [0, 1), targets in [0, 2)), and plain SGD at lr=0.1
is too large a step for this model: a few updates of lr times the gradient
move the recurrent weights to where the gradient through 100 time steps is
thousands of times larger (measured on CPU, seed 0: the global norm goes 7,
25, 25, 59, 2, 45, 17, then 2245 at step 8, the recurrent kernel's gradient
111x its median), and every further step makes it worse (about 6x per step,
inf at step 33 when nothing stops it). `NaNGuard` stops the run on that
spike (step 8: 91x the median norm before it). The same model at lr=0.02
trains without incident. Plain SGD (no momentum, no Adam) is used on
purpose, so the step is exactly lr times the gradient and the cause is
easy to see.

Variants (all with plain SGD, all with `GradientNormLogger` and
`NaNGuard(action="stop")`):

- `baseline`: lr=0.1, no protection: the setting that explodes.
- `clipnorm`, `clipvalue`, `global_clipnorm`: Keras' clipping modes via
  `GradientClipping` (thresholds 1.0, 0.5, 1.0; the typical unclipped norm of
  a stable run is about 1).
- `autoclip`: `AutoClip(percentile=10)`, the threshold follows the norms.
- `batchnorm`: `BatchNormalization` between the RNN and the head.
- `standardize`: a `Normalization` layer adapted on the training inputs.
- `lower_lr`: lr=0.02, the cure for this cause.

`batchnorm` and `standardize` target other causes (badly scaled
activations or inputs); the table shows honestly whether they help here.

What you will see: one line per variant and epoch, a NaNGuard line where it
fires, then the results table (final losses, the 1/6 line, max and median
unclipped gradient norm, first non-finite step, NaNGuard action, epochs run,
wall time, device), a summary computed from it with a suggested clipping
threshold (90th percentile of the unclipped norms before the explosion,
as the Deep Learning Tuning Playbook recommends), and in the run folder:
`results.csv`, `results.md`, `summary.txt`, `config.json`, `grad_norms.png`
(norm per step, log scale), `loss.png`, `nan_guard/<variant>.json` and
`tensorboard/<variant>/` (`tensorboard --logdir <run folder>`).

Run it with `python -m recipes.rnn_long_seq` (about 2 to 3 minutes on 2 CPU
cores; `--quick` in well under a minute; `--help` for every flag).

References:
    - Pascanu, Mikolov & Bengio, "On the difficulty of training recurrent
      neural networks", ICML 2013, https://arxiv.org/abs/1211.5063.
    - Hochreiter & Schmidhuber, "Long Short-Term Memory", 1997.
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

from .common import device_name, write_config
from .experiment import OPTIMIZERS, Experiment, Row, Setup, Variant, clip_callbacks, factorial_variants
from .models import sequence_model
from .report import run_main, write_report

NAME = "rnn_long_seq"
VARIANTS = ("baseline", "global_clipnorm", "autoclip", "batchnorm", "standardize", "lower_lr",
            "global_clipnorm@adam")
# The learning rate of each optimizer when --lr is not given: plain SGD at 0.1
# explodes a SimpleRNN at 100 steps; Adam at 1e-2 with clipping teaches an
# LSTM the task in about 800 steps; momentum and RMSprop at the step sizes
# usually tried first for them.
DEFAULT_LR = {"sgd": 0.1, "momentum": 0.01, "adam": 0.01, "rmsprop": 0.001}
Cell = Literal["simple_rnn", "lstm", "gru"]
ClipMode = Literal["none", "clipnorm", "clipvalue", "global_clipnorm", "autoclip"]


# ---------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Config:
    """Settings of the long-sequence RNN recipe."""

    # Variants to train, in this order: modifiers joined by "+", "@adam" etc.
    # for another optimizer (baseline first: it is the reference).
    variants: tuple[str, ...] = field(default=VARIANTS, metadata={"help": (
        "variants to train: baseline, or modifiers joined by + (clipnorm, clipvalue, "
        "global_clipnorm, autoclip, batchnorm, standardize, lower_lr), optionally "
        "@optimizer (e.g. global_clipnorm+batchnorm@adam)")})
    # 2x2 BatchNormalization x standardization instead of --variants.
    factorial: bool = field(default=False, metadata={"help": (
        "train BatchNormalization on/off x input standardization on/off instead of --variants")})
    # With --factorial, a clipping mode as a third on/off factor.
    factorial_clip: ClipMode = field(default="none", metadata={"help": (
        "with --factorial, also a clipping mode on/off (2x2x2 variants)")})
    # Recurrent cells to train every variant with; the old --cell still works.
    cells: tuple[Cell, ...] = field(default=("simple_rnn", "lstm"), metadata={"help": "recurrent cells"})
    # One cell (the old flag): the same as --cells CELL.
    cell: Cell | None = field(default=None, metadata={"help": "one recurrent cell; overrides --cells"})
    # Size of the recurrent state.
    units: int = field(default=32, metadata={"help": "recurrent units"})
    # Time steps per sequence; the gradient crosses all of them.
    seq_len: int = field(default=100, metadata={"help": "sequence length (>= 2)"})
    # Training sequences: 128 steps per epoch at batch 32.
    n_train: int = field(default=4096, metadata={"help": "training sequences"})
    # Validation sequences (drawn with seed + 1).
    n_val: int = field(default=512, metadata={"help": "validation sequences"})
    # Mini-batch size.
    batch_size: int = field(default=32, metadata={"help": "mini-batch size"})
    # Epochs per row: the Adam LSTM learns in about 6.
    epochs: int = field(default=8, metadata={"help": "epochs per row"})
    # Optimizer of every variant without an @optimizer.
    optimizer: Literal[OPTIMIZERS] = field(default="sgd", metadata={"help": (
        "optimizer (momentum: SGD with momentum 0.9)")})
    # None: DEFAULT_LR[optimizer]; SGD at 0.1 is the step size that explodes.
    lr: float | None = field(default=None, metadata={"help": (
        "learning rate of --optimizer; none: sgd 0.1, momentum 0.01, adam 0.01, rmsprop 0.001")})
    # None: a fifth of the optimizer's learning rate (0.02 for SGD).
    lower_lr: float | None = field(default=None, metadata={"help": (
        "learning rate of the lower_lr modifier; none: a fifth of the learning rate")})
    # Multiplies the value channel of the inputs (1.0: values in [0, 1)).
    input_scale: float = field(default=1.0, metadata={"help": "scale of the value channel"})
    # Per-variable norm limit of the clipnorm modifier.
    clipnorm: float = field(default=1.0, metadata={"help": "threshold of clipnorm"})
    # Element-wise limit of the clipvalue modifier.
    clipvalue: float = field(default=0.5, metadata={"help": "threshold of clipvalue"})
    # Global norm limit of the global_clipnorm modifier.
    global_clipnorm: float = field(default=1.0, metadata={"help": "threshold of global_clipnorm"})
    # Percentile of past norms the autoclip modifier clips to (the paper's 10).
    autoclip_percentile: float = field(default=10.0, metadata={"help": "percentile of autoclip"})
    # Seed of the data and of the first row's weights and shuffles.
    seed: int = field(default=0, metadata={"help": "random seed"})
    # Rows per variant and cell, with seeds seed, seed + 1, ...
    seeds: int = field(default=1, metadata={"help": "seeds per variant and cell (spread)"})
    # Smoke test: 512 training and 256 validation sequences, 1 epoch.
    quick: bool = field(default=False, metadata={"help": "small, fast run (512 sequences, 1 epoch)"})
    # Results folder; None makes a new runs/rnn_long_seq-<timestamp>.
    out: str | None = field(default=None, metadata={"help": (
        "new or empty folder for the results; default: runs/rnn_long_seq-<time>")})
    # Folder of an interrupted run to finish (its config.json gives the settings).
    resume: str | None = field(default=None, metadata={"help": (
        "finish the interrupted run in this folder, skipping its finished rows")})

    def validate(self) -> str | None:
        """Returns what is wrong with the settings, or None."""
        for name in ("units", "n_train", "n_val", "batch_size", "epochs", "seeds"):
            if getattr(self, name) < 1:
                return f"--{name.replace('_', '-')} received {getattr(self, name)}; expected an int >= 1."
        if self.seq_len < 2:
            return f"--seq-len received {self.seq_len}; expected an int >= 2 (one marker per half)."
        for name in ("lr", "lower_lr", "input_scale", "clipnorm", "clipvalue", "global_clipnorm"):
            value = getattr(self, name)
            if value is not None and (not value > 0 or value == float("inf")):
                return f"--{name.replace('_', '-')} received {value}; expected a finite number > 0."
        if not 0 < self.autoclip_percentile <= 100:
            return f"--autoclip-percentile received {self.autoclip_percentile}; expected a number in (0, 100]."
        if self.seed < 0:
            return f"--seed received {self.seed}; expected an int >= 0."
        for names, flag in ((self.variants, "--variants"), (self.cells, "--cells")):
            if len(set(names)) != len(names):
                return f"{flag} received {' '.join(names)}; name each once."
        for name in self.variants:
            Variant.parse(name)  # raises ValueError with the message
        return None

    @property
    def sizes(self) -> tuple[int, int, int]:
        """`(n_train, n_val, epochs)`, reduced under `--quick`."""
        if self.quick:
            return min(self.n_train, 512), min(self.n_val, 256), 1
        return self.n_train, self.n_val, self.epochs

    def rows(self) -> list[Row]:
        """Every variant x cell x seed, in table order."""
        variants = factorial_variants(None if self.factorial_clip == "none" else self.factorial_clip) \
            if self.factorial else self.variants
        cells = (self.cell,) if self.cell else self.cells
        return [Row(v, c, self.seed + i) for v in variants for c in cells for i in range(self.seeds)]


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


def setup(row: Row, config: Config, x_train) -> Setup:
    """How to train one row: its model, optimizer, learning rate and callbacks."""
    variant = Variant.parse(row.variant)
    optimizer = variant.optimizer or config.optimizer
    lr = config.lr if config.lr is not None and optimizer == config.optimizer else DEFAULT_LR[optimizer]
    if "lower_lr" in variant.mods:
        lr = config.lower_lr if config.lower_lr is not None else lr / 5
    threshold = {"clipnorm": config.clipnorm, "clipvalue": config.clipvalue,
                 "global_clipnorm": config.global_clipnorm,
                 "autoclip": config.autoclip_percentile}.get(variant.clip)
    batch_norm, standardize = "batchnorm" in variant.mods, "standardize" in variant.mods
    return Setup(
        build=lambda: sequence_model(config.seq_len, 2, cell=row.cell, units=config.units,
                                     batch_norm=batch_norm,
                                     standardize=x_train if standardize else None),
        optimizer=optimizer, learning_rate=lr, callbacks=clip_callbacks(variant.clip, threshold),
        model=f"{'standardize+' * standardize}{row.cell}({config.units}){'+bn' * batch_norm}",
    )


# ---------------------------------------------------------------------------
# Run and report
# ---------------------------------------------------------------------------


def run(config: Config, out_dir: str | pathlib.Path) -> pd.DataFrame:
    """Trains every row not yet in `out_dir/results.csv` and writes the report.

    Args:
        config: The settings.
        out_dir: The run folder (new, or the one being resumed).

    Returns:
        The results table, one row per variant x cell x seed; `table.attrs`
        holds `"summary"`, `"spread"`, `"threshold"` and `"out_dir"`.
    """
    out_dir = pathlib.Path(out_dir)
    if not config.resume:
        write_config(config, out_dir)
    data = make_data(config)
    _, _, epochs = config.sizes
    device = device_name()
    rows = config.rows()
    print(f"[{NAME}] adding problem, seq_len {config.seq_len}, {len(data[0])} training sequences, "
          f"{len(rows)} rows (variant x cell x seed); device {device}; results in {out_dir}")
    table = Experiment(
        out_dir, rows, lambda row: setup(row, config, data[0]), data, epochs=epochs,
        batch_size=config.batch_size, trivial_mse=ADDING_PROBLEM_BASELINE_MSE, device=device,
    ).run()
    return write_report(
        table, out_dir,
        title=f"adding problem, seq_len {config.seq_len}, {config.units} units",
        caption=f"{NAME}: adding problem, seq_len {config.seq_len}, {len(data[0])} training "
                f"sequences, {epochs} epochs, batch {config.batch_size}, data seed {config.seed}. "
                f"Device: {device}",
    )


def main(argv: list[str] | None = None) -> pd.DataFrame:
    """Parses flags (or resumes), runs, prints the table and summary, then plots."""
    return run_main(NAME, Config, argv, run, __doc__)


if __name__ == "__main__":
    main()
