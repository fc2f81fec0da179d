"""What a variant name means: modifiers, an optimizer, and their callbacks.

A variant is `baseline` or modifiers joined with `+` (`clipnorm`,
`clipvalue`, `global_clipnorm`, `autoclip`, `batchnorm`, `standardize`,
`lower_lr`), optionally followed by `@optimizer`:
`global_clipnorm+batchnorm@adam` is BatchNormalization, clipping of the
global norm and Adam at its default learning rate. The recipes build the
model from the modifiers; this module parses the names, lists the
factorial design and makes the optimizers and clipping callbacks.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # Keras loads where an optimizer or a callback is made
    import keras

OPTIMIZERS = ("sgd", "momentum", "adam", "rmsprop")
CLIP_MODES = ("clipnorm", "clipvalue", "global_clipnorm", "autoclip")
MODIFIERS = (*CLIP_MODES, "batchnorm", "standardize", "lower_lr")
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
        if problem:
            raise ValueError(
                f"--variants received {name!r}: {problem} (joined with '+', "
                "optionally @optimizer, e.g. global_clipnorm+batchnorm@adam).")
        return cls(name, frozenset(mods), optimizer or None)

    @property
    def clip(self) -> str | None:
        """The clipping mode, or None."""
        return next((m for m in CLIP_MODES if m in self.mods), None)


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


def clip_callbacks(clip: str | None, threshold: float) -> list[keras.callbacks.Callback]:
    """The callback of a clipping mode: `GradientClipping` or `AutoClip`."""
    from gradguard.callbacks import AutoClip, GradientClipping

    if clip is None:
        return []
    if clip == "autoclip":
        return [AutoClip(percentile=threshold)]
    return [GradientClipping(**{clip: threshold})]
