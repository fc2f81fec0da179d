"""PNG figures the recipes share: gradient norm per step and loss curves.

Matplotlib is imported inside the functions with the non-interactive `Agg`
backend, so importing a recipe needs neither matplotlib nor a display.
"""

from __future__ import annotations

import math
import os
import pathlib
from collections.abc import Mapping

import numpy as np
import pandas as pd


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_grad_norms(
    norms: Mapping[str, pd.DataFrame],
    path: str | os.PathLike,
    *,
    title: str,
    events: Mapping[str, list[dict]] | None = None,
    threshold: float | None = None,
) -> pathlib.Path:
    """Plots the unclipped global gradient norm per step, one line per variant.

    The y axis is logarithmic, so a norm that grows 6x per step is a straight
    line. Non-finite norms are drawn as a cross at the top of the axes; a
    NaNGuard event as a circle on its step.

    Args:
        norms: Variant name -> `GradientNormLogger.to_dataframe("global")`.
        path: Where to write the PNG.
        title: Figure title.
        events: Variant name -> `NaNGuard.events`. Defaults to `None`.
        threshold: A suggested clipping threshold, drawn as a dashed line.
            Defaults to `None`.

    Returns:
        The path written.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 5))
    top = max(
        (float(np.nanmax(np.where(np.isfinite(d.grad_norm), d.grad_norm, np.nan)))
         for d in norms.values() if np.isfinite(d.grad_norm).any()),
        default=1.0,
    )
    for name, frame in norms.items():
        steps = frame["step"].to_numpy()
        values = frame["grad_norm"].to_numpy(dtype=np.float64)
        ok = np.isfinite(values) & (values > 0)
        (line,) = ax.plot(steps[ok], values[ok], label=name, linewidth=1)
        if (~np.isfinite(values)).any():
            ax.plot(steps[~np.isfinite(values)], np.full((~np.isfinite(values)).sum(), top * 2),
                    "x", color=line.get_color())
        for event in (events or {}).get(name, []):
            hit = frame["step"] == event["step"]
            y = values[hit.to_numpy()]
            y = float(y[0]) if len(y) and math.isfinite(y[0]) else top * 2
            ax.plot([event["step"]], [y], "o", mfc="none", ms=10, color=line.get_color())
    if threshold is not None and math.isfinite(threshold):
        ax.axhline(threshold, linestyle="--", color="gray", linewidth=1,
                   label=f"suggested clip {threshold:.3g}")
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("global gradient norm (before clipping)")
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize="small", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return pathlib.Path(path)


def plot_losses(
    histories: Mapping[str, Mapping[str, list[float]]],
    path: str | os.PathLike,
    *,
    title: str,
    trivial_mse: float | None = None,
) -> pathlib.Path:
    """Plots training (solid) and validation (dashed) loss per epoch.

    Args:
        histories: Variant name -> Keras `History.history`.
        path: Where to write the PNG.
        title: Figure title.
        trivial_mse: Loss of the best constant prediction, drawn as a dotted
            line. Defaults to `None`.

    Returns:
        The path written.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 5))
    for name, history in histories.items():
        loss = np.asarray(history.get("loss", []), dtype=np.float64)
        epochs = np.arange(1, len(loss) + 1)
        ok = np.isfinite(loss) & (loss > 0)
        (line,) = ax.plot(epochs[ok], loss[ok], "o-", label=name, linewidth=1, ms=3)
        val = np.asarray(history.get("val_loss", []), dtype=np.float64)
        ok = np.isfinite(val) & (val > 0)
        ax.plot(np.arange(1, len(val) + 1)[ok], val[ok], "s--", linewidth=1, ms=3,
                color=line.get_color())
    if trivial_mse is not None:
        ax.axhline(trivial_mse, linestyle=":", color="black", linewidth=1,
                   label=f"constant prediction {trivial_mse:.3g}")
    ax.set_yscale("log")
    ax.set_xlabel("epoch (solid: training, dashed: validation)")
    ax.set_ylabel("mean squared error")
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize="small", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return pathlib.Path(path)
