"""`GradientNormLogger`: gradient norms in `logs`, History, CSV and TensorBoard."""

from __future__ import annotations

import time
import warnings
import weakref

import keras
import numpy as np
import pandas as pd

from .attach import begin_fit, ensure_monitor, find_monitor
from .gradient_record import GradientRecord
from .norm_collect import NormCollect
from .norm_table import NormTable, long_frame
from .step_logs import KEYS, StepLogs
from .validation import check, check_int

# What `log_keys` puts in Keras' `logs` (batch keys, epoch keys).
LOG_KEYS = {
    "all": (("grad_norm", "grad_norm_clipped"),
            ("grad_norm", "grad_norm_max", "grad_norm_clipped")),
    "norm": (("grad_norm",), ("grad_norm", "grad_norm_max")),
    "epoch": ((), ("grad_norm", "grad_norm_max", "grad_norm_clipped")),
    "none": ((), ()),
}
# Not copied or pickled: the model, its optimizer, open event files.
_BOUND = ("_model", "_model_ref", "_monitor", "_writer")
BLOCK_ROWS = 64  # rows read every step are recorded (and written) in blocks of this
WRITE_SECONDS = 10.0  # with log_dir, a block is written at least this often


class GradientNormLogger(NormCollect, keras.callbacks.Callback):
    """Logs the gradient norm of every training step, globally and per layer.

    On `on_train_begin` it makes sure the model's optimizer is wrapped in a
    `GradientMonitor` (installed once and kept with the model, so a second
    `fit` reuses the compiled step; checkpoints keep the plain optimizer's
    layout). Then:

    - batch `logs` get `grad_norm` (global norm before clipping) and
      `grad_norm_clipped` (after the optimizer's clipping), so they show in
      the progress bar and in Keras' `TensorBoard(update_freq="batch")`.
      With `every_n_steps=1` on TensorFlow (compiled, no `tf.distribute`
      strategy) they come with the train step's own logs, on every batch,
      at no extra device read (`step_logs.py`); the monitor is then read
      once per block of steps. Otherwise they come from a read every
      `every_n_steps` steps, on the batches of those reads;
    - epoch `logs` get `grad_norm` (mean over the epoch's finite steps),
      `grad_norm_max` and `grad_norm_clipped` (mean), so they land in
      `History`, `CSVLogger` and `TensorBoard`. Put this callback *before*
      those in the `callbacks` list: Keras calls callbacks in order;
    - every step's per-layer norms are kept and returned by `to_dataframe()`;
    - with `log_dir`, one TensorBoard event per step holds the scalars
      `gradients/global_norm`, `gradients/global_norm_clipped`,
      `gradients/global_norm_log10` and `gradients/layer/<name>`, and every
      `histogram_every` steps the histogram `gradients/layer_norms`. The
      events are written in blocks of up to 64 steps (one read of the
      monitor, one write and one flush), at least every 10 seconds, at
      each epoch's end and at the end of training.

    Steps are global: the optimizer's iteration count, which goes on across
    epochs, `fit` calls and runs resumed from a checkpoint. Reading every
    `every_n_steps` steps loses nothing: the monitor's ring buffer holds every
    step in between (also with `steps_per_execution`).

    **Across `fit` calls** one logger keeps its record (all steps of all the
    `fit` calls it was passed to; `to_dataframe()` has a `fit` column) and
    its TensorBoard run, so each step is written once. What it resets at
    each `fit` is only what Keras resets too: the epoch statistics behind
    `History`. A logger belongs to one model: passing it to a second model
    raises an error instead of mixing two models in one record.

    **Changing trainable sets.** Freezing, unfreezing or adding layers (and
    compiling again, as Keras asks) gives the optimizer a new list of
    variables. The logger then starts a new layout: `layouts` lists the
    layers of each, `to_dataframe()` gives each step the layers trained in
    it (and its `layout` number), and every layer keeps its own column and
    TensorBoard tag, so a norm is never shown under another layer's name.

    **Datasets of unknown length** (`from_generator`, `filter`) and repeated
    ones (`.repeat()` with `steps_per_epoch`) log exactly the steps trained:
    the end of the data writes no row. Keras' own `iterations` does count
    the step that found the data exhausted (plain Keras too), so on such a
    dataset the step numbers skip one at each epoch's end (1-4, 6-9, ...)
    while every batch trained has its row.

    **Copies.** A logger deep-copies and pickles (after `fit`, or before):
    the copy keeps the record (`to_dataframe()`, `layer_names`, `layouts`)
    but not the model, its optimizer or an open event file.

    **Nothing lost silently.** If `log_dir` is deleted during training, the
    logger creates it again, writes the steps it still holds to a new event
    file and warns once. If it cannot write there (a full disk), it warns
    once with the folder and the reason, keeps the error in `write_error`
    (a `LogWriteError`) and goes on training without TensorBoard events; the
    in-memory record, `History` and `to_dataframe()` are not affected.

    Args:
        every_n_steps: int >= 1, how often to read the monitor. Defaults to 1.
        per_layer: bool, keep per-layer norms (and write them to TensorBoard).
            Defaults to `True`.
        log_dir: str or `None`, a folder for TensorBoard event files, created
            and checked for writing at `on_train_begin`. Defaults to `None`.
        histogram_every: int >= 1, steps between TensorBoard histograms of
            the per-layer norms. Defaults to 100.
        log_keys: str, which keys go into Keras' `logs` (and so into the
            progress bar, `History` and `CSVLogger`): `"all"` (batch:
            `grad_norm`, `grad_norm_clipped`; epoch: `grad_norm`,
            `grad_norm_max`, `grad_norm_clipped`), `"norm"` (batch:
            `grad_norm`; epoch: `grad_norm`, `grad_norm_max`), `"epoch"`
            (the three epoch keys only: the per-batch progress bar stays
            Keras' own, `History` and `CSVLogger` get every key) or
            `"none"` (`to_dataframe()` and TensorBoard only). Each key adds
            about 20 columns to Keras' progress bar, which wraps past 120
            columns with `"all"`, a metric and validation; `"norm"` or
            `"epoch"` keeps it on one line. Defaults to `"all"`.
        keep_steps: int >= 1, steps kept in memory for `to_dataframe()`
            (about 24 + 4 x layers bytes each). Older steps are appended to
            a CSV file in `log_dir` (`grad_norms.<time>.<pid>.csv`, one
            column per layer) and read back by `to_dataframe()`; without
            `log_dir` they are dropped, with a warning. Memory then stays
            flat however long the run. Defaults to 50_000.

    Example:

    ```python
    logger = GradientNormLogger(log_dir="runs/grads")
    history = model.fit(x, y, callbacks=[logger, keras.callbacks.CSVLogger("log.csv")])
    history.history["grad_norm_max"]
    logger.to_dataframe()  # columns: step, fit, epoch, layer, norm
    ```

    References:
        Godbole et al., "Deep Learning Tuning Playbook" (2023): log the
        unclipped gradient norm and pick a clipping threshold from it.
    """

    def __init__(
        self,
        every_n_steps: int = 1,
        per_layer: bool = True,
        log_dir: str | None = None,
        histogram_every: int = 100,
        keep_steps: int = 50_000,
        log_keys: str = "all",
    ):
        super().__init__()
        check_int("GradientNormLogger", "every_n_steps", every_n_steps, 1)
        check_int("GradientNormLogger", "histogram_every", histogram_every, 1)
        check_int("GradientNormLogger", "keep_steps", keep_steps, 1)
        check(isinstance(log_keys, str) and log_keys in LOG_KEYS, "GradientNormLogger",
              "log_keys", log_keys, "one of " + ", ".join(repr(k) for k in LOG_KEYS))
        self.log_keys = log_keys
        self._batch_keys, self._epoch_keys = LOG_KEYS[log_keys]
        check(
            log_dir is None or isinstance(log_dir, (str, bytes))
            or hasattr(log_dir, "__fspath__"),
            "GradientNormLogger", "log_dir", log_dir, "a folder path or None",
        )
        self.every_n_steps = int(every_n_steps)
        self.per_layer = bool(per_layer)
        self.log_dir = None if log_dir is None else str(log_dir)
        self.histogram_every = int(histogram_every)
        self.keep_steps = int(keep_steps)
        self._writer = None
        self._table: NormTable | None = None
        self._model_ref = None
        self._monitor = None  # the monitor _last_index counts in
        self._last_index = 0  # the monitor's rows recorded so far
        self._seen = 0  # ... and read so far (recorded in blocks)
        self._latest = None  # the last read
        self._block_rows = 1
        self._written_at = 0.0  # time.monotonic() of the last TensorBoard write
        self._fits = 0
        self._columns = None  # layer (in the layout) of each variable
        self._layer_groups = None  # (column order by layer, group starts)
        self._layout_paths = None  # the variable paths the layout maps
        self._union_index = None  # layout layer -> column in layer_names
        self.layer_names: list[str] = []
        self.layouts: list[tuple[str, ...]] = []
        self.write_error = None
        self._step_logs = StepLogs("GradientNormLogger")
        self._read_every = self.every_n_steps

    # -- copies ------------------------------------------------------------

    def __getstate__(self):
        """A copy (deep copy, pickle) keeps the record, not the model.

        The copy's `to_dataframe()`, `layer_names` and `layouts` are the
        original's; it is bound to no model and has no open event file (a
        `fit` with it binds it and opens a new one).
        """
        state = dict(self.__dict__)
        for key in _BOUND:
            state[key] = None
        state["_step_logs"] = StepLogs("GradientNormLogger")
        state["_latest"] = None  # recorded already unless mid-fit
        return state

    # -- Keras hooks -------------------------------------------------------

    def on_train_begin(self, logs=None):
        self._bind(self.model)
        # Without the non-finite skip: a logger changes nothing in training
        # (a NaN update is applied, as plain Keras applies it), and its step
        # holds no `cond` (on a 42-variable MLP, x1.30 of plain Adam with
        # it, x1.02 without). NaNGuard and the clipping callbacks turn it on.
        monitor = ensure_monitor(self.model, "GradientNormLogger", skip_nonfinite=False)
        begin_fit(monitor, self.params)
        if self.every_n_steps > monitor.history:
            warnings.warn(
                f"GradientNormLogger(every_n_steps={self.every_n_steps}) reads "
                f"less often than the monitor keeps steps "
                f"(history={monitor.history}); steps in between will be lost.",
                stacklevel=2,
            )
        # Steps recorded before this fit (a fit without this logger) are
        # not ours to log.
        self._monitor = monitor
        self._last_index = monitor.read().count if monitor.built else 0
        self._seen, self._latest = self._last_index, None
        # Rows read but not yet recorded: at most a block, and never so many
        # that the ring could overwrite them before the next read. With
        # log_dir a block is also written once WRITE_SECONDS have passed
        # (a slow model's events still show within seconds), at each
        # epoch's end and at the end of training.
        self._block_rows = max(1, min(BLOCK_ROWS, monitor.history - self.every_n_steps))
        self._written_at = time.monotonic()
        self._fits += 1
        self._pending, self._epoch = 0, 0
        self._reset_epoch()
        if self.log_dir is not None and (
            self._writer is None or self._writer.error is not None
        ):
            from .tensorboard_writer import SummaryWriter, layout_summary

            self._writer = SummaryWriter(self.log_dir, self.histogram_every)
            # Custom Scalars opens on the log10 norm: a spike of 1e5 stays on the axis.
            self._writer.add(layout_summary(), 0)
            self._warn_write_error()
        # Norms wanted every step ride in the step's own logs (`step_logs`).
        # Read less often, a batch where nothing is due costs nothing at
        # all: Keras' own train function, not even two more outputs.
        if self.every_n_steps == 1:
            self._step_logs.begin(self.model)
        self._read_every = self.every_n_steps

    def on_train_batch_begin(self, batch, logs=None):
        if not self._step_logs.due:
            return
        # The first batch: every callback's on_train_begin has run, so the
        # train function is the one this fit uses. On TensorFlow it is
        # swapped for one whose logs carry the step's norms (`step_logs`):
        # the batch logs then need no read, and the record is read in blocks.
        self._step_logs.swap(self.model)
        if self._step_logs.active:
            self._read_every = max(self.every_n_steps, self._block_rows)

    def _bind(self, model):
        bound = None if self._model_ref is None else self._model_ref()
        if bound is not None and bound is not model:
            raise ValueError(
                f"GradientNormLogger was used with model {bound.name!r} and is "
                f"now passed to model {model.name!r}. A logger keeps one "
                "model's record and TensorBoard run; create a new "
                "GradientNormLogger (with its own log_dir) for each model."
            )
        self._model_ref = weakref.ref(model)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._reset_epoch()

    def _reset_epoch(self):
        self._last_batch = -1
        self._sums = np.array([0.0, 0.0, -np.inf])  # finite norms: sum, count, max
        self._clip_sums = np.zeros(2)  # finite clipped norms: sum, count

    def on_train_batch_end(self, batch, logs=None):
        # A batch where no read is due costs two additions and a comparison.
        self._pending += batch - self._last_batch
        self._last_batch = batch
        from_step = self._step_logs.active and logs is not None and KEYS[0] in logs
        if self._step_logs.active and not from_step:
            # Another callback rebuilt the train function mid-fit: read.
            self._step_logs.active, self._read_every = False, self.every_n_steps
        if from_step and len(self._batch_keys) < len(KEYS):
            for key in KEYS:  # the step's logs carry both: keep those asked for
                if key not in self._batch_keys:
                    logs.pop(key, None)
        if self._pending < self._read_every and not self._write_due():
            return
        self._pending = 0
        record = self._read()
        if record is None or record.count == self._seen:
            return
        self._seen = record.count
        if logs is not None and not from_step:
            values = {"grad_norm": record.norm[-1], "grad_norm_clipped": record.norm_clipped[-1]}
            for key in self._batch_keys:
                logs[key] = float(values[key])
        # The record, the epoch statistics and the TensorBoard events take
        # the new rows in blocks: one pass of numpy and one write per block.
        if record.count - self._last_index >= self._block_rows or self._write_due():
            self._collect(record)

    def _write_due(self) -> bool:
        """With log_dir: WRITE_SECONDS have passed since the last write."""
        return (self._writer is not None
                and time.monotonic() - self._written_at >= WRITE_SECONDS)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        self._collect()
        total, n, top = self._sums
        clip_total, clip_n = self._clip_sums
        nan = float("nan")
        values = {"grad_norm": float(total / n) if n else nan,
                  "grad_norm_max": float(top) if n else nan,
                  "grad_norm_clipped": float(clip_total / clip_n) if clip_n else nan}
        for key in values:  # the last step's logs may carry KEYS: keep those asked for
            if key in self._epoch_keys:
                logs[key] = values[key]
            else:
                logs.pop(key, None)

    def on_train_end(self, logs=None):
        self._collect()
        self._step_logs.end(self.model)
        if self._writer is not None:
            self._writer.flush()

    # -- reading -----------------------------------------------------------

    def _read(self) -> GradientRecord | None:
        """The monitor's ring (one device read), or `None` before it is built."""
        monitor = find_monitor(self.model.optimizer)
        if monitor is None or not monitor.built:
            return None
        if monitor is not self._monitor:  # replaced (e.g. a longer ring)
            self._monitor, self._last_index, self._seen = monitor, 0, 0
        self._latest = monitor.read()
        return self._latest

    # -- results -----------------------------------------------------------

    def to_dataframe(self, level: str = "layer") -> pd.DataFrame:
        """The recorded norms as a tidy table.

        Args:
            level: `"layer"` for columns (step, fit, epoch, layer, norm), one
                row per step and layer; `"global"` for (step, fit, epoch,
                grad_norm, grad_norm_clipped), one row per step. Defaults to
                `"layer"`.

        Returns:
            A `pandas.DataFrame`. `step` is the global step (the optimizer's
            iterations after it); `fit` counts this logger's `fit` calls from
            0; `epoch` is Keras' 0-based epoch index within that `fit`. Steps
            beyond `keep_steps` are read back from `log_dir`'s CSV file.
            At `"layer"` level a `layout` column numbers the trainable
            layouts (`self.layouts`): a step has one row per layer that was
            trained in it.

        Raises:
            ValueError: for an unknown `level`, or `"layer"` with
                `per_layer=False`.
        """
        if level not in ("global", "layer"):
            raise ValueError(
                f"GradientNormLogger.to_dataframe received level={level!r}; "
                "expected 'layer' or 'global'."
            )
        if level == "layer" and not self.per_layer:
            raise ValueError(
                "GradientNormLogger.to_dataframe(level='layer') needs "
                "per_layer=True; use level='global' or create the logger with "
                "per_layer=True."
            )
        latest = getattr(self, "_latest", None)
        if self._step_logs.active:
            self._collect()  # mid-fit, reading in blocks: read up to now
        elif latest is not None and latest.count > self._last_index:
            self._collect(latest)  # rows read, not yet recorded
        table = self._table or NormTable([], 1, None)
        wide = table.frame()
        index = ["step", "fit", "epoch"]
        wide = wide.astype({"step": np.int64, "fit": np.int64, "epoch": np.int64})
        if level == "global":
            return wide[index + ["grad_norm", "grad_norm_clipped"]].astype(
                {"grad_norm": np.float64, "grad_norm_clipped": np.float64}
            ).reset_index(drop=True)
        return long_frame(wide, self.layouts)
