"""Gradient flow as a picture: every layer's gradient norm at every step, on a log colour scale.

The picture users copy from forum snippets (`plot_grad_flow`: one bar per
layer of one step's mean gradient) shows a moment; an explosion is a story
in time. Here a row is a layer (input side at the top, as the model lists
them), a column a step, and the colour the layer's gradient norm on a
logarithmic scale, so a norm that climbs from 1 to 1e5 crosses the whole
colour bar while a vanishing one sinks to its dark end. A step at which a
layer's norm was NaN or inf is drawn in red (never folded into the colour
scale), a zero norm in black, a step at which a layer was not trained is
left white.

`gradient_flow` reads any `GradientNormLogger` (with `per_layer=True`, its
default) or the table of its `to_dataframe("layer")` into a
`GradientFlow`, the array the picture draws; `plot_gradient_flow` draws one,
`plot_gradient_flows` a panel per recipe row on one shared colour scale.
Matplotlib loads inside the functions with the non-interactive `Agg`
backend.

Example:

>>> logger = GradientNormLogger()  # doctest: +SKIP
>>> model.fit(x, y, callbacks=[logger])  # doctest: +SKIP
>>> plot_gradient_flow(logger, "gradient_flow.png")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import pathlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

NONFINITE_COLOUR, ZERO_COLOUR, MISSING_COLOUR = "red", "black", "white"
CMAP = "viridis"


@dataclasses.dataclass(frozen=True)
class GradientFlow:
    """Per-layer gradient norms, layers x steps: what the heatmap draws."""

    layers: tuple[str, ...]  # (L,) layer names, in the order the model lists them
    steps: np.ndarray  # (T,) int, global training steps, increasing
    norms: np.ndarray  # (L, T) float64; NaN also where a layer was not trained in a step
    nonfinite: np.ndarray  # (L, T) bool: the layer's norm was NaN or inf at that step

    @property
    def nonfinite_steps(self) -> np.ndarray:
        """The steps at which some layer's norm was NaN or inf."""
        return self.steps[self.nonfinite.any(axis=0)]


def gradient_flow(source: Any) -> GradientFlow:
    """The per-layer norms of a `GradientNormLogger` (or of its layer table) as layers x steps.

    Args:
        source: A `GradientNormLogger` created with `per_layer=True` (the
            default), after `fit`; or the `pandas.DataFrame` its
            `to_dataframe("layer")` returns (columns `step`, `layer`, `norm`),
            for example read back from a CSV file.

    Returns:
        A `GradientFlow`. A step logged twice for a layer keeps its last norm.

    Raises:
        ValueError: If `source` holds no per-layer norms.
    """
    frame = source if isinstance(source, pd.DataFrame) else source.to_dataframe("layer")
    missing = {"step", "layer", "norm"} - set(frame.columns)
    if missing:
        raise ValueError(f"gradient_flow received a table without the columns {sorted(missing)}; "
                         "expected GradientNormLogger.to_dataframe('layer').")
    if frame.empty:
        raise ValueError("gradient_flow received no per-layer norms; train with "
                         "GradientNormLogger(per_layer=True) first.")
    frame = frame.drop_duplicates(["step", "layer"], keep="last")
    layers = tuple(dict.fromkeys(frame["layer"]))
    norm = frame.pivot(index="layer", columns="step", values="norm").reindex(list(layers))
    norms = norm.to_numpy(np.float64)
    bad = frame.assign(bad=~np.isfinite(frame["norm"].to_numpy(np.float64)))
    nonfinite = (bad.pivot(index="layer", columns="step", values="bad").reindex(list(layers))
                 .fillna(False).to_numpy(bool))
    return GradientFlow(layers, norm.columns.to_numpy(np.int64), norms, nonfinite)


def colour_range(flows: list[GradientFlow]) -> tuple[float, float]:
    """`(low, high)` of the positive finite norms of every flow (`(1e-3, 1)` when none)."""
    pooled = np.concatenate([f.norms[np.isfinite(f.norms) & (f.norms > 0)] for f in flows])
    if not pooled.size:
        return 1e-3, 1.0
    low, high = float(pooled.min()), float(pooled.max())
    return (low, high) if high > low else (low / 10, high * 10)


