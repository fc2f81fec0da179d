"""An experiment table: rows of variant x cell x seed, each trained and saved on its own.

A recipe names its rows (`Row`) and says how to set one up (`Setup`: a
model builder, an optimizer and extra callbacks); `Experiment` does the rest
the same way for every recipe:

- seeds the row, builds and compiles the model, and fits it with a
  `GradientNormLogger`, the row's callbacks and a `NaNGuard(action="stop")`;
- judges the model it produced: `val/trivial` (validation loss over the
  constant prediction's), `learned` (`val/trivial <= 0.1`), the first epoch
  at which it learned and the step at which it exploded, if it did;
- writes the row's curves to `rows/<row>/` and its TensorBoard run to
  `tensorboard/<group>/<row>/` (`exploded`, `learned` or `stable`, so
  TensorBoard lists the broken rows together; gradient norms and epoch losses, through
  tensorboard's own writer: no TensorFlow needed), both first under a
  `.incomplete` name that is renamed when the row is done, and only then
  appends the row to `results.csv`.

So `results.csv` always holds exactly the finished rows. An interrupted run
is finished with `--resume DIR`, which skips them; every row seeds itself,
so the table is the same as an uninterrupted run's. Every file is written to
a temporary name and renamed (`run_files.write_atomic`). A damaged folder is
never made worse: a row cut short in `results.csv` is trained again, a
`results.csv` that cannot be read ends the run with one line naming it, and
the folder is locked while rows are trained (`resume.run_lock`), so a
second run of it is refused. What a resume reads back is checked before
anything is removed (`resume.check_rows`: no foreign column, no row twice,
only rows the settings ask for, each with its folder), and every path it
removes is checked to lie inside the folder without crossing a symbolic
link (`safe_paths`).

The same code runs under `KERAS_BACKEND=tensorflow`, `jax` and `torch`:
`set_determinism` makes each backend's kernels deterministic, and every row
records the `backend`, the `device` and the recurrent `kernel` that ran.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import pathlib
import time
import warnings
from collections.abc import Callable, Sequence

import keras
import numpy as np
import pandas as pd

from gradguard.callbacks import GradientNormLogger, NaNGuard

from .console import progress_line, time_left, wrap
from .epoch_summary import EpochSummary
from .resume import check_rows, check_stop, read_results, run_lock
from .run_files import RunFolderError, write_atomic
from .tensorboard_report import FIGURES_RUN, write_figures, write_guard_events
from .safe_paths import check_no_links, inside, remove_inside
from .variants import Row, make_optimizer

# A model learned when its validation loss is at most this fraction of the
# constant prediction's (the bar: 10x better than predicting the mean).
LEARNED_RATIO = 0.1
# NaNGuard stops a row on a non-finite gradient or weight, or on a gradient
# this many times its running median: an unmistakable explosion (a healthy
# LSTM under Adam reaches about 40x when it starts to learn).
SPIKE_FACTOR = 1000.0
INCOMPLETE = ".incomplete"
INT_COLUMNS = ("seed", "learned_epoch", "exploded_step", "epochs_run")
# A row's TensorBoard run is tensorboard/<group>/<row>: TensorBoard lists runs
# by name, so the rows that exploded come first and together, then those
# that learned, then the rest.
RUN_GROUPS = ("exploded", "learned", "stable")


def run_group(record: dict) -> str:
    """`"exploded"`, `"learned"` or `"stable"`: the row's verdict, its run's folder."""
    step = record.get("exploded_step")
    if step is not None and not pd.isna(step):
        return "exploded"
    return "learned" if bool(record.get("learned")) else "stable"


def tensorboard_run(out_dir: str | pathlib.Path, name: str) -> pathlib.Path | None:
    """The finished row `name`'s TensorBoard run folder, or None if it has none."""
    root = pathlib.Path(out_dir) / "tensorboard"
    return next((root / g / name for g in RUN_GROUPS if (root / g / name).is_dir()), None)
# Every column a row of results.csv can have (`Experiment._fit`'s record):
# a resume refuses a table with others, or without the first three.
COLUMNS = ("variant", "cell", "seed", "optimizer", "learning_rate", "model", "train_loss",
           "val_loss", "trivial_mse", "val/trivial", "learned", "learned_epoch", "max_grad_norm",
           "median_grad_norm", "exploded_step", "nan_guard", "epochs_run", "finite_weights",
           "wall_time_s", "device", "backend", "kernel")


