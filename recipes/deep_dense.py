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
`grad_norms.png`, `loss.png`, `gradient_flow.png`, `rows/<row>/`,
`tensorboard/<verdict>/<row>/`, `tensorboard/figures/`).

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
import pathlib
from dataclasses import field

import numpy as np
import pandas as pd

from gradguard.datasets import poorly_scaled_regression

from .report import run_main
from .sweep import SweepConfig, run_sweep
from .variants import Row

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


# ---------------------------------------------------------------------------
# Config: the sweep's settings (sweep.SweepConfig) with this recipe's defaults
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Config(SweepConfig):
    """Settings of the deep MLP on poorly scaled inputs recipe."""

    NAME, DEFAULT_LR = NAME, DEFAULT_LR
    CELL = "dense"  # the table's cell column: this recipe has one architecture
    QUICK_SIZES = (512, 128)  # 512 training and 128 validation samples, 1 epoch
    AT_LEAST_ONE = (*SweepConfig.AT_LEAST_ONE, "depth", "width", "n_features")

    # The variants of the default run (baseline first: it is the reference).
    variants: tuple[str, ...] = field(default=VARIANTS, metadata={"help": (
        "variants to train: baseline, or modifiers joined by + (clipnorm, clipvalue, "
        "global_clipnorm, autoclip, batchnorm, standardize, lower_lr), optionally "
        "@optimizer (e.g. standardize+batchnorm@adam)")})
    # Hidden Dense layers; depth multiplies the badly scaled gradient.
    depth: int = field(default=20, metadata={"help": "hidden layers (>= 1)"})
    # Units per hidden layer.
    width: int = field(default=64, metadata={"help": "units per hidden layer"})
    # Input features; their scales are spread log-uniformly over --scale-range.
    n_features: int = field(default=8, metadata={"help": "input features"})
    # Smallest and largest feature standard deviation: seven orders of magnitude.
    scale_range: tuple[float, float] = field(
        default=(1e-3, 1e4), metadata={"help": "smallest and largest feature scale"})

    def lower_lr_of(self, lr: float) -> float:
        """1e-4 times the learning rate (1e-6 for SGD), what raw inputs need."""
        return lr * 1e-4

    def validate(self) -> str | None:
        """Returns what is wrong with the settings, or None."""
        low, high = self.scale_range
        if not (0 < low <= high < float("inf")):
            return (f"--scale-range received {low:g} {high:g}; expected two finite numbers "
                    "0 < smallest <= largest, e.g. 1e-3 1e4.")
        return super().validate()


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


def setup(row: Row, config: Config, x_train):
    """How to train one row: the MLP its variant asks for, through `Config.setup`."""
    from .models import deep_dense

    batch_norm, standardize = "batchnorm" in row.spec.mods, "standardize" in row.spec.mods
    return config.setup(
        row, build=lambda: deep_dense(config.n_features, depth=config.depth, width=config.width,
                                      batch_norm=batch_norm, standardize=x_train if standardize else None),
        model=f"{'standardize+' * standardize}dense {config.depth}x{config.width}{'+bn' * batch_norm}")


# ---------------------------------------------------------------------------
# Run and report
# ---------------------------------------------------------------------------


def run(config: Config, out_dir: str | pathlib.Path | None = None) -> pd.DataFrame:
    """Trains every row not yet in `out_dir/results.csv` and writes the report (`sweep.run_sweep`)."""
    data = make_data(config)
    scales = f"{config.scale_range[0]:g}..{config.scale_range[1]:g}"
    return run_sweep(
        config, out_dir, data, trivial_mse=trivial_mse(data[1], data[3]),
        setup=lambda row: setup(row, config, data[0]),
        about=f"poorly scaled regression, {config.n_features} features with scales {scales}, "
              f"{len(data[0])} samples, dense {config.depth}x{config.width}",
        title=f"dense {config.depth}x{config.width} on inputs scaled {scales}")


def main(argv: list[str] | None = None) -> pd.DataFrame:
    """Parses flags (or resumes), runs, prints the table and summary, then plots."""
    return run_main(Config, argv, run, __doc__)


if __name__ == "__main__":
    main()
