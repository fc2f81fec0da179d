"""What the norms' own history says: running medians, growth, suspects, a clip value.

Pure numpy (unit-tested in tests/callbacks/test_diagnosis.py); the running
median here is the host-side twin of `ring.running_median`.
"""

from __future__ import annotations

import warnings

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

# Norms below this are rounding noise (a converged net's 4.5e-9): no ratio
# is taken over them, so a NaN after convergence cannot read "2.83e+08x".
NORM_FLOOR = 1e-6
SUSPECT_FACTOR = 10.0  # a variable's norm this far above its own running median has left it
MIN_PERIODS = 3  # finite earlier values a running median needs
GROWTH_FACTOR = 3.0  # recent global norms this far above their median: a divergence under way
RECENT = 3  # how many steps before the event count as recent
CLIP_PERCENTILE = 90.0  # the cure's clipping threshold: this percentile of the norms before the onset


def running_median(values: np.ndarray, window: int, min_periods: int = MIN_PERIODS):
    """Each value's ratio to the median of the `window` values before it.

    The host-side twin of `ring.running_median` (which decides spikes in the
    compiled step). Non-finite values neither get a ratio nor enter a
    median; a median of 0 gives no ratio.

    Args:
        values: (T,) or (T, V) array, oldest first.
        window: how many earlier values make the median.
        min_periods: fewest finite earlier values for a median. Defaults to 3.

    Returns:
        `(ratio, median)`, arrays shaped like `values`, NaN where undefined.
    """
    values = np.asarray(values, dtype=np.float64)
    squeeze = values.ndim == 1
    if squeeze:
        values = values[:, None]
    clean = np.where(np.isfinite(values), values, np.nan)
    if not len(clean):  # no rows yet (a read before the first step was recorded)
        empty = np.zeros_like(clean)
        return (empty[:, 0], empty[:, 0]) if squeeze else (empty, empty)
    padded = np.concatenate([np.full((window, clean.shape[1]), np.nan), clean])
    windows = sliding_window_view(padded[:-1], window, axis=0)  # rows t-window..t-1
    count = np.sum(np.isfinite(windows), axis=-1)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows
        median = np.nanmedian(windows, axis=-1)
        ratio = clean / median
    ok = (count >= min_periods) & (median > NORM_FLOOR) & np.isfinite(ratio)
    ratio = np.where(ok, ratio, np.nan)
    median = np.where(count >= min_periods, median, np.nan)
    return (ratio[:, 0], median[:, 0]) if squeeze else (ratio, median)


def norm_spread(norms: np.ndarray) -> float:
    """Their 90th percentile over their 10th (`inf` when the 10th is 0).

    The host-side twin of the spread `ring.running_median` gives the spike
    gate (the same order statistics); above `step_decision.SPREAD` the
    norms are per-example-like and a ratio to their median says little.
    """
    ordered = np.sort(np.asarray(norms, dtype=np.float64))
    if not len(ordered):
        return 1.0
    last = len(ordered) - 1
    low, high = ordered[last // 10], ordered[last * 9 // 10]
    return float(high / low) if low > 0 else float("inf")


def scattered(norms: np.ndarray, spread: float) -> bool:
    """Whether `norms` range wider than `spread` with no trend: per-example noise.

    A divergence ranges as wide (1, 8, 95, 914, ... 1e18 under SGD at 1.5),
    but its newer half's median is far above its older half's; per-example
    norms at batch size 1 range as wide with both medians alike.
    """
    norms = np.asarray(norms, dtype=np.float64)
    if len(norms) < 4 or norm_spread(norms) <= spread:
        return False
    half = len(norms) // 2
    older, newer = np.median(norms[:half]), np.median(norms[half:])
    return bool(newer <= spread * max(older, NORM_FLOOR))


def measure_growth(norms: np.ndarray, window: int) -> dict:
    """How far the last `RECENT` norms rose above the median of those before.

    Args:
        norms: finite global norms of the applied steps before the event,
            oldest first.
        window: how many steps make the median.

    Returns:
        `growth` (largest recent norm / median; `None` with fewer than two
        norms), `median` and `recent` (the recent norms, at least one norm
        left before them).
    """
    norms = np.asarray(norms, dtype=np.float64)
    k = min(RECENT, len(norms) - 1)
    if k < 1:
        return {"growth": None, "median": None, "recent": norms.tolist()}
    earlier, recent = norms[:-k][-window:], norms[-k:]
    median = float(np.median(earlier))
    growth = float(recent.max() / median) if median > NORM_FLOOR else None
    return {"growth": growth, "median": median, "recent": recent.tolist()}


def rank_suspects(steps: np.ndarray, variable_norms: np.ndarray, paths, layers, *,
                  window: int, threshold: float = SUSPECT_FACTOR, top: int = 3) -> list[dict]:
    """The variables whose gradient norm first rose `threshold` times above its median.

    At the failing step the per-variable norms often blame the wrong layer
    (a saturated recurrent kernel reads 0 while the head reads inf): the
    variable that left its own running median first is where it started.
    Only variables that crossed the threshold are returned, earliest first,
    then by their largest rise.

    Returns:
        Up to `top` dicts: variable, layer, first_step, ratio (the largest
        rise), step (where it was largest), norm and median there.
    """
    if len(steps) == 0:
        return []
    ratio, median = running_median(variable_norms, window)
    suspects = []
    for column in range(ratio.shape[1]):
        series = ratio[:, column]
        above = np.flatnonzero(np.nan_to_num(series) > threshold)
        if not len(above):
            continue
        t = int(np.nanargmax(series))
        suspects.append({
            "variable": str(paths[column]), "layer": str(layers[column]),
            "first_step": int(steps[above[0]]), "ratio": float(series[t]),
            "step": int(steps[t]), "norm": float(variable_norms[t, column]),
            "median": float(median[t, column]),
        })
    suspects.sort(key=lambda s: (s["first_step"], -s["ratio"]))
    return suspects[:top]


def suggest_clip(stable_norms: np.ndarray, spike: float | None) -> float | None:
    """A clipping threshold: the `CLIP_PERCENTILE` of the norms before the onset.

    Never at or above the spike it answers: if the percentile reaches it,
    the median of those norms instead (and `None` if that does too). Norms
    under `NORM_FLOOR` do not count: at batch size 1, steps on examples a
    net already classifies give norms of 0 to 1e-7 (AUTOTRAINER's
    Oscillating_Loss_Case: 90% of them), and a clip at their percentile
    (1.35e-07) would stop all learning.
    """
    norms = np.asarray(stable_norms, dtype=np.float64)
    norms = norms[np.isfinite(norms) & (norms >= NORM_FLOOR)]
    if len(norms) == 0:
        return None
    for value in (np.percentile(norms, CLIP_PERCENTILE), np.median(norms)):
        if spike is None or not np.isfinite(spike) or value < spike:
            return float(value)
    return None
