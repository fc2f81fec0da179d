"""`AGC`: clip each unit's gradient to a fraction of its weight norm."""

from __future__ import annotations

from .clipping_callback import ClippingCallback
from .monitor_clipping import check_agc


class AGC(ClippingCallback):
    """Adaptive gradient clipping, unit-wise (AGC, Brock et al. 2021).

    Each step, inside the compiled train step, every output unit's gradient
    `G_i` is clipped to `clipping * max(||W_i||, eps)`, where `W_i` is that
    unit's weights: a column of a `Dense` kernel `(in, out)`, a filter of a
    `Conv` kernel `(..., in, out)`, a column of a recurrent kernel; a bias
    or a scalar is one unit. A step can thus change no unit's weights by
    more than about `clipping * lr` of their size, whatever the loss does,
    and no global threshold has to be tuned. Matches
    `optax.adaptive_grad_clip` (tested against it).

    It runs in the `GradientMonitor` (installed on `on_train_begin` if
    absent): after the all-reduce under `tf.distribute`, under JAX's
    stateless step, and with a `LossScaleOptimizer` (the loss scale is
    taken into account). The global norm after clipping is recorded
    (`GradientRecord.norm_clipped`). Clipping is on for the `fit` calls
    this callback is passed to and off again at `on_train_end`, switched by
    a variable (no retrace on a second `fit`); nothing of it is saved in
    checkpoints.

    The paper clips every layer but the classifier head; this callback
    clips every trainable variable, as optax does.

    Args:
        clipping: float > 0, the ratio lambda. Defaults to 0.01 (the
            paper's value for large batches; it suggests larger for small
            batches).
        eps: float >= 0, the floor on the weight norm, so that
            zero-initialized weights can move. Defaults to 1e-3.

    Raises:
        ValueError: on bad arguments; in `on_train_begin`, if another
            clipping mode is on (`clipnorm`, `clipvalue`, `global_clipnorm`,
            AutoClip, ZClip).

    Example:

    ```python
    model.fit(x, y, callbacks=[AGC(clipping=0.01)])
    ```

    References:
        Brock, De, Smith and Simonyan, "High-Performance Large-Scale Image
        Recognition Without Normalization", ICML 2021,
        https://arxiv.org/abs/2102.06171.
    """

    def __init__(self, clipping: float = 0.01, eps: float = 1e-3):
        super().__init__()
        check_agc("AGC", clipping, eps)
        self.clipping, self.eps = float(clipping), float(eps)

    def configure(self, monitor) -> bool:
        return monitor.set_agc(self.clipping, self.eps)

    def describe(self) -> str:
        return f"AGC(clipping={self.clipping})"
