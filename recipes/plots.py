"""PNG figures of an experiment table: one small panel per variant, a verdict in each.

Every panel of a figure shares one y axis, so an exploding variant stands
out by height; the axis holds every finite value and turns logarithmic when
they span more than two decades. Each panel's title is the variant,
coloured by its worst outcome (red: a row exploded; green: a row learned),
and its upper right corner lists each cell's verdict (`exploded @ step 12`, `learned
0.006`, `stable, 0.98`: val/trivial), so the figure reads in seconds.
Colours are cells; each seed is one line. Every marker has a legend entry.

Matplotlib is imported inside the functions with the non-interactive `Agg`
backend, so importing a recipe needs neither matplotlib nor a display;
figures are written through `write_atomic`.
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

EXPLODED, LEARNED, STABLE = "tab:red", "tab:green", "black"
# The y axis turns logarithmic when the finite values span more than this ratio.
LOG_SPAN = 100.0


def _pyplot():
    """`matplotlib.pyplot` on the non-interactive `Agg` backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _panels(table: pd.DataFrame, title: str, ylabel: str):
    plt = _pyplot()
    variants = list(dict.fromkeys(table["variant"]))
    ncols = min(4, len(variants))
    nrows = math.ceil(len(variants) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.8 * ncols, 2.9 * nrows + 0.9),
                             sharex=True, sharey=True, squeeze=False)
    for ax in axes.flat[len(variants):]:
        ax.set_visible(False)
    for i, ax in enumerate(axes.flat[:len(variants)]):
        below = i + ncols >= len(variants)  # no visible panel under this one
        if below:
            ax.set_xlabel("step")
            ax.xaxis.set_tick_params(labelbottom=True)
        if i % ncols == 0:
            ax.set_ylabel(ylabel)
    fig.suptitle(title)
    colours = {c: f"C{i}" for i, c in enumerate(dict.fromkeys(table["cell"]))}
    return plt, fig, dict(zip(variants, axes.flat)), colours


def _rows(table: pd.DataFrame):
    for r in table.itertuples():
        yield r, Row(r.variant, r.cell, int(r.seed)).name


def verdict(exploded_step, learned: bool, ratio: float) -> tuple[str, str]:
    """`(text, colour)` of one row: exploded at a step, learned, or stable (val/trivial)."""
    if not pd.isna(exploded_step):
        return f"exploded @ step {int(exploded_step)}", EXPLODED
    if learned:
        return f"learned, {ratio:.2g}", LEARNED
    return f"stable, not learned, {ratio:.3g}", STABLE


def _label_panels(table: pd.DataFrame, axes: dict, colours: dict) -> None:
    """Title coloured by the worst outcome; one verdict line per row in the corner."""
    for variant, ax in axes.items():
        rows = table[table["variant"] == variant]
        verdicts = [(r["cell"], int(r["seed"]), *verdict(r["exploded_step"], r["learned"], r["val/trivial"]))
                    for _, r in rows.iterrows()]
        worst = next((c for c in (EXPLODED, LEARNED) if any(v[3] == c for v in verdicts)), STABLE)
        ax.set_title(variant, fontsize="medium", color=worst, fontweight="bold")
        several = rows["seed"].nunique() > 1
        for i, (cell, seed, text, colour) in enumerate(verdicts[:4]):
            ax.text(0.98, 0.97 - 0.11 * i, f"{cell}{f' s{seed}' if several else ''}: {text}",
                    transform=ax.transAxes, fontsize="x-small", va="top", ha="right", color=colours[cell],
                    fontweight="bold" if colour != STABLE else "normal",
                    bbox=dict(facecolor="white", alpha=0.7, edgecolor="none", pad=1))


