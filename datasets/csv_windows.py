"""Sliding windows over a CSV time series, for next-step prediction."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ._checks import check_int

_FUNC = "load_csv_windows"


def load_csv_windows(
    path: str | os.PathLike,
    *,
    target: str,
    seq_len: int,
    features: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Reads a CSV time series and cuts it into windows for next-step prediction.

    The rows of the file are taken to be consecutive time steps. Window `i`
    holds rows `i, ..., i + seq_len - 1` of the feature columns and its label
    is the target column at row `i + seq_len`, the step right after the
    window. A file with `N` rows gives `N - seq_len` windows.

    Every value used must be a finite number: the loader never drops a
    column or a row on its own. A non-numeric cell, an empty cell or NaN, and
    an infinite value are errors that name the column, the row and the value,
    so a typo in row 40,000 is found here rather than as a NaN loss.

    Rows are counted from 0 over the data rows, the header not counted, as in
    `pandas.read_csv(path).iloc[row]`.

    Args:
        path: Path of the CSV file; the first line is the header.
        target: Name of the column to predict.
        seq_len: Number of time steps in a window, an int >= 1.
        features: Names of the columns the model sees, in that order.
            Defaults to `None`: every column except `target`. Pass a list that
            includes `target` to also feed the target's own past (a univariate
            series needs `features=[target]`).

    Returns:
        A tuple `(x, y)`: `x` is a float32 array of shape
        `(N - seq_len, seq_len, len(features))` and `y` a float32 array of
        shape `(N - seq_len, 1)`.

    Raises:
        FileNotFoundError: If there is no file at `path`.
        ValueError: If a column is missing, no feature column is left, the
            series has fewer than `seq_len + 1` rows, or a value is
            non-numeric, missing (NaN) or infinite.

    Example:

    >>> import pathlib, tempfile
    >>> csv = pathlib.Path(tempfile.mkdtemp()) / "series.csv"
    >>> _ = csv.write_text("load,temp\\n1,10\\n2,11\\n3,12\\n4,13\\n")
    >>> x, y = load_csv_windows(csv, target="load", seq_len=2)
    >>> x[:, :, 0].tolist(), y.ravel().tolist()
    ([[10.0, 11.0], [11.0, 12.0]], [3.0, 4.0])
    """
    seq_len = check_int(_FUNC, "seq_len", seq_len, 1)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{_FUNC} found no file at path={os.fspath(path)!r} (absolute: "
            f"{os.path.abspath(path)!r})."
        )
    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise ValueError(
            f"{_FUNC} received an empty file: {os.fspath(path)!r}; expected a "
            "header line and one row per time step."
        ) from None

    available = list(frame.columns)
    if not isinstance(target, str) or target not in available:
        raise ValueError(
            f"{_FUNC} received target={target!r}, which is not a column of "
            f"{os.fspath(path)!r}. Available columns: {available}."
        )
    if features is None:
        features = [c for c in available if c != target]
        if not features:
            raise ValueError(
                f"{_FUNC} found no feature column in {os.fspath(path)!r}: its "
                f"only column is the target {target!r}. Pass "
                f"features=[{target!r}] to predict the series from its own past."
            )
    else:
        if isinstance(features, str) or not all(isinstance(c, str) for c in features):
            raise ValueError(
                f"{_FUNC} received features={features!r}; expected a list of "
                f"column names, e.g. [{available[0]!r}]."
            )
        features = list(features)
        if not features:
            raise ValueError(
                f"{_FUNC} received features=[]; expected at least one column "
                f"name. Available columns: {available}."
            )
        missing = [c for c in features if c not in available]
        if missing:
            raise ValueError(
                f"{_FUNC} received features={features!r}, but {missing} "
                f"{'is not a column' if len(missing) == 1 else 'are not columns'} "
                f"of {os.fspath(path)!r}. Available columns: {available}."
            )

    n_rows = len(frame)
    if n_rows < seq_len + 1:
        raise ValueError(
            f"{_FUNC} needs at least seq_len + 1 = {seq_len + 1} rows to make "
            f"one window of seq_len={seq_len} plus its next-step target, but "
            f"{os.fspath(path)!r} has {n_rows} rows. Use seq_len <= "
            f"{max(n_rows - 1, 0)} or a longer series."
        )

    columns = {}
    for name in dict.fromkeys([*features, target]):
        columns[name] = _numeric_column(frame[name], name, path)

    values = np.stack([columns[c] for c in features], axis=-1)
    windows = np.lib.stride_tricks.sliding_window_view(values, seq_len, axis=0)
    # (n_rows - seq_len + 1, n_features, seq_len) -> drop the last window,
    # which has no next step, and put time before features.
    x = np.ascontiguousarray(windows[:-1].transpose(0, 2, 1), dtype=np.float32)
    y = columns[target][seq_len:].reshape(-1, 1).astype(np.float32)
    return x, y


def _numeric_column(column: pd.Series, name: str, path: str | os.PathLike) -> np.ndarray:
    """Returns `column` as float64, or raises a ValueError at its first bad cell."""
    numbers = pd.to_numeric(column, errors="coerce")
    non_numeric = numbers.isna() & column.notna()
    if non_numeric.any():
        row = int(np.flatnonzero(non_numeric.to_numpy())[0])
        raise ValueError(
            f"{_FUNC}: column {name!r} of {os.fspath(path)!r} has a "
            f"non-numeric value {column.iloc[row]!r} at row {row} (data rows "
            "counted from 0, header excluded). Fix the file, or leave the "
            "column out with features=[...]."
        )
    values = numbers.to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        if np.isnan(values[row]):
            kind = "a missing value (empty or NaN)"
        else:
            kind = f"an infinite value ({values[row]})"
        raise ValueError(
            f"{_FUNC}: column {name!r} of {os.fspath(path)!r} has {kind} at "
            f"row {row} (data rows counted from 0, header excluded). Fill or "
            "drop that row in the file first."
        )
    return values
