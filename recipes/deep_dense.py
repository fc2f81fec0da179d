"""
Title: Exploding gradients in a deep MLP fed poorly scaled inputs
Description: Train a 20-layer ReLU network on a regression task whose
features span seven orders of magnitude (1e-3 to 1e4), once per variant.

`poorly_scaled_regression` draws 8 features with standard deviations spread
log-uniformly from 1e-3 to 1e4; the target depends equally on all of them
(through the *standardized* features), so predicting the mean scores an MSE
of about 1.0 (the `trivial_mse` column, computed on the validation split).

What drives the explosion with the defaults: the poorly scaled inputs,
amplified by depth. A feature of scale 1e4 makes the first layer's
pre-activations, and the gradient of every kernel above it, about 1e4 times
larger than unit-scale data would; 20 layers then multiply the backward
signal once more per layer. The very first gradient already has a norm of
about 34, one SGD step at lr=0.01 makes the weights large enough that the
next gradients are about 1e3 and then 1e10, and the fourth is non-finite
(measured on CPU, seed 0): `NaNGuard` catches the non-finite gradient,
and the update is skipped so the weights stay finite. Plain SGD is used on
purpose, so the step is exactly lr times the gradient.

Variants (all plain SGD, all with `GradientNormLogger` and
`NaNGuard(action="stop")`):

- `baseline`: lr=0.01 on the raw features: the setting that explodes.
- `clipnorm`, `clipvalue`, `global_clipnorm`: Keras' clipping modes via
  `GradientClipping` (thresholds 1.0, 0.5, 1.0).
- `autoclip`: `AutoClip(percentile=10)`.
- `batchnorm`: `BatchNormalization` after every hidden Dense.
- `standardize`: a `Normalization` layer adapted on the training inputs:
  the cure for this cause.
- `lower_lr`: lr=1e-6, about what raw 1e4-scale inputs need to stay stable;
  it stays finite but the small-scale features barely move.

What you will see: one line per variant and epoch, a NaNGuard line where it
fires, then the results table (final losses, the constant-prediction MSE,
max and median unclipped gradient norm, first non-finite step, NaNGuard
action, epochs run, wall time, device), a summary computed from it with a
suggested clipping threshold (Deep Learning Tuning Playbook: the 90th
percentile of the unclipped norms before the explosion), and in the run
folder: `results.csv`, `results.md`, `summary.txt`, `config.json`,
`grad_norms.csv`, `grad_norms.png`, `loss.png`, `nan_guard/<variant>.json`
and `tensorboard/<variant>/` (`tensorboard --logdir <run folder>`).

Run it with `python -m recipes.deep_dense` (`--quick` for a smoke run,
`--help` for every flag).

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
from typing import Literal

import numpy as np
import pandas as pd

from gradguard.callbacks import AutoClip, GradientClipping
from gradguard.datasets import poorly_scaled_regression

from .common import device_name, new_run_dir, parse_config, write_config
from .models import deep_dense
from .runner import Variant, report, train_variant

NAME = "deep_dense"
VariantName = Literal[
    "baseline", "clipnorm", "clipvalue", "global_clipnorm", "autoclip",
    "batchnorm", "standardize", "lower_lr",
]
VARIANTS: tuple[str, ...] = VariantName.__args__


# ---------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Config:
    """Settings of the deep MLP on poorly scaled inputs recipe."""

    # Which variants to train, in this order (baseline first: it is the reference).
    variants: tuple[VariantName, ...] = field(
        default=VARIANTS, metadata={"help": "variants to train"})
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
    # Validation samples (drawn with seed + 1).
    n_val: int = field(default=1024, metadata={"help": "validation samples"})
    # Mini-batch size.
    batch_size: int = field(default=64, metadata={"help": "mini-batch size"})
    # Epochs per variant.
    epochs: int = field(default=5, metadata={"help": "epochs per variant"})
    # Plain SGD learning rate; 0.01 on raw 1e4-scale inputs explodes.
    lr: float = field(default=0.01, metadata={"help": "SGD learning rate of every variant but lower_lr"})
    # Learning rate of the lower_lr variant: what raw inputs need to stay finite.
    lower_lr: float = field(default=1e-6, metadata={"help": "learning rate of the lower_lr variant"})
    # Per-variable norm limit of the clipnorm variant.
    clipnorm: float = field(default=1.0, metadata={"help": "threshold of the clipnorm variant"})
    # Element-wise limit of the clipvalue variant.
    clipvalue: float = field(default=0.5, metadata={"help": "threshold of the clipvalue variant"})
    # Global norm limit of the global_clipnorm variant.
    global_clipnorm: float = field(default=1.0, metadata={"help": "threshold of the global_clipnorm variant"})
    # Percentile of past norms the autoclip variant clips to (the paper's 10).
    autoclip_percentile: float = field(default=10.0, metadata={"help": "percentile of the autoclip variant"})
    # Seed of the data, the weights and the shuffles.
    seed: int = field(default=0, metadata={"help": "random seed"})
    # Smoke test: 512 training and 128 validation samples, 1 epoch.
    quick: bool = field(default=False, metadata={"help": "small, fast run (512 samples, 1 epoch)"})
    # Results folder; None makes a new runs/deep_dense-<timestamp>.
    out: str | None = field(
        default=None,
        metadata={"help": "new or empty folder for the results; default: runs/deep_dense-<time>"})

    def validate(self) -> str | None:
        """Returns what is wrong with the settings, or None."""
        for name in ("depth", "width", "n_features", "n_train", "n_val", "batch_size", "epochs"):
            if getattr(self, name) < 1:
                return f"--{name.replace('_', '-')} received {getattr(self, name)}; expected an int >= 1."
        low, high = self.scale_range
        if not (0 < low <= high < math.inf):
            return (f"--scale-range received {low:g} {high:g}; expected two finite numbers "
                    "0 < smallest <= largest, e.g. 1e-3 1e4.")
        for name in ("lr", "lower_lr", "clipnorm", "clipvalue", "global_clipnorm"):
            value = getattr(self, name)
            if not 0 < value < math.inf:
                return f"--{name.replace('_', '-')} received {value}; expected a finite number > 0."
        if not 0 < self.autoclip_percentile <= 100:
            return f"--autoclip-percentile received {self.autoclip_percentile}; expected a number in (0, 100]."
        if self.seed < 0:
            return f"--seed received {self.seed}; expected an int >= 0."
        if len(set(self.variants)) != len(self.variants):
            return f"--variants received {' '.join(self.variants)}; name each variant once."
        return None

    @property
    def sizes(self) -> tuple[int, int, int]:
        """`(n_train, n_val, epochs)`, reduced under `--quick`."""
        if self.quick:
            return min(self.n_train, 512), min(self.n_val, 128), 1
        return self.n_train, self.n_val, self.epochs


# ---------------------------------------------------------------------------
# Data, model, variants
# ---------------------------------------------------------------------------


def make_data(config: Config):
    """`(x_train, y_train, x_val, y_val)` of the poorly scaled regression."""
    n_train, n_val, _ = config.sizes
    kwargs = dict(scale_range=config.scale_range)
    x, y = poorly_scaled_regression(n_train, config.n_features, seed=config.seed, **kwargs)
    x_val, y_val = poorly_scaled_regression(n_val, config.n_features, seed=config.seed + 1, **kwargs)
    return x, y, x_val, y_val


def trivial_mse(y_train: np.ndarray, y_val: np.ndarray) -> float:
    """Validation MSE of always predicting the training target's mean."""
    return float(np.mean((y_val.astype(np.float64) - y_train.astype(np.float64).mean()) ** 2))


