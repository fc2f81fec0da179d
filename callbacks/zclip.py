"""`ZClip`: clip the gradient norm when its z-score against an EMA is too high."""

from __future__ import annotations

from .clipping_callback import ClippingCallback
from .monitor_clipping import check_zclip


class ZClip(ClippingCallback):
    """Z-score clipping of the global gradient norm (ZClip, Kumar et al. 2025).

    The `GradientMonitor` (installed on `on_train_begin` if absent) keeps an
    exponential moving average of the global norm's mean and variance inside
    the compiled step. The first `warmup_steps` finite norms initialize them
    (their mean and population variance) and are not clipped. After that,
    with `z = (norm - mean) / std`, a step with `z > z_threshold` has its
    global norm clipped to `mean + z_threshold * std / (z / z_threshold)`:
    the larger the outlier, the closer to the mean it is pulled (the
    paper's "adaptive scaling"). The EMA (factor `alpha`) is then fed the
    norm after clipping, as in the reference code, so a spike does not
    inflate the statistics that judge the next one.

    **NaN-safe.** A non-finite norm never enters the statistics (the step
    is skipped by the monitor and the EMA stays as it was); in the
    reference code one NaN norm leaves the mean NaN for good.

    It works after the all-reduce under `tf.distribute` and under JAX. The
    threshold of every step is recorded (`GradientRecord.threshold`: the
    norm clipped to, or the boundary `mean + z_threshold * std` when not
    clipped, `inf` in the warm-up). The statistics are telemetry: not in
    checkpoints, kept with the monitor across `fit` calls (`reset=True`
    starts a new warm-up each `fit`).

    Args:
        z_threshold: float > 0. Defaults to 2.5, the paper's choice.
        alpha: float in [0, 1), the EMA factor. Defaults to 0.97.
        warmup_steps: int >= 1. Defaults to 25.
        reset: bool, forget the statistics at the start of each `fit`.
            Defaults to `False`.

    Raises:
        ValueError: on bad arguments; in `on_train_begin`, if another
            clipping mode is on.

    Example:

    ```python
    model.fit(x, y, callbacks=[ZClip(z_threshold=2.5)])
    ```

    References:
        Kumar, Owen, Chowdhury and Güra, "ZClip: Adaptive Spike Mitigation
        for LLM Pre-Training", 2025, https://arxiv.org/abs/2504.02507.
    """

    def __init__(self, z_threshold: float = 2.5, alpha: float = 0.97,
                 warmup_steps: int = 25, reset: bool = False):
        super().__init__()
        check_zclip("ZClip", z_threshold, alpha, warmup_steps)
        self.z_threshold, self.alpha = float(z_threshold), float(alpha)
        self.warmup_steps, self.reset = int(warmup_steps), bool(reset)

    def configure(self, monitor) -> bool:
        rebuild = monitor.set_zclip(self.z_threshold, self.alpha, self.warmup_steps)
        if self.reset:
            monitor.adaptive.reset_statistics()
        return rebuild

    def describe(self) -> str:
        return f"ZClip(z_threshold={self.z_threshold})"
