"""What a variant name means: modifiers, an optimizer, and their callbacks.

A variant is `baseline` or modifiers joined with `+` (`clipnorm`,
`clipvalue`, `global_clipnorm`, `autoclip`, `agc`, `zclip`, `batchnorm`,
`standardize`, `lower_lr`, the guard actions `rollback`, `rollback_skip`,
`rollback_reset`, and for a SimpleRNN `irnn` or `orthogonal`), optionally
followed by `@optimizer`:
`global_clipnorm+batchnorm@adam` is BatchNormalization, clipping of the
global norm and Adam at its default learning rate. The recipes build the
model from the modifiers; this module parses the names (once, into each
`Row`), lists the factorial design and makes the optimizers and clipping
callbacks.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # Keras loads where an optimizer or a callback is made
    import keras

OPTIMIZERS = ("sgd", "momentum", "adam", "rmsprop")
CLIP_MODES = ("clipnorm", "clipvalue", "global_clipnorm", "autoclip", "agc", "zclip")
# What the recipe's NaNGuard does on an explosion: stop (no modifier), or
# today's rollback (restore, halve the lr, go on), the same followed by
# skipping the next SKIP_BATCHES batches (PaLM), or by resetting the
# optimizer's moments (SPAM).
GUARD_MODES = ("rollback", "rollback_skip", "rollback_reset")
SKIP_BATCHES = 10  # batches rollback_skip skips after each rollback
# SimpleRNN cures: ReLU with an identity (irnn, Le et al. 2015) or a random
# orthogonal (orthogonal) recurrent matrix; see models.sequence_model.
RNN_INITS = ("irnn", "orthogonal")
MODIFIERS = (*CLIP_MODES, "batchnorm", "standardize", "lower_lr", *GUARD_MODES, *RNN_INITS)
DEFAULT_THRESHOLD = {"agc": 0.01, "zclip": 2.5}  # the papers' values


@dataclasses.dataclass(frozen=True)
class Variant:
    """A variant name parsed: `"global_clipnorm+batchnorm@adam"`.

    `baseline` is the variant with no modifier. Modifiers join with `+` (at
    most one clipping mode); `@optimizer` trains the variant with that
    optimizer at its default learning rate instead of the run's `--optimizer`.
    """

    name: str
    mods: frozenset[str]
    optimizer: str | None  # None: the run's --optimizer

    @classmethod
    def parse(cls, name: str) -> Variant:
        """Parses a variant name; raises `ValueError` with the fix."""
        body, _, optimizer = name.partition("@")
        mods = [] if body == "baseline" else body.split("+")
        problem = None
        if optimizer and optimizer not in OPTIMIZERS:
            problem = f"optimizer {optimizer!r}; expected one of {', '.join(OPTIMIZERS)}"
        elif any(m not in MODIFIERS for m in mods) or len(set(mods)) != len(mods):
            problem = f"modifiers {body!r}; expected 'baseline' or distinct ones of {', '.join(MODIFIERS)}"
        elif sum(m in CLIP_MODES for m in mods) > 1:
            problem = f"{body!r} with more than one clipping mode; pick one"
        elif sum(m in GUARD_MODES for m in mods) > 1 or sum(m in RNN_INITS for m in mods) > 1:
            problem = f"{body!r} with more than one guard action or recurrent init; pick one"
        if problem:
            raise ValueError(
                f"--variants received {name!r}: {problem} (joined with '+', "
                "optionally @optimizer, e.g. global_clipnorm+batchnorm@adam).")
        return cls(name, frozenset(mods), optimizer or None)

    @property
    def clip(self) -> str | None:
        """The clipping mode, or None."""
        return next((m for m in CLIP_MODES if m in self.mods), None)

    @property
    def guard(self) -> dict:
        """The NaNGuard arguments of its guard action (empty: the recipe's stop)."""
        mode = next((m for m in GUARD_MODES if m in self.mods), None)
        if mode is None:
            return {}
        return {"action": "rollback", "skip_batches": SKIP_BATCHES if mode == "rollback_skip" else 0,
                "reset_moments": mode == "rollback_reset"}

    @property
    def rnn_init(self) -> str | None:
        """`irnn`, `orthogonal` or None."""
        return next((m for m in RNN_INITS if m in self.mods), None)


@dataclasses.dataclass(frozen=True)
class Row:
    """One row of a table: a variant of a cell trained with one seed.

    The variant name is parsed once, here: `spec` is its `Variant`, and a
    bad name raises `ValueError` naming it when the row is made.
    """

    variant: str
    cell: str
    seed: int
    spec: Variant = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "spec", Variant.parse(self.variant))

    @property
    def name(self) -> str:
        """Folder and TensorBoard run name, e.g. `baseline-lstm-seed0`."""
        return f"{self.variant}-{self.cell}-seed{self.seed}"


def factorial_variants(clip: str | None = None) -> tuple[str, ...]:
    """BatchNormalization on/off x standardization on/off (x `clip` on/off)."""
    names = ("baseline", "batchnorm", "standardize", "batchnorm+standardize")
    if clip:
        names += tuple(clip if n == "baseline" else f"{clip}+{n}" for n in names)
    return names


def make_optimizer(name: str, learning_rate: float) -> keras.optimizers.Optimizer:
    """`sgd` (plain), `momentum` (SGD, Nesterov-free, 0.9), `adam` or `rmsprop`."""
    import keras  # here, so that parsing variant names needs no backend (--help)

    if name == "momentum":
        return keras.optimizers.SGD(learning_rate=learning_rate, momentum=0.9)
    cls = {"sgd": keras.optimizers.SGD, "adam": keras.optimizers.Adam,
           "rmsprop": keras.optimizers.RMSprop}[name]
    return cls(learning_rate=learning_rate)


def clip_callbacks(clip: str | None, threshold: float | None) -> list[keras.callbacks.Callback]:
    """The callback of a clipping mode: `GradientClipping`, `AutoClip`, `AGC` or `ZClip`.

    `threshold` is the mode's value (AGC's ratio, ZClip's z-score); `None`
    for `agc` and `zclip` is the paper's (`DEFAULT_THRESHOLD`).
    """
    from gradguard.callbacks import AGC, AutoClip, GradientClipping, ZClip

    if clip is None:
        return []
    if clip == "autoclip":
        return [AutoClip(percentile=threshold)]
    if clip == "agc":
        return [AGC(clipping=threshold or DEFAULT_THRESHOLD["agc"])]
    if clip == "zclip":
        return [ZClip(z_threshold=threshold or DEFAULT_THRESHOLD["zclip"])]
    return [GradientClipping(**{clip: threshold})]
