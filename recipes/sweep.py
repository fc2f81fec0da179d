"""What every variant sweep shares: its settings, how a row trains, the run.

`deep_dense` and `rnn_long_seq` train the same rows (variant x cell x
seed) with the same optimizers, clipping modes and reports; each holds
only its data, its model and its defaults. A recipe's Config subclasses
`SweepConfig`: it redeclares a field to change its default or help, adds
its own fields and checks, and sets the class constants (`NAME`,
`DEFAULT_LR`, ...). Its `setup(row, config, x_train)` builds the model and
hands it to `SweepConfig.setup`, which adds the optimizer, the learning
rate, the clipping callback and the guard action of the row's variant;
its `run` calls `run_sweep`, which trains the rows (`experiment.Experiment`)
and writes the report (`report.write_report`).
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
from collections.abc import Callable
from dataclasses import field
from typing import TYPE_CHECKING, ClassVar, Literal

import pandas as pd

from .common import device_name, new_run_dir, write_config
from .console import wrap
from .report import write_report
from .variants import OPTIMIZERS, Row, clip_callbacks, factorial_variants

if TYPE_CHECKING:
    from .experiment import Setup

ClipMode = Literal["none", "clipnorm", "clipvalue", "global_clipnorm", "autoclip"]
# The Config field that holds each clipping mode's threshold; a mode whose
# field a recipe lacks gets the paper's value (`variants.clip_callbacks`).
THRESHOLD_FIELDS = {"clipnorm": "clipnorm", "clipvalue": "clipvalue",
                    "global_clipnorm": "global_clipnorm", "autoclip": "autoclip_percentile",
                    "agc": "agc", "zclip": "zclip"}


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Settings of every recipe that trains rows: sizes, seeds, results folder, resume."""

    NAME: ClassVar[str] = ""  # the recipe: python -m recipes.<NAME>, runs/<NAME>-<time>
    QUICK_SIZES: ClassVar[tuple[int, int]] = (512, 128)  # (n_train, n_val) under --quick
    AT_LEAST_ONE: ClassVar[tuple[str, ...]] = ("n_train", "n_val", "batch_size", "epochs", "seeds")

    # Training samples.
    n_train: int = field(default=4096, metadata={"help": "training samples"})
    # Validation samples.
    n_val: int = field(default=1024, metadata={"help": "validation samples"})
    # Mini-batch size.
    batch_size: int = field(default=64, metadata={"help": "mini-batch size"})
    # Epochs per row.
    epochs: int = field(default=5, metadata={"help": "epochs per row"})
    # Seed of the data and of the first row's weights and shuffles.
    seed: int = field(default=0, metadata={"help": "random seed"})
    # Rows per variant (and cell), with seeds seed, seed + 1, ...
    seeds: int = field(default=1, metadata={"help": "seeds per variant and cell (spread)"})
    # Smoke test: QUICK_SIZES samples, 1 epoch.
    quick: bool = field(default=False, metadata={"help": "small, fast run (fewer samples, 1 epoch)"})
    # Results folder; None makes a new runs/<NAME>-<timestamp>.
    out: str | None = field(default=None, metadata={"help": (
        "new or empty folder for the results; default: runs/<recipe>-<time>")})
    # Folder of an interrupted run to finish (its config.json gives the settings).
    resume: str | None = field(default=None, metadata={"help": (
        "finish the interrupted run in this folder, skipping its finished rows")})

    def validate(self) -> str | None:
        """Returns what is wrong with the settings, or None."""
        for name in self.AT_LEAST_ONE:
            if getattr(self, name) < 1:
                return f"--{name.replace('_', '-')} received {getattr(self, name)}; expected an int >= 1."
        if self.seed < 0:
            return f"--seed received {self.seed}; expected an int >= 0."
        return None

    @property
    def sizes(self) -> tuple[int, int, int]:
        """`(n_train, n_val, epochs)`, reduced under `--quick`."""
        if self.quick:
            return min(self.n_train, self.QUICK_SIZES[0]), min(self.n_val, self.QUICK_SIZES[1]), 1
        return self.n_train, self.n_val, self.epochs


