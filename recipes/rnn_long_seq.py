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

from gradguard.callbacks import AutoClip, GradientClipping
from gradguard.datasets import ADDING_PROBLEM_BASELINE_MSE, adding_problem

from .common import device_name, new_run_dir, parse_config, write_config
from .models import sequence_model
from .runner import Variant, report, train_variant

NAME = "rnn_long_seq"
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
    """Settings of the long-sequence RNN recipe."""

    # Which variants to train, in this order (baseline first: it is the reference).
    variants: tuple[VariantName, ...] = field(
        default=VARIANTS, metadata={"help": "variants to train"})
    # simple_rnn explodes; lstm and gru gate their state and usually do not.
    cell: Literal["simple_rnn", "lstm", "gru"] = field(
        default="simple_rnn", metadata={"help": "recurrent cell"})
    # Size of the recurrent state.
    units: int = field(default=32, metadata={"help": "recurrent units"})
    # Time steps per sequence; the gradient crosses all of them.
    seq_len: int = field(default=100, metadata={"help": "sequence length (>= 2)"})
    # Training sequences: 64 steps per epoch at batch 32.
    n_train: int = field(default=2048, metadata={"help": "training sequences"})
    # Validation sequences (drawn with seed + 1).
    n_val: int = field(default=512, metadata={"help": "validation sequences"})
    # Mini-batch size.
    batch_size: int = field(default=32, metadata={"help": "mini-batch size"})
    # Epochs per variant; 3 is enough for the stable runs to settle.
    epochs: int = field(default=3, metadata={"help": "epochs per variant"})
    # Plain SGD learning rate; 0.1 is the step size that explodes.
    lr: float = field(default=0.1, metadata={"help": "SGD learning rate of every variant but lower_lr"})
    # Learning rate of the lower_lr variant; 0.02 trains fine.
    lower_lr: float = field(default=0.02, metadata={"help": "learning rate of the lower_lr variant"})
    # Multiplies the value channel of the inputs (1.0: values in [0, 1)).
    input_scale: float = field(default=1.0, metadata={"help": "scale of the value channel"})
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
    # Smoke test: 512 training and 256 validation sequences, 1 epoch.
    quick: bool = field(default=False, metadata={"help": "small, fast run (512 sequences, 1 epoch)"})
    # Results folder; None makes a new runs/rnn_long_seq-<timestamp>.
    out: str | None = field(
        default=None,
        metadata={"help": "new or empty folder for the results; default: runs/rnn_long_seq-<time>"})

    def validate(self) -> str | None:
        """Returns what is wrong with the settings, or None."""
        for name in ("units", "n_train", "n_val", "batch_size", "epochs"):
            if getattr(self, name) < 1:
                return f"--{name.replace('_', '-')} received {getattr(self, name)}; expected an int >= 1."
        if self.seq_len < 2:
            return f"--seq-len received {self.seq_len}; expected an int >= 2 (one marker per half)."
        for name in ("lr", "lower_lr", "input_scale", "clipnorm", "clipvalue", "global_clipnorm"):
            value = getattr(self, name)
            if not value > 0 or value == float("inf"):
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
            return min(self.n_train, 512), min(self.n_val, 256), 1
        return self.n_train, self.n_val, self.epochs


# ---------------------------------------------------------------------------
# Data, model, variants
# ---------------------------------------------------------------------------


def make_data(config: Config):
    """`(x_train, y_train, x_val, y_val)` of the adding problem."""
    n_train, n_val, _ = config.sizes
    x, y = adding_problem(n_train, config.seq_len, seed=config.seed, input_scale=config.input_scale)
    x_val, y_val = adding_problem(n_val, config.seq_len, seed=config.seed + 1,
                                  input_scale=config.input_scale)
    return x, y, x_val, y_val


def make_variant(name: str, config: Config, x_train) -> Variant:
    """The `Variant` called `name`: model builder, learning rate, callbacks."""
    label = f"{config.cell}({config.units})"

    def build(**kwargs):
        return lambda: sequence_model(config.seq_len, 2, cell=config.cell, units=config.units, **kwargs)

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
    print(f"[{NAME}] adding problem, seq_len {config.seq_len}, {len(data[0])} training "
          f"sequences, {config.cell}({config.units}), plain SGD; device {device}; "
          f"results in {out_dir}")
    results = []
    for name in config.variants:
        results.append(train_variant(
            make_variant(name, config, data[0]), data,
            epochs=epochs, batch_size=config.batch_size, seed=config.seed,
            out_dir=out_dir, trivial_mse=ADDING_PROBLEM_BASELINE_MSE, device=device,
        ))
    table, summary = report(
        results, out_dir,
        title=f"{config.cell}({config.units}) on the adding problem, seq_len {config.seq_len}, SGD",
        trivial_mse=ADDING_PROBLEM_BASELINE_MSE,
        caption=f"{NAME}: {config.cell}({config.units}), seq_len {config.seq_len}, "
                f"seed {config.seed}. Device: {device}",
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