def _y_range(values: list[np.ndarray], always: tuple[float, ...] = ()) -> tuple[bool, float, float]:
    """`(log?, low, high)` holding every finite value (and `always`)."""
    pooled = np.concatenate([v[np.isfinite(v)] for v in values] + [np.array(always, float)])
    positive = pooled[pooled > 0]
    if not positive.size:
        return False, 0.0, 1.0
    low, high = float(positive.min()), float(positive.max())
    if high / low > LOG_SPAN:
        return True, low / 2, high * 4  # room at the top for the non-finite markers
    pad = 0.08 * (high - low or high)
    return False, max(0.0, low - pad), high + 2 * pad


def _non_finite_marks(ax, steps, values, top, colour) -> bool:
    bad = ~np.isfinite(values)
    if bad.any():
        ax.plot(np.asarray(steps)[bad], np.full(int(bad.sum()), top), "^", color=colour, ms=6,
                clip_on=False)
    return bool(bad.any())


def plot_grad_norms(table: pd.DataFrame, norms: Mapping[str, pd.DataFrame],
                    path: str | os.PathLike, *, title: str, threshold: float) -> pathlib.Path:
    """The unclipped global gradient norm per step, a panel per variant.

    Solid: the unclipped norm; dotted: the norm as applied after clipping
    (only where clipping changed it). A cross marks the step at which
    NaNGuard stopped a row (at the top of the axes when its norm was not
    finite), a triangle at the top a non-finite norm; the dashed line is
    the run's one suggested clipping threshold.

    Args:
        table: The experiment table.
        norms: Row name -> `GradientNormLogger.to_dataframe("global")`.
        path: Where to write the PNG.
        title: Figure title.
        threshold: The suggested clipping threshold (NaN: none drawn).

    Returns:
        The path written.
    """
    from matplotlib.lines import Line2D

    plt, fig, axes, colours = _panels(table, title, "global gradient norm")
    values = [d["grad_norm"].to_numpy(np.float64) for d in norms.values()]
    log, low, top = _y_range(values, (threshold,) if math.isfinite(threshold) else ())
    clipped_any = nonfinite_any = stopped_any = False
    for r, name in _rows(table):
        ax, frame = axes[r.variant], norms[name]
        steps, norm = frame["step"].to_numpy(), frame["grad_norm"].to_numpy(np.float64)
        ok = np.isfinite(norm) & (norm > 0 if log else True)
        ax.plot(steps[ok], norm[ok], color=colours[r.cell], linewidth=0.8, alpha=0.85)
        if "grad_norm_clipped" in frame:
            applied = frame["grad_norm_clipped"].to_numpy(np.float64)
            cut = np.isfinite(applied) & np.isfinite(norm) & (applied < norm * (1 - 1e-6))
            if cut.any():
                clipped_any = True
                shown = np.where(np.isfinite(applied), applied, np.nan)
                ax.plot(steps, shown, ":", color=colours[r.cell], linewidth=1.0)
        nonfinite_any |= _non_finite_marks(ax, steps, norm, top, colours[r.cell])
        if not pd.isna(r.exploded_step):
            stopped_any = True
            hit = norm[steps == r.exploded_step]
            y = float(hit[0]) if len(hit) and math.isfinite(hit[0]) else top
            ax.plot([r.exploded_step], [y], "x", color=colours[r.cell], ms=9, mew=2, clip_on=False)
    for ax in axes.values():
        if math.isfinite(threshold):
            ax.axhline(threshold, linestyle="--", color="gray", linewidth=1)
    _finish_axes(table, axes, colours, log, low, top)
    handles = [Line2D([], [], color=c) for c in colours.values()]
    labels = [f"{cell}: unclipped norm" for cell in colours]
    if clipped_any:
        handles.append(Line2D([], [], linestyle=":", color="gray"))
        labels.append("norm as applied (clipped)")
    if math.isfinite(threshold):
        handles.append(Line2D([], [], linestyle="--", color="gray"))
        labels.append(f"suggested clip {threshold:.3g}")
    marks = _marker_handles(stopped_any, nonfinite_any)
    handles, labels = handles + [h for h, _ in marks], labels + [l for _, l in marks]
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), fontsize="small")
    return _save(plt, fig, path)


