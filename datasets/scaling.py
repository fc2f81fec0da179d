"""Per-feature scaling helpers shared by the dataset generators.

Poorly scaled inputs are one of the classic causes of exploding gradients:
a feature measured in the thousands makes the first layer's pre-activations,
and with them the gradient of its kernel, thousands of times larger than a
feature measured in units. These helpers create such inputs on purpose and
measure how badly a given array is scaled.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def scale_features(x: np.ndarray, scales: float | Sequence[float] | np.ndarray) -> np.ndarray:
    """Multiplies each feature (last axis) of `x` by its own scale.

    Args:
        x: Array of shape `(..., n_features)`.
        scales: One scale for every feature (a scalar), or one per feature
            (a sequence of length `n_features`). Scales must be finite.

    Returns:
        A new float32 array with the shape of `x`; `x` is left untouched.

    Raises:
        ValueError: If `x` has no feature axis, if the number of scales does
            not match `n_features`, or if a scale is not finite.

    Example:

    >>> x = np.ones((2, 3), dtype="float32")
    >>> scale_features(x, [1.0, 10.0, 100.0])
    array([[  1.,  10., 100.],
           [  1.,  10., 100.]], dtype=float32)
    """
    x = np.asarray(x)
    if x.ndim < 1:
        raise ValueError(
            f"scale_features received x with shape {x.shape}; expected an "
            "array of shape (..., n_features)."
        )
    scales = np.asarray(scales, dtype=np.float64)
    if scales.ndim > 1 or (scales.ndim == 1 and scales.shape[0] != x.shape[-1]):
        raise ValueError(
            f"scale_features received {scales.size} scales for x with "
            f"{x.shape[-1]} features (shape {x.shape}); expected a scalar or "
            f"one scale per feature ({x.shape[-1]})."
        )
    if not np.all(np.isfinite(scales)):
        raise ValueError(
            f"scale_features received scales={scales.tolist()}; expected "
            "finite numbers."
        )
    return (x.astype(np.float64) * scales).astype(np.float32)


def feature_scales(x: np.ndarray) -> np.ndarray:
    """Returns the standard deviation of every feature (last axis) of `x`.

    The statistics are taken over all other axes, so for sequences of shape
    `(n, seq_len, n_features)` a feature's scale pools the batch and time
    axes, the way `keras.layers.Normalization(axis=-1)` does.

    Args:
        x: Array of shape `(..., n_features)` with at least one sample.

    Returns:
        A float64 array of shape `(n_features,)`.

    Raises:
        ValueError: If `x` has no feature axis or no samples.

    Example:

    >>> x = np.array([[0.0, 0.0], [2.0, 20.0]])
    >>> feature_scales(x)
    array([ 1., 10.])
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 1 or x.size == 0:
        raise ValueError(
            f"feature_scales received x with shape {x.shape}; expected a "
            "non-empty array of shape (..., n_features)."
        )
    return x.reshape(-1, x.shape[-1]).std(axis=0)