@dataclasses.dataclass(frozen=True)
class SweepConfig(RunConfig):
    """Settings every variant sweep shares; a recipe subclasses it."""

    CELL: ClassVar[str] = ""  # the cell column of a recipe with one architecture
    # The learning rate of each optimizer when --lr is not given.
    DEFAULT_LR: ClassVar[dict[str, float]] = {}
    POSITIVE: ClassVar[tuple[str, ...]] = ("lr", "lower_lr", "clipnorm", "clipvalue", "global_clipnorm")

    # Variants to train, in this order: modifiers joined by "+", "@adam" etc.
    # for another optimizer (baseline first: it is the reference).
    variants: tuple[str, ...] = field(default=("baseline",), metadata={"help": (
        "variants to train: baseline, or modifiers joined by + , optionally @optimizer")})
    # 2x2 BatchNormalization x standardization instead of --variants.
    factorial: bool = field(default=False, metadata={"help": (
        "train BatchNormalization on/off x input standardization on/off instead of --variants")})
    # With --factorial, a clipping mode as a third on/off factor.
    factorial_clip: ClipMode = field(default="none", metadata={"help": (
        "with --factorial, also a clipping mode on/off (2x2x2 variants)")})
    # Optimizer of every variant without an @optimizer.
    optimizer: Literal[OPTIMIZERS] = field(default="sgd", metadata={"help": (
        "optimizer (momentum: SGD with momentum 0.9)")})
    # None: DEFAULT_LR[optimizer].
    lr: float | None = field(default=None, metadata={"help": (
        "learning rate of --optimizer; none: the recipe's default for that optimizer")})
    # None: `lower_lr_of(lr)`, the recipe's fraction of the learning rate.
    lower_lr: float | None = field(default=None, metadata={"help": (
        "learning rate of the lower_lr modifier; none: the recipe's fraction of the learning rate")})
    # Per-variable norm limit of the clipnorm modifier.
    clipnorm: float = field(default=1.0, metadata={"help": "threshold of clipnorm"})
    # Element-wise limit of the clipvalue modifier.
    clipvalue: float = field(default=0.5, metadata={"help": "threshold of clipvalue"})
    # Global norm limit of the global_clipnorm modifier.
    global_clipnorm: float = field(default=1.0, metadata={"help": "threshold of global_clipnorm"})
    # Percentile of past norms the autoclip modifier clips to (the paper's 10).
    autoclip_percentile: float = field(default=10.0, metadata={"help": "percentile of autoclip"})

    def lower_lr_of(self, lr: float) -> float:
        """The lower_lr modifier's learning rate when --lower-lr is not given."""
        raise NotImplementedError

    def row_cells(self) -> tuple[str, ...]:
        """The cells every variant is trained with: `(CELL,)` unless a recipe has several."""
        return (self.CELL,)

    def validate(self) -> str | None:
        """Returns what is wrong with the settings, or None."""
        problem = super().validate()
        if problem:
            return problem
        for name in self.POSITIVE:
            value = getattr(self, name)
            if value is not None and not 0 < value < math.inf:
                return f"--{name.replace('_', '-')} received {value}; expected a finite number > 0."
        if not 0 < self.autoclip_percentile <= 100:
            return f"--autoclip-percentile received {self.autoclip_percentile}; expected a number in (0, 100]."
        if len(set(self.variants)) != len(self.variants):
            return f"--variants received {' '.join(self.variants)}; name each once."
        default = next(f.default for f in dataclasses.fields(self) if f.name == "variants")
        if self.factorial and self.variants != default:
            return (f"--factorial replaces --variants (received {' '.join(self.variants)}); "
                    "drop one of the two flags.")
        if self.factorial_clip != "none" and not self.factorial:
            return (f"--factorial-clip received {self.factorial_clip} without --factorial, which "
                    "it is a factor of; add --factorial, or use --variants "
                    f"{self.factorial_clip} instead.")
        self.rows()  # every variant parsed: a ValueError names the bad one
        return None

    def rows(self) -> list[Row]:
        """Every variant x cell x seed, in table order."""
        variants = factorial_variants(None if self.factorial_clip == "none" else self.factorial_clip) \
            if self.factorial else self.variants
        return [Row(v, c, self.seed + i) for v in variants for c in self.row_cells() for i in range(self.seeds)]

    def setup(self, row: Row, build: Callable, model: str, kernel: str = "") -> Setup:
        """How to train `row`: the recipe's model with its variant's optimizer, lr, clipping and guard.

        Args:
            row: The row; `row.spec` is its parsed variant.
            build: Makes the row's fresh, uncompiled model.
            model: The model as the table shows it.
            kernel: The recurrent kernel that runs (`common.rnn_kernel`); "" for none.
        """
        from .experiment import Setup

        variant = row.spec
        optimizer = variant.optimizer or self.optimizer
        lr = self.lr if self.lr is not None and optimizer == self.optimizer else self.DEFAULT_LR[optimizer]
        if "lower_lr" in variant.mods:
            lr = self.lower_lr if self.lower_lr is not None else self.lower_lr_of(lr)
        threshold = getattr(self, THRESHOLD_FIELDS.get(variant.clip, ""), None)
        return Setup(build=build, optimizer=optimizer, learning_rate=lr,
                     callbacks=clip_callbacks(variant.clip, threshold), model=model, kernel=kernel,
                     guard=variant.guard)


def run_sweep(config: SweepConfig, out_dir: str | pathlib.Path | None, data: tuple, *,
              trivial_mse: float, setup: Callable[[Row], Setup], about: str, title: str,
              kernels: str = "") -> pd.DataFrame:
    """Trains every row not yet in `out_dir/results.csv` and writes the report.

    Args:
        config: The settings.
        out_dir: The run folder (new, or the one being resumed); `None`:
            `config.resume`, or a new folder from `config.out`.
        data: `(x_train, y_train, x_val, y_val)`.
        trivial_mse: Validation MSE of the best constant prediction.
        setup: Row -> `Setup` (the recipe's model through `SweepConfig.setup`).
        about: The task and model in words, for the first line and the caption.
        title: The figures' title.
        kernels: The recurrent kernels that run, if any (`"simple_rnn generic, ..."`).

    Returns:
        The results table, one row per variant x cell x seed; `table.attrs`
        holds `"summary"`, `"spread"`, `"threshold"` and `"out_dir"`.
    """
    import keras

    from .experiment import Experiment

    name = config.NAME
    if out_dir is None:
        out_dir = config.resume or new_run_dir(config.out, name)
    out_dir = pathlib.Path(out_dir)
    if not config.resume:
        write_config(config, out_dir)
    _, _, epochs = config.sizes
    device, backend = device_name(), keras.backend.backend()
    rows = config.rows()
    on = f"{backend} on {device}" + (f" (kernels: {kernels})" if kernels else "")
    print(wrap(f"[{name}] {about}, {len(rows)} rows (variant x cell x seed); {on}; "
               f"results in {out_dir.resolve()}"))
    table = Experiment(out_dir, rows, setup, data, epochs=epochs, batch_size=config.batch_size,
                       trivial_mse=trivial_mse, device=device).run()
    return write_report(
        table, out_dir, title=title,
        caption=f"{name}: {about}, {epochs} epochs, batch {config.batch_size}, data seed "
                f"{config.seed}. Backend {backend}, device {device}"
                + (f", recurrent kernels: {kernels}." if kernels else "."))
