"""
Title: Exploding gradients in a deep MLP fed poorly scaled inputs
Description: Train a 20-layer ReLU network on a regression task whose
features span seven orders of magnitude (1e-3 to 1e4), once per variant,
and judge every cure by the model it produces.

`poorly_scaled_regression` draws 8 features with standard deviations spread
log-uniformly from 1e-3 to 1e4; the target is linear in the *standardized*
features plus noise of variance 0.01, so predicting the mean scores an MSE
of about 1.05 (`trivial_mse`, on the validation split) and a good model
about 0.01. A row *learned* when `val/trivial <= 0.1`. Training and
validation samples come from one draw, split: the generator draws the
target's weights from its seed, so another seed would be another task.

What drives the explosion with the defaults: the poorly scaled inputs,
amplified by depth. A feature of scale 1e4 makes the first layer's
pre-activations, and the gradient of every kernel above it, about 1e4 times
larger than unit-scale data would; 20 layers multiply the backward signal
once more per layer. Plain SGD at lr 0.01 makes the norm grow to about 1e13
in three steps and the fourth gradient non-finite: `NaNGuard` stops the row
(the update is skipped, so the weights stay finite).

Variants as in `rnn_long_seq` (`baseline`, or `clipnorm`, `clipvalue`,
`global_clipnorm`, `autoclip`, `batchnorm` (after every hidden Dense),
`standardize`, `lower_lr` (1e-4 x the lr) joined with `+`, optionally
`@optimizer`); `--factorial`, `--seeds`, `--optimizer` and `--resume` work
the same way. The default run trains the eight one-cure variants with SGD
and `standardize@adam`: clipping, BatchNormalization and standardizing stop
the explosion, standardized SGD starts to learn, and standardized inputs
with Adam (lr 1e-3) learn the task (`val/trivial` about 0.015) in the first
epoch. The summary states each of these from the table.

What you will see and where it is written: as in `rnn_long_seq` (table,
summary, `results.csv` appended row by row, `results.md`, `summary.txt`,
`grad_norms.png`, `loss.png`, `rows/<row>/`, `tensorboard/<row>/`).

Every Keras backend runs it (`KERAS_BACKEND=tensorflow`, `jax` or `torch`),
with the same files; `results.csv` names the backend and the device.

Run it with `python -m recipes.deep_dense` (under a minute on 2 CPU cores;
`--quick` for a smoke run, `--help` for every flag).

References:
    - LeCun, Bottou, Orr & Müller, "Efficient BackProp", 1998 (section 4.3,
      normalizing the inputs).
    - Glorot & Bengio, "Understanding the difficulty of training deep
      feedforward neural networks", AISTATS 2010.
    - Ioffe & Szegedy, "Batch Normalization", ICML 2015.
    - Godbole et al., "Deep Learning Tuning Playbook", 2023.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
from dataclasses import field
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from gradguard.datasets import poorly_scaled_regression

from .common import device_name, new_run_dir, write_config
from .variants import OPTIMIZERS, Variant, clip_callbacks, factorial_variants
from .report import run_main, write_report

if TYPE_CHECKING:
    from .experiment import Row, Setup

# Keras (and so TensorFlow) loads inside the functions that train, not at
# import: `--help` and a bad flag answer at once, and `run_main` loads the
# backend quietly (`console.quiet_start`).

NAME = "deep_dense"
VARIANTS = ("baseline", "clipnorm", "clipvalue", "global_clipnorm", "autoclip", "batchnorm",
            "standardize", "lower_lr", "standardize@adam")
# The learning rate of each optimizer when --lr is not given: plain SGD at
# 0.01 explodes on the raw 1e4-scale inputs; the others at the step sizes
# usually tried first for them (Adam's and RMSprop's Keras defaults).
DEFAULT_LR = {"sgd": 0.01, "momentum": 0.001, "adam": 0.001, "rmsprop": 0.001}
ClipMode = Literal["none", "clipnorm", "clipvalue", "global_clipnorm", "autoclip"]
CELL = "dense"  # the table's cell column: this recipe has one architecture


# ---------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Config:
    """Settings of the deep MLP on poorly scaled inputs recipe."""

    # Variants to train, in this order: modifiers joined by "+", "@adam" etc.
    # for another optimizer (baseline first: it is the reference).
    variants: tuple[str, ...] = field(default=VARIANTS, metadata={"help": (
        "variants to train: baseline, or modifiers joined by + (clipnorm, clipvalue, "
        "global_clipnorm, autoclip, batchnorm, standardize, lower_lr), optionally "
        "@optimizer (e.g. standardize+batchnorm@adam)")})
    # 2x2 BatchNormalization x standardization instead of --variants.
    factorial: bool = field(default=False, metadata={"help": (
        "train BatchNormalization on/off x input standardization on/off instead of --variants")})
    # With --factorial, a clipping mode as a third on/off factor.
    factorial_clip: ClipMode = field(default="none", metadata={"help": (
        "with --factorial, also a clipping mode on/off (2x2x2 variants)")})
    # Hidden Dense layers; depth multiplies the badly scaled gradient.
    depth: int = field(default=20, metadata={"help": "hidden layers (>= 1)"})
    # Units per hidden layer.
    width: int = field(default=64, metadata={"help": "units per hidden layer"})
    # Input features; their scales are spread log-uniformly over --scale-range.
    n_features: int = field(default=8, metadata={"help": "input features"})
    # Smallest and largest feature standard deviation: seven orders of magnitude.
    scale_range: tuple[float, float] = field(
        default=(1e-3, 1e4), metadata={"help": "smallest and largest feature scale"})
    # Training samples: 64 steps per epoch at batch 64.
    n_train: int = field(default=4096, metadata={"help": "training samples"})
    # Validation samples (the same draw as the training samples, split off).
    n_val: int = field(default=1024, metadata={"help": "validation samples"})
    # Mini-batch size.
    batch_size: int = field(default=64, metadata={"help": "mini-batch size"})
    # Epochs per row.
    epochs: int = field(default=5, metadata={"help": "epochs per row"})
    # Optimizer of every variant without an @optimizer.
    optimizer: Literal[OPTIMIZERS] = field(default="sgd", metadata={"help": (
        "optimizer (momentum: SGD with momentum 0.9)")})
    # None: DEFAULT_LR[optimizer]; SGD at 0.01 on raw 1e4-scale inputs explodes.
    lr: float | None = field(default=None, metadata={"help": (
        "learning rate of --optimizer; none: sgd 0.01, momentum 0.001, adam 0.001, rmsprop 0.001")})
    # None: 1e-4 times the learning rate (1e-6 for SGD), what raw inputs need.
    lower_lr: float | None = field(default=None, metadata={"help": (
        "learning rate of the lower_lr modifier; none: 1e-4 x the learning rate")})
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
    # Rows per variant, with seeds seed, seed + 1, ...
    seeds: int = field(default=1, metadata={"help": "seeds per variant (spread)"})
    # Smoke test: 512 training and 128 validation samples, 1 epoch.
    quick: bool = field(default=False, metadata={"help": "small, fast run (512 samples, 1 epoch)"})
    # Results folder; None makes a new runs/deep_dense-<timestamp>.
    out: str | None = field(default=None, metadata={"help": (
        "new or empty folder for the results; default: runs/deep_dense-<time>")})
    # Folder of an interrupted run to finish (its config.json gives the settings).
    resume: str | None = field(default=None, metadata={"help": (
        "finish the interrupted run in this folder, skipping its finished rows")})

    def validate(self) -> str | None:
        """Returns what is wrong with the settings, or None."""
        for name in ("depth", "width", "n_features", "n_train", "n_val", "batch_size", "epochs", "seeds"):
            if getattr(self, name) < 1:
                return f"--{name.replace('_', '-')} received {getattr(self, name)}; expected an int >= 1."
        low, high = self.scale_range
        if not (0 < low <= high < math.inf):
            return (f"--scale-range received {low:g} {high:g}; expected two finite numbers "
                    "0 < smallest <= largest, e.g. 1e-3 1e4.")
        for name in ("lr", "lower_lr", "clipnorm", "clipvalue", "global_clipnorm"):
            value = getattr(self, name)
            if value is not None and not 0 < value < math.inf:
                return f"--{name.replace('_', '-')} received {value}; expected a finite number > 0."
        if not 0 < self.autoclip_percentile <= 100:
            return f"--autoclip-percentile received {self.autoclip_percentile}; expected a number in (0, 100]."
        if self.seed < 0:
            return f"--seed received {self.seed}; expected an int >= 0."
        if len(set(self.variants)) != len(self.variants):
            return f"--variants received {' '.join(self.variants)}; name each once."
        for name in self.variants:
            Variant.parse(name)  # raises ValueError with the message
        return None

    @property
    def sizes(self) -> tuple[int, int, int]:
        """`(n_train, n_val, epochs)`, reduced under `--quick`."""
        if self.quick:
            return min(self.n_train, 512), min(self.n_val, 128), 1
        return self.n_train, self.n_val, self.epochs

    def rows(self) -> list[Row]:
        """Every variant x seed, in table order."""
        from .experiment import Row

        variants = factorial_variants(None if self.factorial_clip == "none" else self.factorial_clip) \
            if self.factorial else self.variants
        return [Row(v, CELL, self.seed + i) for v in variants for i in range(self.seeds)]


# ---------------------------------------------------------------------------
# Data and model
# ---------------------------------------------------------------------------


def make_data(config: Config):
    """`(x_train, y_train, x_val, y_val)`: one draw, split.

    The validation samples come from the same draw as the training samples:
    `poorly_scaled_regression` draws the target's weights from its seed too,
    so a second draw with another seed would be another task.
    """
    n_train, n_val, _ = config.sizes
    x, y = poorly_scaled_regression(n_train + n_val, config.n_features, seed=config.seed,
                                    scale_range=config.scale_range)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def trivial_mse(y_train: np.ndarray, y_val: np.ndarray) -> float:
    """Validation MSE of always predicting the training target's mean."""
    return float(np.mean((y_val.astype(np.float64) - y_train.astype(np.float64).mean()) ** 2))


