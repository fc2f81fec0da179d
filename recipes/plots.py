"""PNG figures of an experiment table: one small panel per variant.

Every panel shares the same log-scale y axis, so a stable variant's curve
is not hidden under another's, and an exploding one stands out by height.
Colours are cells; each seed is one line. Matplotlib is imported inside the
functions with the non-interactive `Agg` backend, so importing a recipe
needs neither matplotlib nor a display; figures are written through
`write_atomic`.
"""

from __future__ import annotations

import io
import math
import os
import pathlib
from collections.abc import Mapping

import numpy as np
import pandas as pd

from .experiment import Row
from .run_files import write_atomic


def _panels(table: pd.DataFrame, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = list(dict.fromkeys(table["variant"]))
    ncols = min(4, len(variants))
    nrows = math.ceil(len(variants) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 2.8 * nrows + 0.6),
                             sharex=True, sharey=True, squeeze=False)
    for ax in axes.flat[len(variants):]:
        ax.set_visible(False)
    fig.suptitle(title)
    colours = {c: f"C{i}" for i, c in enumerate(dict.fromkeys(table["cell"]))}
    return plt, fig, dict(zip(variants, axes.flat)), colours


def _rows(table: pd.DataFrame):
    for r in table.itertuples():
        yield r, Row(r.variant, r.cell, int(r.seed)).name


def plot_grad_norms(table: pd.DataFrame, norms: Mapping[str, pd.DataFrame],
                    path: str | os.PathLike, *, title: str, threshold: float) -> pathlib.Path:
    """The unclipped global gradient norm per step, a panel per variant.

    A cross marks the step at which a row exploded (at the top of the axes
    when its norm was not finite); the dashed line is the run's one
    suggested clipping threshold.

    Args:
        table: The experiment table.
        norms: Row name -> `GradientNormLogger.to_dataframe("global")`.
        path: Where to write the PNG.
        title: Figure title.
        threshold: The suggested clipping threshold (NaN: none drawn).

    Returns:
        The path written.
    """
    plt, fig, axes, colours = _panels(table, title)
    finite = [d["grad_norm"][np.isfinite(d["grad_norm"])] for d in norms.values()]
    top = max((float(f.max()) for f in finite if len(f)), default=1.0) * 3
    for r, name in _rows(table):
        ax, frame = axes[r.variant], norms[name]
        values = frame["grad_norm"].to_numpy(np.float64)
        ok = np.isfinite(values) & (values > 0)
        ax.plot(frame["step"][ok], values[ok], color=colours[r.cell], linewidth=0.8, alpha=0.8,
                label=r.cell if r.seed == table["seed"].min() else None)
        if not pd.isna(r.exploded_step):
            hit = values[frame["step"].to_numpy() == r.exploded_step]
            y = float(hit[0]) if len(hit) and math.isfinite(hit[0]) else top
            ax.plot([r.exploded_step], [y], "x", color=colours[r.cell], ms=9, mew=2)
    for variant, ax in axes.items():
        if math.isfinite(threshold):
            ax.axhline(threshold, linestyle="--", color="gray", linewidth=1)
        ax.set_title(variant, fontsize="medium")
        ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
    first = next(iter(axes.values()))
    first.set_ylabel("gradient norm (unclipped)")
    handles, labels = first.get_legend_handles_labels()
    if math.isfinite(threshold):
        from matplotlib.lines import Line2D

        handles.append(Line2D([], [], linestyle="--", color="gray"))
        labels.append(f"suggested clip {threshold:.3g}")
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize="small")
    return _save(plt, fig, path)


def plot_losses(table: pd.DataFrame, losses: Mapping[str, pd.DataFrame],
                path: str | os.PathLike, *, title: str, trivial_mse: float,
                learned_ratio: float) -> pathlib.Path:
    """Training loss per step (thin) and validation loss per epoch (squares).

    The dotted line is the constant prediction's loss, the dash-dotted one
    the bar a row must reach to count as learned. The y axis stops at 100x
    the constant prediction's loss (an exploded row leaves the panel at the
    top; its gradient norms are in the other figure).
    """
    plt, fig, axes, colours = _panels(table, title)
    for r, name in _rows(table):
        ax, frame = axes[r.variant], losses[name]
        loss = frame["loss"].to_numpy(np.float64)
        ok = np.isfinite(loss) & (loss > 0)
        ax.plot(frame["step"][ok], loss[ok], color=colours[r.cell], linewidth=0.6, alpha=0.6,
                label=r.cell if r.seed == table["seed"].min() else None)
        val = frame["val_loss"].to_numpy(np.float64)
        ok = np.isfinite(val) & (val > 0)
        ax.plot(frame["step"][ok], val[ok], "s", ms=3, color=colours[r.cell])
    for variant, ax in axes.items():
        ax.axhline(trivial_mse, linestyle=":", color="black", linewidth=1)
        ax.axhline(learned_ratio * trivial_mse, linestyle="-.", color="green", linewidth=1)
        ax.set_title(variant, fontsize="medium")
        ax.set_yscale("log")
        ax.set_ylim(top=100 * trivial_mse)  # an exploded loss would flatten every other curve
        ax.grid(True, alpha=0.3)
    first = next(iter(axes.values()))
    first.set_ylabel("MSE")
    handles, labels = first.get_legend_handles_labels()
    labels = [*labels, f"constant prediction {trivial_mse:.3g}", f"learned below {learned_ratio * trivial_mse:.3g}"]
    fig.legend(handles + first.lines[-2:], labels, loc="lower center", ncol=len(labels), fontsize="small")
    return _save(plt, fig, path)


def _save(plt, fig, path) -> pathlib.Path:
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return write_atomic(path, buffer.getvalue())