@dataclasses.dataclass(frozen=True)
class Setup:
    """How the recipe trains one row."""

    build: Callable[[], keras.Model]  # a fresh, uncompiled model (called after seeding)
    optimizer: str  # one of OPTIMIZERS
    learning_rate: float
    callbacks: list = dataclasses.field(default_factory=list)  # e.g. clip_callbacks(...)
    model: str = ""  # the model as the table shows it
    kernel: str = ""  # the recurrent kernel that runs (`rnn_kernel`); "" for no RNN
    guard: dict = dataclasses.field(default_factory=dict)  # NaNGuard arguments over the stop (Variant.guard)


class _Curves(keras.callbacks.Callback):
    """Records the loss per step and prints one line per epoch."""

    def __init__(self, name: str, epochs: int, printer: Callable[[str], None]):
        super().__init__()
        self.name, self.epochs, self.printer, self.rows = name, epochs, printer, []

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch, self.start = epoch, time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        self.rows.append([len(self.rows) + 1, self.epoch, float(logs.get("loss", math.nan)), math.nan])

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.rows:
            self.rows[-1][3] = float(logs.get("val_loss", math.nan))
        self.printer(
            f"  {self.name:<36} epoch {epoch + 1}/{self.epochs}  loss {logs.get('loss', math.nan):.4g}  "
            f"val_loss {logs.get('val_loss', math.nan):.4g}  max grad norm "
            f"{logs.get('grad_norm_max', math.nan):.3g}  ({time.perf_counter() - self.start:.1f} s)")