def setup(row: Row, config: Config, x_train) -> Setup:
    """How to train one row: its model, optimizer, learning rate and callbacks."""
    from .experiment import Setup
    from .models import deep_dense

    variant = Variant.parse(row.variant)
    optimizer = variant.optimizer or config.optimizer
    lr = config.lr if config.lr is not None and optimizer == config.optimizer else DEFAULT_LR[optimizer]
    if "lower_lr" in variant.mods:
        lr = config.lower_lr if config.lower_lr is not None else lr * 1e-4
    threshold = {"clipnorm": config.clipnorm, "clipvalue": config.clipvalue,
                 "global_clipnorm": config.global_clipnorm,
                 "autoclip": config.autoclip_percentile}.get(variant.clip)
    batch_norm, standardize = "batchnorm" in variant.mods, "standardize" in variant.mods
    return Setup(
        build=lambda: deep_dense(config.n_features, depth=config.depth, width=config.width,
                                 batch_norm=batch_norm, standardize=x_train if standardize else None),
        optimizer=optimizer, learning_rate=lr, callbacks=clip_callbacks(variant.clip, threshold),
        model=f"{'standardize+' * standardize}dense {config.depth}x{config.width}{'+bn' * batch_norm}",
    )


# ---------------------------------------------------------------------------
# Run and report
# ---------------------------------------------------------------------------