def _draw(ax, flow: GradientFlow, norm, cmap, labels: bool):
    """One heatmap on `ax`: the colour mesh, the non-finite cells in red, the layer names."""
    from matplotlib.colors import ListedColormap

    steps = flow.steps.astype(np.float64)
    edges = np.concatenate([[steps[0] - 0.5], (steps[1:] + steps[:-1]) / 2, [steps[-1] + 0.5]]) \
        if len(steps) > 1 else np.array([steps[0] - 0.5, steps[0] + 0.5])
    rows = np.arange(len(flow.layers) + 1) - 0.5
    values = np.where(flow.norms == 0, norm.vmin / 10, flow.norms)  # zero: the "under" colour
    values = np.ma.masked_invalid(values)
    mesh = ax.pcolormesh(edges, rows, values, norm=norm, cmap=cmap, shading="flat")
    if flow.nonfinite.any():
        ax.pcolormesh(edges, rows, np.ma.masked_where(~flow.nonfinite, np.ones(flow.norms.shape)),
                      cmap=ListedColormap([NONFINITE_COLOUR]), shading="flat")
    ax.set_ylim(len(flow.layers) - 0.5, -0.5)  # the model's first layer at the top
    ax.set_yticks(range(len(flow.layers)))
    ax.set_yticklabels(flow.layers if labels else [], fontsize="x-small")
    return mesh


def _colours(flows: list[GradientFlow]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    cmap = matplotlib.colormaps[CMAP].with_extremes(under=ZERO_COLOUR, bad=MISSING_COLOUR)
    return plt, LogNorm(*colour_range(flows)), cmap


def _legend(fig, flows: list[GradientFlow]) -> None:
    from matplotlib.patches import Patch

    handles = [Patch(color=NONFINITE_COLOUR, label="NaN / inf")] if any(f.nonfinite.any() for f in flows) else []
    if any((f.norms == 0).any() for f in flows):
        handles.append(Patch(color=ZERO_COLOUR, label="zero"))
    if any((np.isnan(f.norms) & ~f.nonfinite).any() for f in flows):
        handles.append(Patch(facecolor=MISSING_COLOUR, edgecolor="gray", label="not trained"))
    if not handles:
        return
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.45, -0.03), ncol=len(handles),
               fontsize="small")


def plot_gradient_flow(source: Any, path: str | os.PathLike, *,
                       title: str = "gradient norm per layer and step") -> pathlib.Path:
    """Draws the gradient flow heatmap of one `GradientNormLogger` to a PNG file.

    Args:
        source: A `GradientNormLogger` (`per_layer=True`, after `fit`), its
            `to_dataframe("layer")` table, or a `GradientFlow`.
        path: Where to write the PNG (its folder must exist).
        title: The figure's title. Defaults to `"gradient norm per layer and step"`.

    Returns:
        The path written.

    Example:

    >>> plot_gradient_flow(logger, "runs/gradient_flow.png")  # doctest: +SKIP
    """
    flow = source if isinstance(source, GradientFlow) else gradient_flow(source)
    return plot_gradient_flows({title: flow}, path, title=title, panel_titles=False)


def plot_gradient_flows(flows: Mapping[str, GradientFlow], path: str | os.PathLike, *, title: str,
                        panel_titles: bool = True) -> pathlib.Path:
    """A heatmap panel per flow (a recipe's rows), one shared log colour scale.

    Args:
        flows: Panel title (a row's name) -> its `GradientFlow`.
        path: Where to write the PNG.
        title: The figure's title.
        panel_titles: Title each panel with its key. Defaults to `True`.

    Returns:
        The path written.
    """
    items = list(flows.items())
    if not items:
        raise ValueError("plot_gradient_flows received no flows; expected at least one.")
    plt, norm, cmap = _colours([f for _, f in items])
    ncols = min(2, len(items))
    nrows = math.ceil(len(items) / ncols)
    height = max(0.16 * max(len(f.layers) for _, f in items) + 1.0, 2.2)
    fig, axes = plt.subplots(nrows, ncols, figsize=(7.5 * ncols, height * nrows + 1.4),
                             squeeze=False, sharex=True)
    for ax in axes.flat[len(items):]:
        ax.set_visible(False)
    for i, (ax, (name, flow)) in enumerate(zip(axes.flat, items)):
        mesh = _draw(ax, flow, norm, cmap, labels=i % ncols == 0)
        if panel_titles:
            bad = flow.nonfinite_steps
            note = f"  (NaN/inf from step {int(bad[0])})" if bad.size else ""
            ax.set_title(f"{name}{note}", fontsize="small", color=NONFINITE_COLOUR if bad.size else "black")
        if i + ncols >= len(items):
            ax.set_xlabel("step")
            ax.xaxis.set_tick_params(labelbottom=True)
    fig.suptitle(title, y=1.0 + 0.12 / nrows)
    fig.colorbar(mesh, ax=axes.ravel().tolist(), label="gradient norm (log scale)", extend="min", pad=0.01)
    _legend(fig, [f for _, f in items])
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    from .run_files import write_atomic

    return write_atomic(path, buffer.getvalue())
