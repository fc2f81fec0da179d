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
    return _finish(plt, fig, ax, title, path)


def plot_losses(
    losses: Mapping[str, pd.DataFrame],
    path: str | os.PathLike,
    *,
    title: str,
    trivial_mse: float | None = None,
) -> pathlib.Path:
    """Plots the training loss per step and the validation loss per epoch.

    The training loss is the one Keras reports after each step: the mean
    over the epoch so far. The validation loss is drawn as squares at the
    last step of each epoch.

    Args:
        losses: Variant name -> a frame with columns step, loss and val_loss
            (NaN except at the end of an epoch).
        path: Where to write the PNG.
        title: Figure title.
        trivial_mse: Loss of the best constant prediction, drawn as a dotted
            line. Defaults to `None`.

    Returns:
        The path written.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 5))
    for name, frame in losses.items():
        steps = frame["step"].to_numpy()
        loss = frame["loss"].to_numpy(dtype=np.float64)
        ok = np.isfinite(loss) & (loss > 0)
        (line,) = ax.plot(steps[ok], loss[ok], label=name, linewidth=1)
        val = frame["val_loss"].to_numpy(dtype=np.float64)
        ok = np.isfinite(val) & (val > 0)
        ax.plot(steps[ok], val[ok], "s", ms=5, color=line.get_color())
    if trivial_mse is not None:
        ax.axhline(trivial_mse, linestyle=":", color="black", linewidth=1,
                   label=f"constant prediction {trivial_mse:.3g}")
    ax.set_yscale("log")
    ax.set_xlabel("training step (lines: training loss, running mean over the epoch; "
                  "squares: validation loss)")
    ax.set_ylabel("mean squared error")
    return _finish(plt, fig, ax, title, path)


def _finish(plt, fig, ax, title: str, path) -> pathlib.Path:
    """Title, grid, legend; saves the figure as PNG and closes it."""
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize="small", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return pathlib.Path(path)