class Experiment:
    """Trains the rows of a table one by one, saving each as it finishes.

    Args:
        out_dir: The run folder.
        rows: The rows, in table order.
        setup: Row -> `Setup`.
        data: `(x_train, y_train, x_val, y_val)`, the same for every row.
        epochs: Maximum epochs per row.
        batch_size: Mini-batch size.
        trivial_mse: Validation MSE of the best constant prediction.
        device: Device name, copied to every row.
        printer: Where progress lines go. Defaults to `None`: `print`, wrapped
            at 120 characters (`console.wrap`).
    """

    def __init__(self, out_dir: str | pathlib.Path, rows: Sequence[Row],
                 setup: Callable[[Row], Setup], data: tuple, *, epochs: int,
                 batch_size: int, trivial_mse: float, device: str,
                 printer: Callable[[str], None] | None = None):
        self.out_dir, self.rows, self.setup, self.data = pathlib.Path(out_dir), list(rows), setup, data
        self.epochs, self.batch_size, self.trivial_mse = epochs, batch_size, trivial_mse
        self.device = device
        self.printer = printer or (lambda line: print(wrap(line)))  # 120 columns at most
        self.results_csv = self.out_dir / "results.csv"
        self._told = False  # the cut-short row is reported once

    def finished(self) -> pd.DataFrame:
        """The rows already in `results.csv` (an empty table before the first).

        A row cut short (a truncated last line) is not finished: it is left
        out, with one line saying so, and trained again.

        Raises:
            RunFolderError: If `results.csv` is damaged beyond a cut-short row.
        """
        table, dropped = read_results(self.results_csv, {c: "Int64" for c in INT_COLUMNS})
        if dropped and not self._told:
            self._told = True
            self.printer(f"  {self.results_csv}: {dropped} row{'s' * (dropped != 1)} cut short "
                         "(not finished); training again")
        return table

    def run(self) -> pd.DataFrame:
        """Trains every row not in `results.csv` yet; returns all rows in order.

        The run folder is locked meanwhile (`resume.run_lock`): a second
        run of the same folder is refused instead of removing this one's
        rows in progress.
        """
        check_no_links(self.out_dir, "the run folder")
        with run_lock(self.out_dir):
            return self._run()

    def _run(self) -> pd.DataFrame:
        done = self.finished()
        check_rows(done, self.rows, self.out_dir, self.results_csv, COLUMNS)  # before any removal
        for sub in ("rows", "tensorboard"):
            folder = inside(self.out_dir, self.out_dir / sub)
            for leftover in sorted(folder.glob(f"*{INCOMPLETE}")) if folder.is_dir() else ():
                self.printer(f"  removing {leftover}: a row interrupted before it finished")
                remove_inside(self.out_dir, leftover)
        if not (self.out_dir / "tensorboard" / FIGURES_RUN).is_dir():
            write_figures(self.out_dir / "tensorboard")  # the layout, from the first row on
        keys = set(zip(done.get("variant", []), done.get("cell", []), done.get("seed", [])))
        todo = [r for r in self.rows if (r.variant, r.cell, r.seed) not in keys]
        if keys:
            self.printer(f"  resuming: {len(self.rows) - len(todo)} of {len(self.rows)} rows "
                         f"already in {self.results_csv}")
        start, epochs = time.perf_counter(), 0
        spent: dict[str, tuple[float, int]] = {}  # cell -> (seconds, epochs) trained in this process
        for i, row in enumerate(todo):
            check_stop()
            self.printer(progress_line(len(self.rows) - len(todo) + i + 1, len(self.rows), row.name,
                                       time.perf_counter() - start, epochs, (len(todo) - i) * self.epochs,
                                       left=time_left(spent, [r.cell for r in todo[i:]], self.epochs)))
            began = time.perf_counter()
            ran = self.train(row)["epochs_run"]
            seconds, done = spent.get(row.cell, (0.0, 0))
            spent[row.cell] = (seconds + time.perf_counter() - began, done + ran)
            epochs += ran
        table = self.finished()
        order = {(r.variant, r.cell, r.seed): i for i, r in enumerate(self.rows)}
        table["_order"] = [order[k] for k in zip(table["variant"], table["cell"], table["seed"])]
        return table.sort_values("_order").drop(columns="_order").reset_index(drop=True)

    def train(self, row: Row) -> dict:
        """Trains one row, writes its files, appends it to `results.csv`."""
        row_dir = self.out_dir / "rows" / row.name
        tb_root = self.out_dir / "tensorboard"
        temp = [pathlib.Path(f"{d}{INCOMPLETE}") for d in (row_dir, tb_root / row.name)]
        runs = [tb_root / group / row.name for group in RUN_GROUPS]
        for path in (row_dir, tb_root / row.name, *runs, *temp):
            remove_inside(self.out_dir, path)  # a row trained but never recorded
        try:
            record, norms, curves, layers = self._fit(row, temp[0], temp[1])
            write_atomic(temp[0] / "grad_norms.csv", norms.to_csv(index=False))
            write_atomic(temp[0] / "losses.csv", curves.to_csv(index=False))
            write_atomic(temp[0] / "layer_norms.csv", layers.to_csv(index=False))
            tb_dir = tb_root / run_group(record) / row.name
            tb_dir.parent.mkdir(exist_ok=True)
        except BaseException:
            for path in temp:  # a half-trained row leaves nothing behind
                with contextlib.suppress(OSError):
                    remove_inside(self.out_dir, path)
            raise
        try:
            temp[0].rename(row_dir)
            temp[1].rename(tb_dir)
        except OSError as error:
            raise RunFolderError(f"could not rename {temp[0]} and {temp[1]} to their final names: "
                                 f"{error.strerror or error}") from error
        table = pd.concat([self.finished(), pd.DataFrame([record])], ignore_index=True)
        write_atomic(self.results_csv, table.to_csv(index=False))
        return record

    def _fit(self, row: Row, row_dir: pathlib.Path, tb_dir: pathlib.Path):
        x, y, x_val, y_val = self.data
        keras.utils.set_random_seed(row.seed)
        set_determinism()
        setup = self.setup(row)
        model = setup.build()
        model.compile(optimizer=make_optimizer(setup.optimizer, setup.learning_rate), loss="mse")
        model.optimizer.build(model.trainable_variables)  # trace the train step once
        row_dir.mkdir(parents=True)
        logger = GradientNormLogger(log_dir=str(tb_dir))
        guard = NaNGuard(**{"action": "stop", "spike_factor": SPIKE_FACTOR,
                            "report_path": row_dir / "nan_guard.json", "verbose": False,
                            **setup.guard})
        curves = _Curves(row.name, self.epochs, self.printer)
        start = time.perf_counter()
        with warnings.catch_warnings():  # a failed TensorBoard write ends the row instead
            warnings.filterwarnings("ignore", message=".*could not write TensorBoard events")
            history = model.fit(
                x, y, validation_data=(x_val, y_val), epochs=self.epochs,
                batch_size=self.batch_size, shuffle=True, verbose=0,
                callbacks=[logger, *setup.callbacks, guard,
                           EpochSummary(tb_dir), curves],
            ).history
        wall = time.perf_counter() - start
        if logger.write_error is not None:
            raise RunFolderError(
                f"could not write TensorBoard events to {str(tb_dir)!r}: "
                f"{logger.write_error.reason}; free space or fix the folder's permissions (this "
                "row is trained again).")
        for event in guard.events:
            self.printer(f"  {row.name:<36} NaNGuard: {event['action']} at step "
                         f"{event['step']}: {event['detail']}")
        write_guard_events(tb_dir, guard.events)  # the Text tab, at the step it acted
        norms = logger.to_dataframe("global")
        record = judge(history, norms, guard.events, self.trivial_mse)
        record = {
            "variant": row.variant, "cell": row.cell, "seed": row.seed,
            "optimizer": setup.optimizer, "learning_rate": setup.learning_rate,
            "model": setup.model, **record,
            "finite_weights": bool(all(np.isfinite(w).all() for w in model.get_weights())),
            "wall_time_s": round(wall, 2), "device": self.device,
            "backend": keras.backend.backend(), "kernel": setup.kernel,
        }
        curves = pd.DataFrame(curves.rows, columns=["step", "epoch", "loss", "val_loss"])
        return record, norms, curves, logger.to_dataframe("layer")


