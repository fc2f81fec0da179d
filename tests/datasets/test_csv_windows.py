import re

import numpy as np
import pytest

from gradguard.datasets import load_csv_windows


def _write(tmp_path, text, name="series.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture
def series(tmp_path):
    # 6 time steps, 3 columns.
    text = "a,b,y\n" + "".join(f"{i},{10 * i},{100 + i}\n" for i in range(6))
    return _write(tmp_path, text)


def _manual_windows(table, feature_idx, target_idx, seq_len):
    x = [table[i : i + seq_len][:, feature_idx] for i in range(len(table) - seq_len)]
    y = [[table[i + seq_len, target_idx]] for i in range(len(table) - seq_len)]
    return np.array(x, np.float32), np.array(y, np.float32)


@pytest.mark.parametrize("seq_len", [1, 2, 5])
def test_default_features_are_all_columns_but_the_target(series, seq_len):
    table = np.array([[i, 10 * i, 100 + i] for i in range(6)], np.float64)
    x, y = load_csv_windows(series, target="y", seq_len=seq_len)
    expected_x, expected_y = _manual_windows(table, [0, 1], 2, seq_len)
    assert x.dtype == np.float32 and y.dtype == np.float32
    assert x.shape == (6 - seq_len, seq_len, 2) and y.shape == (6 - seq_len, 1)
    np.testing.assert_array_equal(x, expected_x)
    np.testing.assert_array_equal(y, expected_y)


def test_explicit_features_keep_their_order_and_may_include_the_target(series):
    table = np.array([[i, 10 * i, 100 + i] for i in range(6)], np.float64)
    x, y = load_csv_windows(series, target="y", seq_len=3, features=["y", "a"])
    expected_x, expected_y = _manual_windows(table, [2, 0], 2, 3)
    np.testing.assert_array_equal(x, expected_x)
    np.testing.assert_array_equal(y, expected_y)
    # The label of window i is the step right after its last row.
    assert y[0, 0] == x[1, -1, 0]


def test_univariate_series_with_features_equal_to_target(tmp_path):
    path = _write(tmp_path, "v\n1\n2\n3\n")
    x, y = load_csv_windows(path, target="v", seq_len=2, features=["v"])
    np.testing.assert_array_equal(x, [[[1.0], [2.0]]])
    np.testing.assert_array_equal(y, [[3.0]])


def test_a_non_numeric_column_that_is_not_used_is_ignored(tmp_path):
    path = _write(tmp_path, "date,v\nmon,1\ntue,2\nwed,3\n")
    x, y = load_csv_windows(path, target="v", seq_len=1, features=["v"])
    np.testing.assert_array_equal(y, [[2.0], [3.0]])


def test_missing_file(tmp_path):
    path = tmp_path / "nope.csv"
    with pytest.raises(FileNotFoundError, match=re.escape(f"load_csv_windows found no file at path={str(path)!r}")):
        load_csv_windows(path, target="y", seq_len=2)


def test_missing_target_column_lists_the_columns(series):
    message = (
        f"load_csv_windows received target='z', which is not a column of {str(series)!r}. "
        "Available columns: ['a', 'b', 'y']."
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        load_csv_windows(series, target="z", seq_len=2)


def test_missing_feature_column_lists_the_columns(series):
    message = (
        f"load_csv_windows received features=['a', 'c'], but ['c'] is not a column of "
        f"{str(series)!r}. Available columns: ['a', 'b', 'y']."
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        load_csv_windows(series, target="y", seq_len=2, features=["a", "c"])


def test_only_the_target_column_and_default_features(tmp_path):
    path = _write(tmp_path, "v\n1\n2\n3\n")
    message = (
        f"load_csv_windows found no feature column in {str(path)!r}: its only column is "
        "the target 'v'. Pass features=['v'] to predict the series from its own past."
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        load_csv_windows(path, target="v", seq_len=1)


@pytest.mark.parametrize("seq_len, rows", [(6, 6), (10, 6)])
def test_series_too_short(series, seq_len, rows):
    message = (
        f"load_csv_windows needs at least seq_len + 1 = {seq_len + 1} rows to make one "
        f"window of seq_len={seq_len} plus its next-step target, but {str(series)!r} has "
        f"{rows} rows. Use seq_len <= 5 or a longer series."
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        load_csv_windows(series, target="y", seq_len=seq_len)


def test_non_numeric_value_names_column_row_and_value(tmp_path):
    path = _write(tmp_path, "a,y\n1,1\n2,2\n3,x3\n4,oops\n5,5\n")
    message = (
        f"load_csv_windows: column 'y' of {str(path)!r} has a non-numeric value 'x3' at "
        "row 2 (data rows counted from 0, header excluded). Fix the file, or leave the "
        "column out with features=[...]."
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        load_csv_windows(path, target="y", seq_len=2)


@pytest.mark.parametrize("cell", ["", "NaN", "nan"])
def test_nan_value_names_column_and_row(tmp_path, cell):
    path = _write(tmp_path, f"a,y\n1,1\n2,2\n3,3\n{cell},4\n")
    message = (
        f"load_csv_windows: column 'a' of {str(path)!r} has a missing value (empty or "
        "NaN) at row 3 (data rows counted from 0, header excluded). Fill or drop that "
        "row in the file first."
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        load_csv_windows(path, target="y", seq_len=2)


def test_infinite_value_names_column_and_row(tmp_path):
    path = _write(tmp_path, "a,y\n1,1\ninf,2\n3,3\n")
    with pytest.raises(ValueError, match=re.escape("has an infinite value (inf) at row 1")):
        load_csv_windows(path, target="y", seq_len=1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(target="y", seq_len=0), "load_csv_windows received seq_len=0; expected an int >= 1."),
        (
            dict(target="y", seq_len=2, features="a"),
            "load_csv_windows received features='a'; expected a list of column names, e.g. ['a'].",
        ),
        (
            dict(target="y", seq_len=2, features=[]),
            "load_csv_windows received features=[]; expected at least one column name. "
            "Available columns: ['a', 'b', 'y'].",
        ),
    ],
)
def test_bad_arguments(series, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        load_csv_windows(series, **kwargs)


def test_empty_file(tmp_path):
    path = _write(tmp_path, "")
    with pytest.raises(ValueError, match=re.escape(f"load_csv_windows received an empty file: {str(path)!r}")):
        load_csv_windows(path, target="y", seq_len=1)
