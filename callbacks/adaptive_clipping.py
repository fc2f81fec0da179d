"""Pure helpers for AGC and ZClip, written with `keras.ops` in optax's style.

`unitwise_norm` and `adaptive_grad_clip` follow Brock et al. (2021) and
`optax.adaptive_grad_clip`; `zclip_update` follows the ZClip paper's
equations and its reference code. They hold no state: `ZClipState` goes in
and a new one comes out, and the `GradientMonitor` that calls them inside
its compiled step owns the variables.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

from keras import ops

# Floor on a unit's gradient norm in AGC's division (optax uses the same).
GRAD_NORM_FLOOR = 1e-6


def unitwise_norm(x) -> object:
    """L2 norm of each output unit of a tensor, broadcastable against it.

    Keras kernels keep the output units on the last axis (`Dense`:
    `(in, out)`, `Conv2D`: `(h, w, in, out)`, `SimpleRNN`'s recurrent
    kernel: `(units, units)`), so for two or more dimensions the norm
    reduces over every axis but the last, keeping dimensions. A bias or a
    scalar (at most one dimension) is one unit: its whole norm.

    Args:
        x: a tensor.

    Returns:
        A float32 tensor: shape `(1, ..., 1, units)` for two or more
        dimensions, the shape of `x` broadcast from a scalar otherwise.
    """
    x = ops.cast(x, "float32")
    if len(x.shape) <= 1:
        return ops.sqrt(ops.sum(ops.square(x)))
    axes = tuple(range(len(x.shape) - 1))
    return ops.sqrt(ops.sum(ops.square(x), axis=axes, keepdims=True))


def adaptive_grad_clip(
    grads: Sequence, params: Sequence, clipping: float = 0.01,
    eps: float = 1e-3,
) -> list:
    """Clips each unit's gradient to `clipping` times its weight norm (AGC).

    For each unit i, `max_i = clipping * max(||W_i||, eps)`; a gradient
    `G_i` with `||G_i|| > max_i` becomes `G_i * max_i / ||G_i||`, others
    are unchanged. The `eps` floor lets zero-initialized weights (biases)
    move at all.

    Args:
        grads: list of gradient tensors (or `None`).
        params: the weights, one per gradient.
        clipping: float > 0, the ratio lambda. Defaults to 0.01, the paper's
            choice for large batches.
        eps: float >= 0, the floor on the weight norm. Defaults to 1e-3.

    Returns:
        The clipped gradients, same dtypes (`None` stays `None`).

    References:
        Brock, De, Smith and Simonyan, "High-Performance Large-Scale Image
        Recognition Without Normalization", ICML 2021,
        https://arxiv.org/abs/2102.06171.
    """
    out = []
    for g, p in zip(grads, params):
        if g is None:
            out.append(None)
            continue
        g_norm = unitwise_norm(g)
        max_norm = ops.maximum(unitwise_norm(p), eps) * clipping
        factor = ops.where(
            g_norm > max_norm,
            max_norm / ops.maximum(g_norm, GRAD_NORM_FLOOR),
            ops.ones_like(g_norm),
        )
        out.append(g * ops.cast(factor, g.dtype))
    return out


class ZClipState(NamedTuple):
    """ZClip's statistics: `count` finite norms seen, their EMA mean and variance.

    During the warm-up (`count < warmup_steps`) `mean` is the running mean
    and `var` the running sum of squared deviations (Welford); at the end of
    it `var` becomes their population variance, as the reference code
    initializes its EMA from the warm-up buffer.
    """

    count: object  # int32 scalar
    mean: object  # float32 scalar
    var: object  # float32 scalar


def zclip_init() -> ZClipState:
    """The statistics before the first step."""
    return ZClipState(
        ops.zeros((), "int32"), ops.zeros((), "float32"), ops.zeros((), "float32")
    )


def zclip_update(
    state: ZClipState, norm, *, z_threshold: float = 2.5, alpha: float = 0.97,
    warmup_steps: int = 25, eps: float = 1e-6,
) -> tuple:
    """One step of ZClip: the norm to clip to, and the new statistics.

    After `warmup_steps` finite norms, with `std = sqrt(var)` and
    `z = (norm - mean) / (std + eps)`: when `z > z_threshold` the global
    norm is clipped to `mean + z_threshold * std / (z / z_threshold)`
    (the paper's adaptive scaling: the larger the outlier, the harder the
    clip). The EMA is then fed the norm after clipping:
    `mean <- alpha * mean + (1 - alpha) * fed`,
    `var <- alpha * var + (1 - alpha) * (fed - mean)**2` (with the new mean).
    During the warm-up nothing is clipped.

    A non-finite norm (NaN or inf) never enters the statistics: the state
    comes back unchanged and the threshold is inf. (The reference code
    would keep a NaN mean for good.)

    Args:
        state: a `ZClipState`.
        norm: float32 scalar, the global gradient norm before clipping.
        z_threshold: float > 0. Defaults to 2.5.
        alpha: float in [0, 1), the EMA factor. Defaults to 0.97.
        warmup_steps: int >= 1. Defaults to 25.
        eps: float, added to the std in the z-score. Defaults to 1e-6.

    Returns:
        `(threshold, new_state)`: threshold is a float32 scalar, `inf` when
        the step is not clipped.

    References:
        Kumar, Owen, Chowdhury and Güra, "ZClip: Adaptive Spike Mitigation
        for LLM Pre-Training", 2025, https://arxiv.org/abs/2504.02507.
    """
    norm = ops.cast(norm, "float32")
    count, mean, var = state
    finite = ops.isfinite(norm)
    safe = ops.where(finite, norm, 0.0)  # keeps NaN out of both branches
    warming = count < warmup_steps
    # Warm-up: Welford's running mean and sum of squared deviations.
    n = ops.cast(count + 1, "float32")
    delta = safe - mean
    warm_mean = mean + delta / n
    warm_var = var + delta * (safe - warm_mean)
    warm_var = ops.where(count + 1 >= warmup_steps, warm_var / n, warm_var)
    # After it: the z-score, the clip and the EMA of the clipped norm.
    std = ops.sqrt(ops.maximum(var, 0.0))
    z = (safe - mean) / (std + eps)
    spike = z > z_threshold
    clip = mean + z_threshold * std / ops.maximum(z / z_threshold, 1.0)
    fed = ops.where(spike, clip, safe)
    ema_mean = alpha * mean + (1.0 - alpha) * fed
    ema_var = alpha * var + (1.0 - alpha) * ops.square(fed - ema_mean)

    new_mean = ops.where(warming, warm_mean, ema_mean)
    new_var = ops.where(warming, warm_var, ema_var)
    threshold = ops.where(
        finite & ops.logical_not(warming) & spike, clip, float("inf")
    )
    new_state = ZClipState(
        ops.where(finite, count + 1, count),
        ops.where(finite, new_mean, mean),
        ops.where(finite, new_var, var),
    )
    return threshold, new_state


def zclip_boundary(state: ZClipState, z_threshold: float, warmup_steps: int):
    """The norm above which the next step is clipped (`inf` in the warm-up)."""
    count, mean, var = state
    bound = mean + z_threshold * ops.sqrt(ops.maximum(var, 0.0))
    return ops.where(count < warmup_steps, float("inf"), bound)