def run(config: Config, out_dir: str | pathlib.Path | None = None) -> pd.DataFrame:
    """Trains every row not yet in `out_dir/results.csv` and writes the report.

    Args:
        config: The settings.
        out_dir: The run folder (new, or the one being resumed). Defaults to
            `None`: `config.resume`, or a new folder from `config.out`.

    Returns:
        The results table, one row per variant x seed; `table.attrs` holds
        `"summary"`, `"spread"`, `"threshold"` and `"out_dir"`.
    """
    import keras

    from .experiment import Experiment

    if out_dir is None:
        out_dir = config.resume or new_run_dir(config.out, NAME)
    out_dir = pathlib.Path(out_dir)
    if not config.resume:
        write_config(config, out_dir)
    data = make_data(config)
    _, _, epochs = config.sizes
    device, backend = device_name(), keras.backend.backend()
    rows = config.rows()
    scales = f"{config.scale_range[0]:g}..{config.scale_range[1]:g}"
    print(f"[{NAME}] poorly scaled regression, {config.n_features} features with scales {scales}, "
          f"{len(data[0])} samples, dense {config.depth}x{config.width}, {len(rows)} rows; "
          f"{backend} on {device}; results in {out_dir}")
    table = Experiment(
        out_dir, rows, lambda row: setup(row, config, data[0]), data, epochs=epochs,
        batch_size=config.batch_size, trivial_mse=trivial_mse(data[1], data[3]), device=device,
    ).run()
    return write_report(
        table, out_dir,
        title=f"dense {config.depth}x{config.width} on inputs scaled {scales}",
        caption=f"{NAME}: dense {config.depth}x{config.width}, feature scales {scales}, "
                f"{len(data[0])} samples, {epochs} epochs, batch {config.batch_size}, data seed "
                f"{config.seed}. Backend {backend}, device {device}.",
    )


def main(argv: list[str] | None = None) -> pd.DataFrame:
    """Parses flags (or resumes), runs, prints the table and summary, then plots."""
    return run_main(NAME, Config, argv, run, __doc__)


if __name__ == "__main__":
    main()
