"""`NormTable`: a logger's record of norms, in compact blocks with a bounded window."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pandas as pd

_BLOCK = 4096  # rows per preallocated block (fewer when keep_steps is smaller)
_COLUMNS = ("step", "fit", "epoch", "grad_norm", "grad_norm_clipped")


class NormTable:
    """Per-step norms kept as float32/int blocks, at most `keep_steps` in memory.

    Rows go into preallocated blocks of up to 4096 steps (one numpy array per
    column and block, not one object per step). When more than `keep_steps`
    rows are held, whole blocks move out of memory: appended to `spill_path`
    (a CSV file with one column per layer) when one is given, else dropped
    with a one-time warning. `frame()` reads the spilled rows back.

    Args:
        n_layers: number of per-layer norm columns (0 for none).
        layer_names: names of those columns.
        keep_steps: int >= 1, rows kept in memory.
        spill_path: CSV file for older rows, or `None` to drop them.
    """

    def __init__(self, n_layers: int, layer_names, keep_steps: int,
                 spill_path: str | None):
        self.n_layers = n_layers
        self.layer_names = list(layer_names)
        self.keep_steps = keep_steps
        self.spill_path = spill_path
        self.spilled = 0  # rows written to spill_path
        self.dropped = 0  # rows dropped (no spill_path)
        self.block = min(_BLOCK, keep_steps)
        self._blocks: list[dict] = []
        self._fill = 0  # rows used in the last block

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
            "grad_norm": np.zeros(self.block, np.float32),
            "grad_norm_clipped": np.zeros(self.block, np.float32),
            "layers": np.zeros((self.block, self.n_layers), np.float32),
        }

    def append(self, steps, fit: int, epoch: int, norm, clipped, layers) -> None:
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
            block["grad_norm"][at:at + n] = norm[part]
            block["grad_norm_clipped"][at:at + n] = clipped[part]
            if layers is not None and self.n_layers:
                block["layers"][at:at + n] = layers[part]
            self._fill += n
            start += n
        while len(self._blocks) > 1 and self.rows_in_memory - self.block >= self.keep_steps:
            self._evict(self._blocks.pop(0))

    def _evict(self, block: dict) -> None:
        if self.spill_path is None:
            if not self.dropped:
                warnings.warn(
                    f"GradientNormLogger keeps the last {self.keep_steps} steps "
                    "in memory and has no log_dir to move older ones to; "
                    "to_dataframe() will start at step "
                    f"{int(block['step'][-1]) + 1}. Pass log_dir to keep "
                    "them on disk, or raise keep_steps.",
                    stacklevel=3,
                )
            self.dropped += self.block
            return
        frame = self._block_frame(block, self.block)
        header = not os.path.exists(self.spill_path)
        frame.to_csv(self.spill_path, mode="a", header=header, index=False)
        self.spilled += self.block

    def _block_frame(self, block: dict, n: int) -> pd.DataFrame:
        data = {name: block[name][:n] for name in _COLUMNS}
        for j, name in enumerate(self.layer_names):
            data[f"layer/{name}"] = block["layers"][:n, j]
        return pd.DataFrame(data)

    def frame(self) -> pd.DataFrame:
        """Every row still available (spilled ones read back), wide format."""
        parts = []
        if self.spilled:
            parts.append(pd.read_csv(self.spill_path))
        for i, block in enumerate(self._blocks):
            n = self._fill if i == len(self._blocks) - 1 else self.block
            parts.append(self._block_frame(block, n))
        if not parts:
            return self._block_frame(self._new_block(), 0)
        return pd.concat(parts, ignore_index=True)

