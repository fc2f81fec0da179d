"""Sliding windows over a CSV time series, for next-step prediction."""

from __future__ import annotations

import csv
import os
import re
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ._checks import check_int

_FUNC = "load_csv_windows"
_FLOAT32_MAX = float(np.finfo(np.float32).max)
# Messages of pandas' C tokenizer; its lines count from 1, its rows from 0,
# both with the header included.
_EXPECTED_FIELDS = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")
_OPEN_QUOTE = re.compile(r"EOF inside string starting at row (\d+)")


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

    Every value used must be a finite number that fits in float32: the
    loader never drops a column or a row on its own. A non-numeric cell, an
    empty cell or NaN, an infinite value and a value beyond float32's range
    (magnitude above about 3.4e38, which would become `inf`) are errors that
    name the column, the row and the value, so a typo in row 40,000 is found
    here rather than as a NaN loss. So are a file that is not UTF-8, a line
    pandas cannot parse (more fields than the header has names, an unclosed
    quote) and a header that names a column twice (pandas would rename the
    copy to `name.1` and use it as another feature); these errors name the
    file and, where there is one, the line.

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
        ValueError: If the file is empty, not UTF-8 or not a well-formed
            CSV table, its header repeats a column name, a column is missing,
            no feature column is left, the series has fewer than
            `seq_len + 1` rows, or a value is non-numeric, missing (NaN),
            infinite or beyond float32's range.

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
    # pandas renames a repeated column name ("x", "x.1"), so the header is
    # read raw first, as one row of strings.
    first_row = _read_csv(path, None, header=None, nrows=1, dtype=str, keep_default_na=False)
    raw_header = first_row.iloc[0].tolist()
    _check_unique_names(raw_header, path)
    frame = _read_csv(path, raw_header)

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


def _read_csv(path: str | os.PathLike, raw_header: list[str] | None, **kwargs) -> pd.DataFrame:
    """`pandas.read_csv`, with its errors as ValueErrors naming the file and line.

    `raw_header` is the file's header as written, for the messages (`None` while reading
    the header itself). `index_col=False` and the ParserWarning turned into an
    error stop pandas from silently taking the first column as the row index
    (or dropping fields) when data lines have more fields than the header.
    """
    name = os.fspath(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            return pd.read_csv(path, index_col=False, **kwargs)
    except pd.errors.EmptyDataError:
        raise ValueError(
            f"{_FUNC} received an empty file: {name!r}; expected a header line "
            "and one row per time step."
        ) from None
    except UnicodeDecodeError as err:
        line, byte = _first_non_utf8(path) or (None, err.object[err.start : err.start + 1])
        where = f"line {line} has" if line else "it has"
        raise ValueError(
            f"{_FUNC} could not read {name!r} as UTF-8: {where} the byte "
            f"0x{byte.hex()}, which is not valid UTF-8 (lines counted from 1, header "
            "included). Save the file as UTF-8 first, e.g. for a Latin-1 file: "
            "p.write_text(p.read_text(encoding='latin-1'), encoding='utf-8')."
        ) from err
    except pd.errors.ParserWarning as err:
        long_line = _first_line_longer_than(path, len(raw_header or ()))
        line, saw = long_line or (None, None)
        raise ValueError(_too_many_fields(name, raw_header, line, saw)) from err
    except pd.errors.ParserError as err:
        text = str(err)
        if match := _EXPECTED_FIELDS.search(text):
            _, line, saw = map(int, match.groups())
            raise ValueError(_too_many_fields(name, raw_header, line, saw)) from err
        if match := _OPEN_QUOTE.search(text):
            line = int(match.group(1)) + 1
            raise ValueError(
                f"{_FUNC} could not parse {name!r}: the quote opened on line {line} "
                "is never closed (lines counted from 1, header included). Close "
                'it (write a quote inside a value as "") or remove it.'
            ) from err
        raise ValueError(
            f"{_FUNC} could not parse {name!r} as a comma-separated table: "
            f"{text.strip()}"
        ) from err


def _too_many_fields(name: str, header: list[str] | None, line: int | None, saw: int | None) -> str:
    """The message for a data line with more fields than the header has names."""
    n = len(header or ())
    where = f"line {line} has {saw} fields" if line else "a line has more fields"
    return (
        f"{_FUNC} could not parse {name!r}: {where}, but the header has {n} "
        f"column names {header} (lines counted from 1, header included). Remove "
        "the extra field, quote a value that contains a comma, or name the extra "
        "column in the header."
    )


def _first_line_longer_than(path: str | os.PathLike, n_fields: int) -> tuple[int, int] | None:
    """Returns (line, number of fields) of the first record with > n_fields."""
    with open(path, encoding="utf-8", errors="replace", newline="") as file:
        reader = csv.reader(file)
        for fields in reader:
            if len(fields) > n_fields:
                return reader.line_num, len(fields)
    return None


def _first_non_utf8(path: str | os.PathLike) -> tuple[int, bytes] | None:
    """Returns (line, byte) of the first byte that is not valid UTF-8."""
    with open(path, "rb") as file:
        for line, raw in enumerate(file, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as err:
                return line, raw[err.start : err.start + 1]
    return None


def _check_unique_names(header: list[str], path: str | os.PathLike) -> None:
    """Raises a ValueError if the raw header names a column more than once."""
    positions: dict[str, list[int]] = {}
    for i, name in enumerate(header):
        if name:  # pandas names empty cells "Unnamed: <i>", which are distinct
            positions.setdefault(name, []).append(i)
    repeated = {name: where for name, where in positions.items() if len(where) > 1}
    if repeated:
        listed = "; ".join(f"{name!r} at columns {where}" for name, where in repeated.items())
        example = next(iter(repeated))
        raise ValueError(
            f"{_FUNC} found a repeated column name in the header of "
            f"{os.fspath(path)!r}: {listed} (columns counted from 0). pandas would "
            f"silently rename the copy (e.g. to {example + '.1'!r}) and use it as "
            "another column. Give every column its own name in the header line."
        )


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
    with np.errstate(over="ignore"):
        overflow = np.isinf(values.astype(np.float32))
    if overflow.any():
        row = int(np.flatnonzero(overflow)[0])
        value = float(values[row])
        raise ValueError(
            f"{_FUNC}: column {name!r} of {os.fspath(path)!r} has the value "
            f"{value!r} at row {row} (data rows counted from 0, header excluded), "
            f"beyond float32's range (largest magnitude {_FLOAT32_MAX:.8g}): as "
            f"float32 it would become {'-inf' if value < 0 else 'inf'}. Rescale that "
            "column in the file (e.g. use larger units, or take its logarithm), or "
            "leave it out with features=[...]."
        )
    return values
