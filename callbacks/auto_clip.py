"""`AutoClip`: clip to a percentile of the gradient norms seen so far."""

from __future__ import annotations

from .clipping_callback import ClippingCallback
from .validation import check, check_int, is_number


class AutoClip(ClippingCallback):
    """Adaptive gradient clipping (AutoClip, Seetharaman et al. 2020).

    Each step the global gradient norm is clipped to the `percentile`-th
    percentile of the norms of the last `history` steps (the current one
    included), computed inside the compiled train step from the
    `GradientMonitor`'s ring buffer. No threshold to tune: the clip follows
    the scale the model's gradients actually have. The threshold used at each
    step is recorded (`GradientRecord.threshold`).

    Clipping is on for the `fit` calls this callback is passed to and off
    again at `on_train_end`; it is switched by a variable, so a second `fit`
    does not retrace. The norms it clips to stay in the monitor's ring
    buffer, which lives with the model: a second `fit` starts from the
    distribution the first one ended with.

    Args:
        percentile: float in (0, 100]. Defaults to 10.0, the paper's choice.
        history: int >= 1, how many recent steps form the distribution.
            Defaults to 1000.

    Raises:
        ValueError: on bad arguments; in `on_train_begin`, if the optimizer
            already clips (`clipnorm`, `clipvalue`, `global_clipnorm`).

    Example:

    ```python
    model.fit(x, y, callbacks=[AutoClip(percentile=10.0)])
    ```

    References:
        Seetharaman, Wichern, Pardo, Le Roux, "AutoClip: Adaptive Gradient
        Clipping for Source Separation Networks", IEEE MLSP 2020.
    """

    def __init__(self, percentile: float = 10.0, history: int = 1000):
        super().__init__()
        check(
            is_number(percentile) and 0 < percentile <= 100,
            "AutoClip", "percentile", percentile, "a number in (0, 100]",
        )
        check_int("AutoClip", "history", history, 1)
        self.percentile = float(percentile)
        self.history = int(history)

    @property
    def min_history(self) -> int:
        return self.history

    def configure(self, monitor) -> bool:
        return monitor.set_autoclip(self.percentile, self.history)

    def describe(self) -> str:
        return f"AutoClip(percentile={self.percentile})"