def _marker_handles(stopped_any: bool, nonfinite_any: bool) -> list:
    """Legend entries `(handle, label)` of the NaNGuard-stop and non-finite markers drawn."""
    from matplotlib.lines import Line2D

    marks = []
    if stopped_any:
        marks.append((Line2D([], [], marker="x", linestyle="", color="gray", ms=8, mew=2), "NaNGuard stop"))
    if nonfinite_any:
        marks.append((Line2D([], [], marker="^", linestyle="", color="gray"), "non-finite (drawn at the top)"))
    return marks


def _finish_axes(table, axes, colours, log: bool, low: float, top: float) -> None:
    """One y scale and range for every panel, a grid, and the panels' labels."""
    for ax in axes.values():
        ax.set_yscale("log" if log else "linear")
        ax.set_ylim(low, top)
        ax.grid(True, alpha=0.3)
    _label_panels(table, axes, colours)


def plot_losses(table: pd.DataFrame, losses: Mapping[str, pd.DataFrame],
                path: str | os.PathLike, *, title: str, trivial_mse: float,
                learned_ratio: float) -> pathlib.Path:
    """Training loss per step (thin) and validation loss per epoch (squares).

    The y axis holds every finite loss of every row (logarithmic when they
    span more than two decades), so an exploded or diverged row shows how
    far it went; a non-finite loss is a triangle at the top, a NaNGuard
    stop a cross. The dotted line is the constant prediction's loss, the
    dash-dotted one the bar a row must reach to count as learned.
    """
    from matplotlib.lines import Line2D

    plt, fig, axes, colours = _panels(table, title, "loss (MSE)")
    values = [f[c].to_numpy(np.float64) for f in losses.values() for c in ("loss", "val_loss")]
    log, low, top = _y_range(values, (trivial_mse, learned_ratio * trivial_mse))
    nonfinite_any = stopped_any = False
    for r, name in _rows(table):
        ax, frame = axes[r.variant], losses[name]
        steps, loss = frame["step"].to_numpy(), frame["loss"].to_numpy(np.float64)
        ok = np.isfinite(loss) & (loss > 0 if log else True)
        ax.plot(steps[ok], loss[ok], color=colours[r.cell], linewidth=0.6, alpha=0.7)
        nonfinite_any |= _non_finite_marks(ax, steps, loss, top, colours[r.cell])
        val = frame["val_loss"].to_numpy(np.float64)
        ok = np.isfinite(val) & (val > 0 if log else True)
        ax.plot(steps[ok], val[ok], "s", ms=4, color=colours[r.cell], markeredgecolor="black",
                markeredgewidth=0.4)
        if not pd.isna(r.exploded_step):
            stopped_any = True
            at = steps <= r.exploded_step
            y = loss[at][np.isfinite(loss[at])]
            ax.plot([r.exploded_step], [y[-1] if len(y) else top], "x", color=colours[r.cell],
                    ms=9, mew=2, clip_on=False)
    for ax in axes.values():
        ax.axhline(trivial_mse, linestyle=":", color="black", linewidth=1)
        ax.axhline(learned_ratio * trivial_mse, linestyle="-.", color="green", linewidth=1)
    _finish_axes(table, axes, colours, log, low, top)
    handles = [Line2D([], [], color=c) for c in colours.values()]
    labels = [f"{cell}: training loss" for cell in colours]
    handles.append(Line2D([], [], marker="s", linestyle="", color="gray", markeredgecolor="black"))
    labels.append("validation loss (per epoch)")
    marks = _marker_handles(stopped_any, nonfinite_any)
    handles, labels = handles + [h for h, _ in marks], labels + [l for _, l in marks]
    handles += [Line2D([], [], linestyle=":", color="black"), Line2D([], [], linestyle="-.", color="green")]
    labels += [f"constant prediction {trivial_mse:.3g}", f"learned below {learned_ratio * trivial_mse:.3g}"]
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize="small")
    return _save(plt, fig, path)