def make_variant(name: str, config: Config, x_train) -> Variant:
    """The `Variant` called `name`: model builder, learning rate, callbacks."""
    label = f"dense {config.depth}x{config.width}"

    def build(**kwargs):
        return lambda: deep_dense(config.n_features, depth=config.depth, width=config.width, **kwargs)

    clip = {"clipnorm": config.clipnorm, "clipvalue": config.clipvalue,
            "global_clipnorm": config.global_clipnorm}
    if name in clip:
        return Variant(name, f"{label}, {name}={clip[name]:g}", build(), config.lr,
                       lambda: [GradientClipping(**{name: clip[name]})])
    if name == "autoclip":
        return Variant(name, f"{label}, autoclip p{config.autoclip_percentile:g}", build(), config.lr,
                       lambda: [AutoClip(percentile=config.autoclip_percentile)])
    if name == "batchnorm":
        return Variant(name, f"{label}+bn", build(batch_norm=True), config.lr)
    if name == "standardize":
        return Variant(name, f"standardize+{label}", build(standardize=x_train), config.lr)
    if name == "lower_lr":
        return Variant(name, label, build(), config.lower_lr)
    return Variant(name, label, build(), config.lr)


# ---------------------------------------------------------------------------
# Run and report
# ---------------------------------------------------------------------------


def run(config: Config, out_dir: str | pathlib.Path | None = None) -> pd.DataFrame:
    """Trains every variant and writes the results into a run folder.

    Args:
        config: The settings.
        out_dir: The run folder; `None` (default) makes one from `config.out`
            with `common.new_run_dir`.

    Returns:
        The results table, one row per variant; `table.attrs` holds
        `"summary"` (lines of text) and `"out_dir"`.
    """
    out_dir = new_run_dir(config.out, NAME) if out_dir is None else pathlib.Path(out_dir)
    write_config(config, out_dir)
    data = make_data(config)
    _, _, epochs = config.sizes
    device = device_name()
    baseline_mse = trivial_mse(data[1], data[3])
    print(f"[{NAME}] poorly scaled regression, {config.n_features} features with scales "
          f"{config.scale_range[0]:g}..{config.scale_range[1]:g}, {len(data[0])} samples, "
          f"dense {config.depth}x{config.width}, plain SGD; device {device}; results in {out_dir}")
    results = []
    for name in config.variants:
        results.append(train_variant(
            make_variant(name, config, data[0]), data,
            epochs=epochs, batch_size=config.batch_size, seed=config.seed,
            out_dir=out_dir, trivial_mse=baseline_mse, device=device,
        ))
    table, summary = report(
        results, out_dir,
        title=f"dense {config.depth}x{config.width} on inputs scaled "
              f"{config.scale_range[0]:g}..{config.scale_range[1]:g}, SGD",
        trivial_mse=baseline_mse,
        caption=f"{NAME}: dense {config.depth}x{config.width}, feature scales "
                f"{config.scale_range[0]:g}..{config.scale_range[1]:g}, seed {config.seed}. "
                f"Device: {device}",
    )
    table.attrs.update(summary=summary, out_dir=str(out_dir))
    return table


def main(argv: list[str] | None = None) -> pd.DataFrame:
    """Parses flags, runs the recipe, prints the table and the summary."""
    config = parse_config(Config, argv, description=__doc__, prog=f"python -m recipes.{NAME}")
    table = run(config)
    with pd.option_context("display.width", 250, "display.max_columns", None):
        print(table.to_string(index=False))
    print("\n".join(["", "Summary:", *(f"- {line}" for line in table.attrs["summary"])]))
    print(f"Results written to {table.attrs['out_dir']}")
    return table


if __name__ == "__main__":
    main()
