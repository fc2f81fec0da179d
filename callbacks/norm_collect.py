"""`NormCollect`: the logger's new rows recorded, mapped to layers, written to TensorBoard.

A mixin of `GradientNormLogger` (its state lives on the logger, set in
`__init__` and `on_train_begin`): each read of the monitor's ring goes into
the logger's table (`norm_table.NormTable`), its running statistics and its
event file (`tensorboard_writer.py`); a new set of trainable variables
makes a new layout of layers.
"""

from __future__ import annotations

import os
import time
import warnings

import numpy as np

from .gradient_record import GradientRecord
from .layer_names import layer_of_paths
from .norm_table import NormTable


class NormCollect:
    """The logger's recording of new rows (a mixin: the logger holds the state)."""

    def _collect(self, record: GradientRecord | None = None) -> GradientRecord | None:
        """Records the rows after `_last_index`: table, statistics, events.

        `record`: a read already made (`None` reads the monitor now).
        """
        if record is None:
            record = self._read()
        if record is None or record.count == self._last_index:
            return None
        new = record.since(self._last_index)
        lost = record.count - self._last_index - len(new.steps)
        if lost > 0:
            warnings.warn(
                f"Step {int(record.steps[-1])}: GradientNormLogger lost the "
                f"norms of {lost} steps (the monitor keeps {self._monitor.history}); "
                "lower every_n_steps or raise the monitor's history.",
                stacklevel=2,
            )
        self._last_index = self._seen = record.count
        if record.variable_paths != self._layout_paths:
            self._new_layout(record.variable_paths)
        if self._table is None:
            names = self.layer_names if self.per_layer else []
            self._table = NormTable(names, self.keep_steps, self._spill_path())
        elif self.per_layer and len(self.layer_names) != self._table.n_layers:
            self._table.add_layers(self.layer_names)
        layer = self._per_layer(new.variable_norms) if self.per_layer else None
        wide = None
        if layer is not None:
            wide = np.full((len(layer), len(self.layer_names)), np.nan, np.float32)
            wide[:, self._union_index] = layer
        self._table.append(
            new.steps, self._fits - 1, self._epoch, new.norm, new.norm_clipped,
            wide, layout=len(self.layouts) - 1,
        )
        finite = new.norm[np.isfinite(new.norm)]
        if finite.size:
            self._sums += [finite.sum(dtype=np.float64), finite.size, 0]
            self._sums[2] = max(self._sums[2], float(finite.max()))
        clipped = new.norm_clipped[np.isfinite(new.norm_clipped)]
        self._clip_sums += [clipped.sum(dtype=np.float64), clipped.size]
        if self._writer is not None:
            self._write_events(new, layer)
            self._written_at = time.monotonic()
        return new

    def _new_layout(self, paths: tuple) -> None:
        """Maps the monitor's variables to layers again (the trainable set changed).

        A freeze, an unfreeze or a new layer followed by `compile` gives the
        optimizer (and its monitor) a new list of variables. Their layers make
        a new layout when they differ from the last one: rows carry the
        layout's number, and every layer keeps its own column.
        """
        names, self._columns = layer_of_paths(self.model, paths)
        self._layout_paths, self._layer_groups = paths, None
        if not self.layouts or tuple(names) != self.layouts[-1]:
            self.layouts.append(tuple(names))
        self.layer_names += [n for n in names if n not in self.layer_names]
        self._union_index = np.array(
            [self.layer_names.index(n) for n in names], np.int64
        )

    def _write_events(self, new: GradientRecord, layer) -> None:
        """Writes the new steps; starts a new event file if log_dir vanished."""
        writer = self._writer
        if writer.vanished:
            warnings.warn(
                f"Step {int(new.steps[-1])}: GradientNormLogger's log_dir "
                f"{self.log_dir!r} was deleted during training; it was created "
                "again and the steps still in memory were written to a new "
                "event file.",
                stacklevel=3,
            )
            writer.reopen()
            from .tensorboard_writer import layout_summary

            writer.add(layout_summary(), 0)
            self._replay()
        else:
            writer.write(
                new.steps, new.norm, new.norm_clipped,
                self.layouts[-1] if self.per_layer else [], layer,
            )
        self._warn_write_error()

    def _replay(self) -> None:
        """Writes every row still held (in memory or spilled) to the writer."""
        wide = self._table.frame()
        for layout, rows in wide.groupby("layout", sort=False):
            names = list(self.layouts[layout]) if self.per_layer else []
            layer = rows[[f"layer/{n}" for n in names]].to_numpy(np.float32) \
                if self.per_layer else None
            self._writer.write(
                rows["step"].to_numpy(), rows["grad_norm"].to_numpy(),
                rows["grad_norm_clipped"].to_numpy(), names, layer,
            )

    def _warn_write_error(self) -> None:
        error = self._writer.error
        if error is not None and error is not self.write_error:
            self.write_error = error
            warnings.warn(str(error), stacklevel=3)

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
            return np.zeros((0, len(self.layer_names)), np.float32)
        return np.sqrt(np.add.reduceat(squares, starts, axis=1)).astype(np.float32)

    def _spill_path(self) -> str | None:
        if self.log_dir is None:
            return None
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return os.path.join(self.log_dir, f"grad_norms.{stamp}.{os.getpid()}.csv")