FIRST_STEPS = 50  # steps shown in `plot_first_steps`


def plot_first_steps(table: pd.DataFrame, norms: Mapping[str, pd.DataFrame],
                     path: str | os.PathLike, *, title: str, steps: int = FIRST_STEPS) -> pathlib.Path:
    """Every row's unclipped gradient norm over its first `steps` steps, on one log axis.

    The figure TensorBoard opens on (`charts/first_steps`): an explosion
    happens in the first steps, where the per-variant panels of
    `plot_grad_norms` squeeze it against their left edge. Rows that
    exploded are drawn in red, thick, with a cross where they stopped and
    their name and last norm beside it; the rows that learned in green; the
    others thin and grey. A non-finite norm is a triangle at the top.

    Args:
        table: The experiment table.
        norms: Row name -> `GradientNormLogger.to_dataframe("global")`.
        path: Where to write the PNG.
        title: Figure title.
        steps: How many first steps to show. Defaults to `FIRST_STEPS`.

    Returns:
        The path written.
    """
    from matplotlib.lines import Line2D

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9.0, 4.6))
    finite = [d["grad_norm"].to_numpy(np.float64)[:steps] for d in norms.values()]
    finite = np.concatenate([v[np.isfinite(v) & (v > 0)] for v in finite] or [np.ones(1)])
    top = float(finite.max()) * 3 if finite.size else 10.0
    exploded_names = []
    for r, name in _rows(table):
        frame = norms.get(name)
        if frame is None:
            continue
        first = frame.iloc[:steps]
        x, y = first["step"].to_numpy(), first["grad_norm"].to_numpy(np.float64)
        ok = np.isfinite(y) & (y > 0)
        exploded = not pd.isna(r.exploded_step)
        colour = EXPLODED if exploded else LEARNED if bool(r.learned) else "0.6"
        ax.plot(x[ok], y[ok], color=colour, linewidth=2.2 if exploded else 1.3 if r.learned else 0.8,
                zorder=3 if exploded else 2)
        bad = ~np.isfinite(y)
        if bad.any():
            ax.plot(x[bad], np.full(bad.sum(), top), "^", color=colour, ms=7, clip_on=False)
        if exploded:
            exploded_names.append(name)
            hit = y[x == r.exploded_step]
            at = float(hit[0]) if len(hit) and math.isfinite(hit[0]) else top
            ax.plot([r.exploded_step], [at], "x", color=EXPLODED, ms=11, mew=2.5, clip_on=False, zorder=4)
            ax.annotate(f"{r.variant} / {r.cell}: stopped at step {int(r.exploded_step)}, norm {at:.3g}",
                        (r.exploded_step, at), textcoords="offset points", xytext=(8, -4),
                        color=EXPLODED, fontsize="small")
    ax.set_yscale("log")
    ax.set_xlim(0, steps + 1)
    ax.set_xlabel("step")
    ax.set_ylabel("unclipped global gradient norm (log)")
    worst = f"{len(exploded_names)} of {len(table)} rows exploded" if exploded_names else "no row exploded"
    ax.set_title(f"{title}: the first {steps} steps, {worst}",
                 color=EXPLODED if exploded_names else "black")
    entries = [(Line2D([], [], color=EXPLODED, linewidth=2.2), "exploded (x: where it stopped)")] \
        if exploded_names else []
    entries += [(Line2D([], [], color=LEARNED, linewidth=1.3), "learned"),
                (Line2D([], [], color="0.6", linewidth=0.8), "stable, not learned")]
    ax.legend(*zip(*entries), loc="upper right", fontsize="small")
    return _save(plt, fig, path, legend_below=False)


def _save(plt, fig, path, legend_below: bool = True) -> pathlib.Path:
    """Writes `fig` as a PNG (room left at the bottom for a figure legend), closes it."""
    fig.tight_layout(rect=(0, 0.09 if legend_below else 0, 1, 1))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return write_atomic(path, buffer.getvalue())
