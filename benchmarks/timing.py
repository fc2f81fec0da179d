"""Timing helpers without Keras: robust summaries, a power-law fit (the step clock: `step_clock.py`)."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def spread(values: Sequence[float]) -> tuple[float, float, float]:
    """Returns (median, min, max) of finite values; NaNs when there are none."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        nan = float("nan")
        return nan, nan, nan
    return float(np.median(values)), float(values.min()), float(values.max())


def fit_exponent(sizes: Sequence[float], times: Sequence[float]) -> float:
    """Least-squares exponent `k` of `time ~ size**k` (slope in log-log).

    Args:
        sizes: positive problem sizes, at least two distinct ones.
        times: positive times, one per size.

    Returns:
        The slope of `log(time)` against `log(size)`.

    Raises:
        ValueError: with fewer than two distinct sizes or a non-positive value.

    Example:

    >>> round(fit_exponent([1, 2, 4], [3.0, 6.0, 12.0]), 6)
    1.0
    """
    sizes = np.asarray(sizes, dtype=np.float64)
    times = np.asarray(times, dtype=np.float64)
    if sizes.shape != times.shape or len(np.unique(sizes)) < 2:
        raise ValueError(
            f"fit_exponent received sizes={sizes.tolist()} and times="
            f"{times.tolist()}; expected one time per size and at least two "
            "distinct sizes."
        )
    if not (np.all(sizes > 0) and np.all(times > 0)):
        raise ValueError(
            f"fit_exponent received sizes={sizes.tolist()} and times="
            f"{times.tolist()}; expected positive values only."
        )
    slope, _ = np.polyfit(np.log(sizes), np.log(times), 1)
    return float(slope)
