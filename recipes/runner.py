"""Train one variant of a recipe and turn what happened into one table row.

Both exploding-gradient recipes compare the same model trained several ways
(no protection, clipping, normalization, a lower learning rate). This module
holds what they share: a `Variant` (how to build the model and which
callbacks to add), `train_variant` (seed, compile, fit with a
`GradientNormLogger` and a `NaNGuard`, one printed line per epoch) and the
helpers that read the results: `pre_explosion_norms`,
`suggest_clip_threshold` and `exploded`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import time
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import pandas as pd

from gradguard.callbacks import GradientNormLogger, NaNGuard

# A gradient norm this many times the median of the norms before it marks
# the start of an explosion (for `pre_explosion_norms`).
JUMP_FACTOR = 10.0


@dataclasses.dataclass(frozen=True)
class Variant:
    """One way of training the recipe's model.

    Attributes:
        name: Short name used in flags, table rows and folder names.
        label: The model as the table shows it, e.g. `"simple_rnn(32)+bn"`.
        build: Builds a fresh, uncompiled model; called after seeding.
        learning_rate: Learning rate of the plain SGD optimizer.
        callbacks: Builds the variant's extra callbacks (clipping, AutoClip);
            called once per run. Defaults to no callbacks.
    """

    name: str
    label: str
    build: Callable[[], keras.Model]
    learning_rate: float
    callbacks: Callable[[], list] = list


@dataclasses.dataclass
class VariantResult:
    """What `train_variant` returns: the table row and the raw curves."""

    row: dict[str, Any]  # one row of the results table
    norms: pd.DataFrame  # logger.to_dataframe("global"): step, epoch, grad_norm, ...
    history: dict[str, list[float]]  # keras History.history
    events: list[dict]  # NaNGuard.events
    losses: pd.DataFrame | None = None  # step, epoch, loss (running mean), val_loss


class _EpochPrinter(keras.callbacks.Callback):
    """Prints one concise line per epoch (Keras itself runs with verbose=0)."""

    def __init__(self, name: str, epochs: int, printer: Callable[[str], None]):
        super().__init__()
        self.name, self.epochs, self.printer = name, epochs, printer

    def on_train_begin(self, logs=None):
        self.rows, self._step = [], 0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        self._step += 1
        self.rows.append((self._step, self._epoch, float(logs.get("loss", math.nan)), math.nan))

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.rows:
            step, epoch_, loss, _ = self.rows[-1]
            self.rows[-1] = (step, epoch_, loss, float(logs.get("val_loss", math.nan)))
        self.printer(
            f"  {self.name:<16} epoch {epoch + 1}/{self.epochs}  "
            f"loss {logs.get('loss', math.nan):.4g}  "
            f"val_loss {logs.get('val_loss', math.nan):.4g}  "
            f"max grad norm {logs.get('grad_norm_max', math.nan):.3g}  "
            f"({time.perf_counter() - self._start:.1f} s)"
        )


def enable_determinism(seed: int) -> None:
    """Seeds Python, NumPy and the backend, and asks TF for deterministic ops.

    Args:
        seed: The run's seed.
    """
    keras.utils.set_random_seed(seed)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def train_variant(
    variant: Variant,
    data: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    out_dir: str | os.PathLike,
    trivial_mse: float,
    device: str,
    jit_compile: bool = False,
    printer: Callable[[str], None] = print,
) -> VariantResult:
    """Trains one variant with plain SGD, a gradient logger and a NaN guard.

    The seed is set right before the model is built, so every variant starts
    from the same weights (where the architectures agree) and sees the same
    shuffles. Callbacks, in this order: `GradientNormLogger` (TensorBoard
    scalars in `<out_dir>/tensorboard/<name>`), the variant's own callbacks,
    `NaNGuard(action="stop")` (report in `<out_dir>/nan_guard/<name>.json`,
    written only if it fires), Keras' `TensorBoard` (losses, same folder) and
    the epoch printer.

    Args:
        variant: What to train.
        data: `(x_train, y_train, x_val, y_val)`.
        epochs: Maximum number of epochs.
        batch_size: Mini-batch size.
        seed: Seed for weights and shuffling.
        out_dir: The run folder.
        trivial_mse: MSE of the best constant prediction, copied to the row.
        device: Device name, copied to the row.
        jit_compile: XLA-compile the train step. Defaults to `False`: for
            these short runs on a CPU the compile time costs more than it
            saves.
        printer: Where progress lines go. Defaults to `print`.

    Returns:
        A `VariantResult` whose `row` has the columns of the results table.
    """
    out_dir = pathlib.Path(out_dir)
    x, y, x_val, y_val = data
    enable_determinism(seed)
    model = variant.build()
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=variant.learning_rate),
        loss="mse",
        jit_compile=jit_compile,
    )
    # Built now, the optimizer's variables exist before the train step is
    # traced, so the step is traced once instead of twice.
    model.optimizer.build(model.trainable_variables)
    log_dir = out_dir / "tensorboard" / variant.name
    logger = GradientNormLogger(log_dir=str(log_dir))
    guard = NaNGuard(
        action="stop",
        report_path=out_dir / "nan_guard" / f"{variant.name}.json",
        verbose=False,
    )
    printer_callback = _EpochPrinter(variant.name, epochs, printer)
    callbacks = [
        logger,
        *variant.callbacks(),
        guard,
        keras.callbacks.TensorBoard(str(log_dir), write_graph=False),
        printer_callback,
    ]
    start = time.perf_counter()
    history = model.fit(
        x, y,
        validation_data=(x_val, y_val),
        epochs=epochs,
        batch_size=batch_size,
        shuffle=True,
        verbose=0,
        callbacks=callbacks,
    ).history
    wall = time.perf_counter() - start
    for event in guard.events:
        printer(f"  {variant.name:<16} NaNGuard: {event['action']} at step "
                f"{event['step']}: {event['detail']}")

    norms = logger.to_dataframe("global")
    values = norms["grad_norm"].to_numpy()
    finite = values[np.isfinite(values)]
    bad_steps = norms["step"][~np.isfinite(values)]
    weights_ok = all(np.isfinite(w).all() for w in model.get_weights())
    row = {
        "variant": variant.name,
        "model": variant.label,
        "learning_rate": variant.learning_rate,
        "train_loss": _last(history, "loss"),
        "val_loss": _last(history, "val_loss"),
        "trivial_mse": trivial_mse,
        "max_grad_norm": float(finite.max()) if finite.size else math.nan,
        "median_grad_norm": float(np.median(finite)) if finite.size else math.nan,
        "first_nonfinite_step": int(bad_steps.iloc[0]) if len(bad_steps) else None,
        "nan_guard": describe_events(guard.events),
        "finite_weights": bool(weights_ok),
        "epochs_run": len(history.get("loss", [])),
        "wall_time_s": round(wall, 2),
        "device": device,
    }
    losses = pd.DataFrame(printer_callback.rows, columns=["step", "epoch", "loss", "val_loss"])
    return VariantResult(row, norms, history, list(guard.events), losses)


def results_table(results: list[VariantResult]) -> pd.DataFrame:
    """Stacks the rows of several `VariantResult`s into the results table."""
    table = pd.DataFrame([r.row for r in results])
    # Ints, and None (an empty cell in CSV and Markdown) where all stayed finite.
    table["first_nonfinite_step"] = pd.Series(
        [r.row["first_nonfinite_step"] for r in results], dtype=object)
    return table


def describe_events(events: list[dict]) -> str:
    """`"stop at step 11 (gradient_spike)"` for each NaNGuard event, or `"none"`."""
    if not events:
        return "none"
    return "; ".join(f"{e['action']} at step {e['step']} ({e['trigger']})" for e in events)


def exploded(row: pd.Series | dict) -> bool:
    """Whether a table row shows an explosion: non-finite step, guard or weights."""
    step = row["first_nonfinite_step"]
    return bool(
        (step is not None and not pd.isna(step))
        or row["nan_guard"] != "none"
        or not row["finite_weights"]
        or not math.isfinite(row["train_loss"])
    )


def pre_explosion_norms(norms: pd.DataFrame, events: list[dict]) -> np.ndarray:
    """The unclipped global norms of the steps before a run blew up.

    A run blows up at the first of: a non-finite norm, a NaNGuard event, or
    a norm more than `JUMP_FACTOR` times the median of all norms before it.
    A run that never blows up gives all its norms.

    Args:
        norms: `GradientNormLogger.to_dataframe("global")`.
        events: `NaNGuard.events` of the same run.

    Returns:
        The finite norms before that step, in step order.
    """
    steps = norms["step"].to_numpy()
    values = norms["grad_norm"].to_numpy()
    end = len(values)
    for i, value in enumerate(values):
        if not math.isfinite(value) or (
            i > 0 and value > JUMP_FACTOR * np.median(values[:i])
        ):
            end = i
            break
    if events:
        end = min(end, int(np.searchsorted(steps, events[0]["step"])))
    before = values[:end]
    return before[np.isfinite(before)]


def suggest_clip_threshold(norms: np.ndarray, percentile: float = 90.0) -> float:
    """A clipping threshold from a run's unclipped gradient norms.

    Following the Deep Learning Tuning Playbook: clip at roughly the 90th
    percentile of the norms seen while training was healthy, so that only
    the rare large steps are clipped.

    Args:
        norms: Unclipped global gradient norms, e.g. from `pre_explosion_norms`.
        percentile: Which percentile. Defaults to 90.0.

    Returns:
        The threshold, or NaN when there are no norms.

    References:
        Godbole, Dahl, Gilmer, Shallue & Nado, "Deep Learning Tuning
        Playbook", 2023, https://github.com/google-research/tuning_playbook.
    """
    norms = np.asarray(norms, dtype=np.float64)
    return float(np.percentile(norms, percentile)) if norms.size else math.nan


def _last(history: dict, key: str) -> float:
    values = history.get(key) or [math.nan]
    return float(values[-1])


def summarize(table: pd.DataFrame, results: list[VariantResult]) -> list[str]:
    """States what the comparison shows, computed from the table.

    Args:
        table: The results table (`results_table`).
        results: The same runs, for their gradient norms.

    Returns:
        Lines of text: the baseline's fate, which mitigations stayed finite
        and learned (validation loss below 90% of the constant prediction's),
        the best variant and a suggested clipping threshold.
    """
    lines = []
    rows = {row["variant"]: row for _, row in table.iterrows()}
    calm = [r for r in rows.values() if not exploded(r)]
    blew = [r for r in rows.values() if exploded(r)]
    if "baseline" in rows:
        base = rows["baseline"]
        others = [r["max_grad_norm"] for r in calm
                  if r["variant"] != "baseline" and math.isfinite(r["max_grad_norm"])]
        ratio = base["max_grad_norm"] / max(others) if others and max(others) > 0 else math.nan
        if exploded(base) or ratio >= 100:
            how = []
            if not pd.isna(base["first_nonfinite_step"]):
                how.append(f"first non-finite gradient at step {base['first_nonfinite_step']}")
            if base["nan_guard"] != "none":
                how.append(f"NaNGuard: {base['nan_guard']}")
            how = how or [f"max gradient norm {ratio:.3g}x the stable runs' largest"]
            text = f"baseline (lr={base['learning_rate']:g}, no protection) exploded: {'; '.join(how)}"
            if math.isfinite(ratio):
                text += (f"; its max gradient norm {base['max_grad_norm']:.3g} is "
                         f"{ratio:.3g}x the largest max "
                         f"of the runs that stayed stable ({max(others):.3g})")
            lines.append(text + ".")
            calm = [r for r in calm if r["variant"] != "baseline"]
        else:
            lines.append(f"baseline (lr={base['learning_rate']:g}) did NOT explode "
                         f"(max gradient norm {base['max_grad_norm']:.3g}); raise --lr "
                         "or --seq-len to see an explosion.")
    others = [r for r in blew if r["variant"] != "baseline"]
    if others:
        lines.append("also exploded: " + ", ".join(
            f"{r['variant']} ({r['nan_guard']})" for r in others) + ".")
    learned = [r for r in calm if r["val_loss"] < 0.9 * r["trivial_mse"]]
    flat = [r for r in calm if r["val_loss"] >= 0.9 * r["trivial_mse"] or pd.isna(r["val_loss"])]
    if learned:
        lines.append("stable and below 90% of the constant-prediction loss "
                     f"{learned[0]['trivial_mse']:.4g}: " + ", ".join(
                         f"{r['variant']} ({r['val_loss']:.4g})" for r in learned) + ".")
    if flat:
        lines.append("stable (finite weights, no NaNGuard event) but not yet better "
                     "than predicting the mean: " + ", ".join(
                         f"{r['variant']} ({r['val_loss']:.4g})" for r in flat) + ".")
    if calm:
        best = min(calm, key=lambda r: r["val_loss"])
        lines.append(f"lowest validation loss: {best['variant']} ({best['val_loss']:.4g}).")
    for result in results:
        name = result.row["variant"]
        if name not in ("baseline", "lower_lr"):
            continue
        norms = pre_explosion_norms(result.norms, result.events)
        threshold = suggest_clip_threshold(norms)
        lines.append(
            f"suggested clipping threshold from {name}'s unclipped norms "
            f"(90th percentile of {len(norms)} step{'s' if len(norms) != 1 else ''} before any explosion, "
            f"Tuning Playbook): {threshold:.3g}.")
    return lines


def report(
    results: list[VariantResult],
    out_dir: str | os.PathLike,
    *,
    title: str,
    trivial_mse: float,
    caption: str,
) -> tuple[pd.DataFrame, list[str]]:
    """Writes results.csv/.md, summary.txt, grad_norms.csv/.png and loss.png.

    Args:
        results: One `VariantResult` per variant, in run order.
        out_dir: The run folder.
        title: Title of the figures.
        trivial_mse: Loss of the constant prediction, drawn on loss.png.
        caption: Line above the Markdown table.

    Returns:
        `(table, summary_lines)`.
    """
    from . import plots
    from .common import write_table

    out_dir = pathlib.Path(out_dir)
    table = results_table(results)
    summary = summarize(table, results)
    write_table(table, out_dir, caption=caption)
    pd.concat(
        [r.norms.assign(variant=r.row["variant"]) for r in results], ignore_index=True
    ).to_csv(out_dir / "grad_norms.csv", index=False)
    (out_dir / "summary.txt").write_text("\n".join(summary) + "\n")
    base = [r for r in results if r.row["variant"] == "baseline"]
    threshold = (suggest_clip_threshold(pre_explosion_norms(base[0].norms, base[0].events))
                 if base else None)
    plots.plot_grad_norms(
        {r.row["variant"]: r.norms for r in results}, out_dir / "grad_norms.png",
        title=title, events={r.row["variant"]: r.events for r in results},
        threshold=threshold,
    )
    plots.plot_losses(
        {r.row["variant"]: r.losses for r in results}, out_dir / "loss.png",
        title=title, trivial_mse=trivial_mse,
    )
    return table, summary
