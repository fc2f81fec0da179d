"""`NormTable`: a logger's record of norms, in compact blocks with a bounded window."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pandas as pd

_BLOCK = 4096  # rows per preallocated block (fewer when keep_steps is smaller)
_COLUMNS = ("step", "fit", "epoch", "layout", "grad_norm", "grad_norm_clipped")


class NormTable:
    """Per-step norms kept as float32/int blocks, at most `keep_steps` in memory.

    Rows go into preallocated blocks of up to 4096 steps (one numpy array per
    column and block, not one object per step). When more than `keep_steps`
    rows are held, whole blocks move out of memory: appended to `spill_path`
    (a CSV file with one column per layer) when one is given, else dropped
    with a one-time warning. `frame()` reads the spilled rows back.

    Layer columns can be added (`add_layers`) when the trainable layers
    change; older rows hold NaN there, and later spills go to a new file
    (`<spill_path stem>.<n>.csv`) so that every CSV file has one header.
    A spill file that vanished (its folder deleted) or a folder that can no
    longer be written (a full disk) costs those rows, with one warning
    naming the path, never the run.

    Args:
        layer_names: names of the per-layer norm columns (empty for none).
        keep_steps: int >= 1, rows kept in memory.
        spill_path: CSV file for older rows, or `None` to drop them.
    """

    def __init__(self, layer_names, keep_steps: int, spill_path: str | None):
        self.layer_names = list(layer_names)
        self.keep_steps = keep_steps
        self.spill_path = spill_path
        self._spill_files: list[list] = []  # [path, rows] per file written
        self.spilled = 0  # rows written to spill files
        self.dropped = 0  # rows dropped (no spill_path, lost or unwritable)
        self._warned: set[str] = set()
        self.block = min(_BLOCK, keep_steps)
        self._blocks: list[dict] = []
        self._fill = 0  # rows used in the last block

    @property
    def n_layers(self) -> int:
        return len(self.layer_names)

    def __len__(self) -> int:
        return self.spilled + self.dropped + self.rows_in_memory

    @property
    def rows_in_memory(self) -> int:
        return max(len(self._blocks) - 1, 0) * self.block + self._fill

    def _new_block(self) -> dict:
        return {
            "step": np.zeros(self.block, np.int64),
            "fit": np.zeros(self.block, np.int32),
            "epoch": np.zeros(self.block, np.int32),
            "layout": np.zeros(self.block, np.int32),
            "grad_norm": np.zeros(self.block, np.float32),
            "grad_norm_clipped": np.zeros(self.block, np.float32),
            "layers": np.full((self.block, self.n_layers), np.nan, np.float32),
        }

    def add_layers(self, names) -> None:
        """Adds per-layer columns (NaN in the rows already held)."""
        names = [n for n in names if n not in self.layer_names]
        if not names:
            return
        self.layer_names += names
        for block in self._blocks:
            pad = np.full((self.block, len(names)), np.nan, np.float32)
            block["layers"] = np.concatenate([block["layers"], pad], axis=1)
        if self._spill_files:  # a new header: a new file
            self._spill_files.append([None, 0])

    def append(self, steps, fit: int, epoch: int, norm, clipped, layers,
               layout: int = 0) -> None:
        """Adds one row per step; `layers` is `(T, n_layers)` or `None`."""
        start, total = 0, len(steps)
        while start < total:
            if not self._blocks or self._fill == self.block:
                self._blocks.append(self._new_block())
                self._fill = 0
            block, at = self._blocks[-1], self._fill
            n = min(total - start, self.block - at)
            part = slice(start, start + n)
            block["step"][at:at + n] = steps[part]
            block["fit"][at:at + n] = fit
            block["epoch"][at:at + n] = epoch
            block["layout"][at:at + n] = layout
            block["grad_norm"][at:at + n] = norm[part]
            block["grad_norm_clipped"][at:at + n] = clipped[part]
            if layers is not None and self.n_layers:
                block["layers"][at:at + n] = layers[part]
            self._fill += n
            start += n
        while len(self._blocks) > 1 and self.rows_in_memory - self.block >= self.keep_steps:
            self._evict(self._blocks.pop(0))

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, stacklevel=4)

    def _evict(self, block: dict) -> None:
        if self.spill_path is None:
            self._warn_once("window", (
                f"GradientNormLogger keeps the last {self.keep_steps} steps "
                "in memory and has no log_dir to move older ones to; "
                "to_dataframe() will start at step "
                f"{int(block['step'][-1]) + 1}. Pass log_dir to keep "
                "them on disk, or raise keep_steps."
            ))
            self.dropped += self.block
            return
        if not self._spill_files:
            self._spill_files.append([self.spill_path, 0])
        entry = self._spill_files[-1]
        if entry[0] is None:  # layers were added: a file with the new header
            stem, ext = os.path.splitext(self.spill_path)
            entry[0] = f"{stem}.{len(self._spill_files)}{ext}"
        self._check_spilled()
        try:
            os.makedirs(os.path.dirname(entry[0]) or ".", exist_ok=True)
            self._block_frame(block, self.block).to_csv(
                entry[0], mode="a", header=entry[1] == 0, index=False
            )
        except OSError as error:
            self._warn_once("write", (
                f"GradientNormLogger could not move old steps to "
                f"{entry[0]!r}: {error.strerror or error}; steps up to "
                f"{int(block['step'][-1])} are dropped from to_dataframe(). "
                "Free space under log_dir, or raise keep_steps."
            ))
            self.dropped += self.block
            return
        entry[1] += self.block
        self.spilled += self.block

    def _check_spilled(self) -> None:
        """Counts the rows of spill files that vanished as dropped, warning once."""
        for entry in self._spill_files:
            path, rows = entry
            if rows and not os.path.exists(path):
                self._warn_once("lost", (
                    f"GradientNormLogger's file of old steps {path!r} was "
                    f"deleted during training; its {rows} steps are gone "
                    "from to_dataframe(). Keep log_dir until the run ends."
                ))
                self.spilled -= rows
                self.dropped += rows
                entry[1] = 0

    def _block_frame(self, block: dict, n: int) -> pd.DataFrame:
        data = {name: block[name][:n] for name in _COLUMNS}
        for j, name in enumerate(self.layer_names):
            data[f"layer/{name}"] = block["layers"][:n, j]
        return pd.DataFrame(data)

    def frame(self) -> pd.DataFrame:
        """Every row still available (spilled ones read back), wide format."""
        self._check_spilled()
        parts = [pd.read_csv(path) for path, rows in self._spill_files if rows]
        for i, block in enumerate(self._blocks):
            n = self._fill if i == len(self._blocks) - 1 else self.block
            parts.append(self._block_frame(block, n))
        empty = self._block_frame(self._new_block(), 0)
        if not parts:
            return empty
        return pd.concat(parts, ignore_index=True)[list(empty.columns)]


def long_frame(wide: pd.DataFrame, layouts) -> pd.DataFrame:
    """One row per step and layer of that step's layout, in step order."""
    parts = []
    for layout, rows in wide.groupby("layout", sort=False):
        names = list(layouts[layout]) if layouts else []
        n = len(names)
        norms = rows[[f"layer/{name}" for name in names]].to_numpy(np.float64)
        parts.append(pd.DataFrame({
            "row": np.repeat(rows.index.to_numpy(), n),
            "step": np.repeat(rows["step"].to_numpy(), n),
            "fit": np.repeat(rows["fit"].to_numpy(), n),
            "epoch": np.repeat(rows["epoch"].to_numpy(), n),
            "layer": np.tile(np.array(names, dtype=object), len(rows)),
            "norm": norms.reshape(-1),
            "layout": np.int64(layout),
        }))
    if not parts:
        return pd.DataFrame({
            "step": np.zeros(0, np.int64), "fit": np.zeros(0, np.int64),
            "epoch": np.zeros(0, np.int64), "layer": np.zeros(0, object),
            "norm": np.zeros(0), "layout": np.zeros(0, np.int64),
        })
    frame = pd.concat(parts, ignore_index=True)
    frame = frame.sort_values("row", kind="stable").drop(columns="row")
    return frame.reset_index(drop=True)