def set_determinism() -> None:
    """Makes the Keras backend's kernels deterministic, the way that backend offers.

    TensorFlow: `tf.config.experimental.enable_op_determinism()`. PyTorch:
    `torch.use_deterministic_algorithms(True, warn_only=True)` (an op without
    a deterministic kernel warns instead of failing) and, for cuBLAS on a GPU,
    `CUBLAS_WORKSPACE_CONFIG=:4096:8` when not set. JAX is deterministic on
    CPU; on a GPU, XLA reads `XLA_FLAGS=--xla_gpu_deterministic_ops=true`
    only when JAX first starts its GPU client, so setting it here helps only
    a process that has not done so yet: set it in the environment
    (`benchmarks/gpu_recipe.py` does, for the runs it starts).
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    elif backend == "torch":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        import torch

        torch.use_deterministic_algorithms(True, warn_only=True)
    elif backend == "jax" and "xla_gpu_deterministic_ops" not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_gpu_deterministic_ops=true".strip()


def judge(history: dict, norms: pd.DataFrame, events: list[dict], trivial_mse: float) -> dict:
    """The row's verdict on the model and on its gradients.

    Args:
        history: Keras `History.history` (`loss`, `val_loss` per epoch).
        norms: `GradientNormLogger.to_dataframe("global")`.
        events: `NaNGuard.events`.
        trivial_mse: Validation MSE of the best constant prediction.

    Returns:
        `train_loss`, `val_loss`, `trivial_mse`, `val/trivial`, `learned`
        (final `val/trivial <= LEARNED_RATIO`), `learned_epoch` (first 1-based
        epoch that met it, or None), `max_grad_norm`, `median_grad_norm`
        (finite steps), `exploded_step` (first non-finite norm or NaNGuard
        event other than a warning, or None), `nan_guard` and `epochs_run`.
    """
    val = [float(v) for v in history.get("val_loss", [])]
    ratios = [v / trivial_mse if math.isfinite(v) else math.inf for v in val]
    values = norms["grad_norm"].to_numpy(dtype=np.float64)
    finite = values[np.isfinite(values)]
    bad = [int(s) for s in norms["step"][~np.isfinite(values)]][:1]
    # A `stalled` warning (action "warn") let training go on: not an explosion.
    exploded = min(bad + [int(e["step"]) for e in events if e["action"] != "warn"],
                   default=None)
    final = ratios[-1] if ratios else math.nan
    return {
        "train_loss": float(history["loss"][-1]) if history.get("loss") else math.nan,
        "val_loss": val[-1] if val else math.nan,
        "trivial_mse": trivial_mse,
        "val/trivial": final,
        "learned": bool(final <= LEARNED_RATIO),
        "learned_epoch": next((i + 1 for i, r in enumerate(ratios) if r <= LEARNED_RATIO), None),
        "max_grad_norm": float(finite.max()) if finite.size else math.nan,
        "median_grad_norm": float(np.median(finite)) if finite.size else math.nan,
        "exploded_step": exploded,
        "nan_guard": "; ".join(f"{e['action']} at step {e['step']} ({e['trigger']})"
                               for e in events) or "none",
        "epochs_run": len(history.get("loss", [])),
    }
