"""A regression task whose features live on wildly different scales."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ._checks import check_int, check_seed
from .scaling import scale_features


def poorly_scaled_regression(
    n: int,
    n_features: int,
    *,
    scale_range: Sequence[float] = (1e-3, 1e4),
    noise_std: float = 0.1,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Generates a linear regression task with badly scaled features.

    Feature `j` is `z_j * s_j` with `z ~ N(0, 1)`. The scales `s_j` are spread
    log-uniformly (evenly in log space, `numpy.geomspace`) from
    `scale_range[0]` for feature 0 to `scale_range[1]` for the last feature,
    so the smallest and largest feature standard deviations are the two ends
    of the range. The target depends on the *standardized* features,
    `y = sum_j w_j z_j + noise`, with `|w_j| = 1 / sqrt(n_features)` and a
    random sign: every feature matters equally, however small or large its
    raw scale, and the noise-free part of `y` has variance 1.

    Trained on the raw features, a dense network gets first-layer gradients
    proportional to the largest scale (and must learn weights near `1 / s_j`
    for the small ones); standardizing the inputs turns this back into an easy
    problem. That contrast is what the task is for.

    Args:
        n: Number of samples, an int >= 1.
        n_features: Number of features, an int >= 1. With a single feature
            its scale is `scale_range[0]`.
        scale_range: `(smallest, largest)` feature scale, two finite floats
            with `0 < smallest <= largest`. Defaults to `(1e-3, 1e4)`, seven
            orders of magnitude.
        noise_std: Standard deviation of the Gaussian noise added to `y`, a
            finite float >= 0. Defaults to 0.1, so the best possible MSE is
            about 0.01 against a variance of `y` of about 1.01.
        seed: Seed for `numpy.random.default_rng`; the same seed gives the
            same data. No global random state is used.

    Returns:
        A tuple `(x, y)` of float32 arrays with shapes `(n, n_features)` and
        `(n, 1)`.

    Raises:
        ValueError: If an argument is outside the ranges above.

    Example:

    >>> x, y = poorly_scaled_regression(1000, 8, seed=0)
    >>> x.shape, y.shape
    ((1000, 8), (1000, 1))
    >>> stds = x.std(axis=0)  # about 1e-3 for feature 0, 1e4 for feature 7
    >>> bool(5e-4 < stds[0] < 2e-3 and 5e3 < stds[-1] < 2e4)
    True

    References:
        - LeCun, Bottou, Orr & Müller, "Efficient BackProp", in Neural
          Networks: Tricks of the Trade, 1998 (section 4.3, normalizing the
          inputs).
    """
    func = "poorly_scaled_regression"
    n = check_int(func, "n", n, 1)
    n_features = check_int(func, "n_features", n_features, 1)
    seed = check_seed(func, seed)
    try:
        low, high = (float(s) for s in scale_range)
        range_ok = math.isfinite(low) and math.isfinite(high) and 0 < low <= high
    except (TypeError, ValueError):
        range_ok = False
    if not range_ok:
        raise ValueError(
            f"{func} received scale_range={scale_range!r}; expected two "
            "finite floats (smallest, largest) with 0 < smallest <= largest, "
            "e.g. (1e-3, 1e4)."
        )
    try:
        noise_ok = math.isfinite(noise_std) and noise_std >= 0
    except TypeError:
        noise_ok = False
    if not noise_ok:
        raise ValueError(
            f"{func} received noise_std={noise_std!r}; expected a finite "
            "float >= 0."
        )

    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, n_features))
    signs = rng.choice([-1.0, 1.0], size=n_features)
    weights = signs / math.sqrt(n_features)
    noise = noise_std * rng.standard_normal(n)

    scales = np.geomspace(low, high, n_features)
    x = scale_features(z, scales)
    y = (z @ weights + noise).reshape(n, 1)
    return x, y.astype(np.float32)
