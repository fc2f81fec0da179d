"""`GradientNormLogger`: gradient norms in `logs`, History, CSV and TensorBoard."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pandas as pd

from .attach import ensure_monitor, find_monitor, release_monitor
from .gradient_record import GradientRecord
from .layer_names import layer_of_paths
from .validation import check, check_int


class GradientNormLogger(keras.callbacks.Callback):
    """Logs the gradient norm of every training step, globally and per layer.

    On `on_train_begin` it wraps `model.optimizer` in a `GradientMonitor` if
    it is not wrapped already (no recompile needed; the wrapper it installed
    is removed again at `on_train_end`). Then:

    - batch `logs` get `grad_norm` (global norm before clipping) and
      `grad_norm_clipped` (after the optimizer's clipping), so they show in
      the progress bar and in Keras' `TensorBoard(update_freq="batch")`;
    - epoch `logs` get `grad_norm` (mean over the epoch's finite steps),
      `grad_norm_max` and `grad_norm_clipped` (mean), so they land in
      `History`, `CSVLogger` and `TensorBoard`. Put this callback *before*
      those in the `callbacks` list: Keras calls callbacks in order;
    - every step's per-layer norms are kept and returned by `to_dataframe()`;
    - with `log_dir`, TensorBoard scalars `gradients/global_norm`,
      `gradients/global_norm_clipped`, `gradients/layer/<name>` and the
      histogram `gradients/layer_norms` are written for every step.

    Reading every `every_n_steps` steps loses nothing: the monitor's ring
    buffer holds every step in between (also with `steps_per_execution`).

    Args:
        every_n_steps: int >= 1, how often to read the monitor. Defaults to 1.
        per_layer: bool, keep per-layer norms (and write them to TensorBoard).
            Defaults to `True`.
        log_dir: str or `None`, a folder for TensorBoard event files.
            Defaults to `None`.

    Example:

    ```python
    logger = GradientNormLogger(log_dir="runs/grads")
    history = model.fit(x, y, callbacks=[logger, keras.callbacks.CSVLogger("log.csv")])
    history.history["grad_norm_max"]
    logger.to_dataframe()  # columns: step, layer, norm
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
    ):
        super().__init__()
        check_int("GradientNormLogger", "every_n_steps", every_n_steps, 1)
        check(
            log_dir is None or isinstance(log_dir, (str, bytes))
            or hasattr(log_dir, "__fspath__"),
            "GradientNormLogger", "log_dir", log_dir, "a folder path or None",
        )
        self.every_n_steps = int(every_n_steps)
        self.per_layer = bool(per_layer)
        self.log_dir = None if log_dir is None else str(log_dir)
        self._writer = None
        self._reset()

    def _reset(self):
        self._last_step = 0
        self._pending = 0
        self._last_batch = -1
        self._epoch = 0
        self._steps, self._epochs = [], []
        self._norms, self._clipped, self._layer_norms = [], [], []
        self._epoch_start = 0
        self._columns = None
        self._layer_groups = None  # (column order by layer, group starts)
        self.layer_names: list[str] = []

    # -- Keras hooks -------------------------------------------------------

    def on_train_begin(self, logs=None):
        self._reset()
        monitor = ensure_monitor(self.model, "GradientNormLogger")
        if self.every_n_steps > monitor.history:
            warnings.warn(
                f"GradientNormLogger(every_n_steps={self.every_n_steps}) reads "
                f"less often than the monitor keeps steps "
                f"(history={monitor.history}); steps in between will be lost.",
                stacklevel=2,
            )
        if monitor.built:
            self._last_step = monitor.read().count
        if self.log_dir is not None and self._writer is None:
            from .summary import SummaryWriter

            self._writer = SummaryWriter(self.log_dir)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._last_batch = -1
        self._epoch_start = len(self._norms)

    def on_train_batch_end(self, batch, logs=None):
        logs = logs if logs is not None else {}
        self._pending += batch - self._last_batch
        self._last_batch = batch
        if self._pending < self.every_n_steps:
            return
        self._pending = 0
        record = self._collect()
        if record is not None and len(record.steps):
            logs["grad_norm"] = float(record.norm[-1])
            logs["grad_norm_clipped"] = float(record.norm_clipped[-1])

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        self._collect()
        norms = np.array(self._norms[self._epoch_start:], dtype=np.float64)
        clipped = np.array(self._clipped[self._epoch_start:], dtype=np.float64)
        finite = np.isfinite(norms)
        nan = float("nan")
        logs["grad_norm"] = float(norms[finite].mean()) if finite.any() else nan
        logs["grad_norm_max"] = float(norms[finite].max()) if finite.any() else nan
        ok = np.isfinite(clipped)
        logs["grad_norm_clipped"] = float(clipped[ok].mean()) if ok.any() else nan

    def on_train_end(self, logs=None):
        self._collect()
        if self._writer is not None:
            self._writer.flush()
        release_monitor(self.model)

    # -- reading -----------------------------------------------------------

    def _collect(self) -> GradientRecord | None:
        monitor = find_monitor(self.model.optimizer)
        if monitor is None or not monitor.built:
            return None
        record = monitor.read()
        if record.count == self._last_step:
            return None
        new = record.since(self._last_step)
        lost = record.count - self._last_step - len(new.steps)
        if lost > 0:
            warnings.warn(
                f"Step {record.count}: GradientNormLogger lost the norms of "
                f"{lost} steps (the monitor keeps {monitor.history}); lower "
                "every_n_steps or raise the monitor's history.",
                stacklevel=2,
            )
        self._last_step = record.count
        if self._columns is None:
            self.layer_names, self._columns = layer_of_paths(
                self.model, record.variable_paths
            )
        layer = self._per_layer(new.variable_norms)
        self._steps.extend(new.steps.tolist())
        self._epochs.extend([self._epoch] * len(new.steps))
        self._norms.extend(new.norm.tolist())
        self._clipped.extend(new.norm_clipped.tolist())
        if self.per_layer:
            self._layer_norms.extend(layer)
        if self._writer is not None:
            self._writer.write(
                new.steps, new.norm, new.norm_clipped,
                self.layer_names if self.per_layer else [],
                layer if self.per_layer else None,
            )
        return new

    def _per_layer(self, variable_norms: np.ndarray) -> np.ndarray:
        """Combines per-variable norms into per-layer norms (root sum square).

        Columns are grouped by layer with one `reduceat`, so that a NaN stays
        in its own layer.
        """
        if self._layer_groups is None:
            columns = np.asarray(self._columns)
            order = np.argsort(columns, kind="stable")
            starts = np.flatnonzero(np.diff(columns[order], prepend=-1))
            self._layer_groups = (order, starts)
        order, starts = self._layer_groups
        squares = np.square(variable_norms.astype(np.float64))[:, order]
        if not len(squares):
            return np.zeros((0, len(self.layer_names)))
        return np.sqrt(np.add.reduceat(squares, starts, axis=1))

    # -- results -----------------------------------------------------------

    def to_dataframe(self, level: str = "layer") -> pd.DataFrame:
        """The recorded norms as a tidy table.

        Args:
            level: `"layer"` for columns (step, epoch, layer, norm), one row per
                step and layer; `"global"` for (step, epoch, grad_norm,
                grad_norm_clipped), one row per step. Defaults to `"layer"`.

        Returns:
            A `pandas.DataFrame`; steps are 1-based optimizer steps.

        Raises:
            ValueError: for an unknown `level`, or `"layer"` with
                `per_layer=False`.
        """
        if level == "global":
            return pd.DataFrame({
                "step": np.array(self._steps, dtype=np.int64),
                "epoch": np.array(self._epochs, dtype=np.int64),
                "grad_norm": np.array(self._norms, dtype=np.float64),
                "grad_norm_clipped": np.array(self._clipped, dtype=np.float64),
            })
        if level != "layer":
            raise ValueError(
                f"GradientNormLogger.to_dataframe received level={level!r}; "
                "expected 'layer' or 'global'."
            )
        if not self.per_layer:
            raise ValueError(
                "GradientNormLogger.to_dataframe(level='layer') needs "
                "per_layer=True; use level='global' or create the logger with "
                "per_layer=True."
            )
        n_layers = len(self.layer_names)
        norms = np.array(self._layer_norms, dtype=np.float64).reshape(-1)
        return pd.DataFrame({
            "step": np.repeat(np.array(self._steps, dtype=np.int64), n_layers),
            "epoch": np.repeat(np.array(self._epochs, dtype=np.int64), n_layers),
            "layer": np.tile(np.array(self.layer_names, dtype=object), len(self._steps)),
            "norm": norms,
        })
