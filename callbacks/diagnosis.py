"""Finding the variables whose gradients grew most before a failure (numpy)."""

from __future__ import annotations

import warnings

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def running_median_ratio(values: np.ndarray, window: int, min_periods: int = 3):
    """Each value divided by the median of the `window` values before it.

    Non-finite values are ignored (they neither count as a ratio nor enter a
    median). A median of 0 gives no ratio.

    Args:
        values: (T,) or (T, V) array, oldest first.
        window: how many previous values make the running median.
        min_periods: fewest finite previous values for a ratio.

    Returns:
        `(ratio, median)`, arrays shaped like `values`, NaN where undefined.
    """
    values = np.asarray(values, dtype=np.float64)
    squeeze = values.ndim == 1
    if squeeze:
        values = values[:, None]
    clean = np.where(np.isfinite(values), values, np.nan)
    padded = np.concatenate(
        [np.full((window, clean.shape[1]), np.nan), clean], axis=0
    )
    # windows[t] holds rows t-window .. t-1 of `clean`.
    windows = sliding_window_view(padded[:-1], window, axis=0)
    count = np.sum(np.isfinite(windows), axis=-1)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows
        median = np.nanmedian(windows, axis=-1)
        ratio = clean / median
    ok = (count >= min_periods) & (median > 0) & np.isfinite(ratio)
    ratio = np.where(ok, ratio, np.nan)
    median = np.where(count >= min_periods, median, np.nan)
    if squeeze:
        return ratio[:, 0], median[:, 0]
    return ratio, median


def rank_suspects(
    steps: np.ndarray,
    variable_norms: np.ndarray,
    paths,
    layers,
    *,
    window: int,
    threshold: float = 10.0,
    top: int = 3,
) -> list[dict]:
    """Ranks variables by when and how far their gradient norm left its median.

    At the step where training fails the per-variable norms often blame the
    wrong layer: a saturated recurrent kernel reads 0 while the output layer
    reads inf. The variable whose norm first rose `threshold` times above its
    own running median is where the explosion started; variables that never
    did are ranked after, by their largest rise.

    Args:
        steps: (T,) 1-based step numbers.
        variable_norms: (T, V) per-variable gradient norms.
        paths: (V,) variable paths.
        layers: (V,) the layer name of each variable.
        window: length of the running median.
        threshold: the rise (ratio to the running median) that counts.
            Defaults to 10.
        top: how many variables to return. Defaults to 3.

    Returns:
        Up to `top` dicts, the likeliest culprit first: variable, layer,
        first_step (first step above `threshold`, or None), ratio (the
        largest rise), step (where it was largest), norm and median there.
    """
    if len(steps) == 0:
        return []
    ratio, median = running_median_ratio(variable_norms, window)
    suspects = []
    for column in range(ratio.shape[1]):
        series = ratio[:, column]
        if not np.isfinite(series).any():
            continue
        t = int(np.nanargmax(series))
        above = np.flatnonzero(np.nan_to_num(series) > threshold)
        suspects.append({
            "variable": str(paths[column]),
            "layer": str(layers[column]),
            "first_step": int(steps[above[0]]) if len(above) else None,
            "ratio": float(series[t]),
            "step": int(steps[t]),
            "norm": float(variable_norms[t, column]),
            "median": float(median[t, column]),
        })
    never = np.iinfo(np.int64).max
    suspects.sort(key=lambda s: (
        never if s["first_step"] is None else s["first_step"], -s["ratio"]
    ))
    return suspects[:top]
