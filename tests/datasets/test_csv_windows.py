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


# ---------------------------------------------------------------------------
# Bad input: values beyond float32, malformed lines, non-UTF-8 files and
# repeated column names are errors naming the file and where to look.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cell, value, becomes", [("1e39", "1e+39", "inf"), ("-4e38", "-4e+38", "-inf")]
)
def test_value_beyond_float32_names_column_row_value_and_fix(tmp_path, cell, value, becomes):
    path = _write(tmp_path, f"a,y\n1,1\n{cell},2\n3,3\n")
    message = (
        f"load_csv_windows: column 'a' of {str(path)!r} has the value {value} at row 1 "
        "(data rows counted from 0, header excluded), beyond float32's range (largest "
        f"magnitude 3.4028235e+38): as float32 it would become {becomes}. Rescale that "
        "column in the file (e.g. use larger units, or take its logarithm), or leave it "
        "out with features=[...]."
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        load_csv_windows(path, target="y", seq_len=1)


def test_the_largest_float32_value_is_kept(tmp_path):
    largest = np.finfo(np.float32).max
    path = _write(tmp_path, f"a,y\n1,1\n{float(largest)!r},2\n3,3\n")
    x, _ = load_csv_windows(path, target="y", seq_len=1)
    assert x[1, 0, 0] == largest and np.isfinite(x).all()


@pytest.mark.parametrize(
    "text, line, fields",
    [
        ("a,y\n1,1\n2,2,9\n3,3\n", 3, 3),  # pandas' ParserError
        ("a,y\n1,1\n2,2\n3,3\n4,4,4,4\n", 5, 4),
        # Every data line one field longer: pandas would silently make the first
        # field the row index and shift the columns.
        ("a,y\n0,1,1\n1,2,2\n2,3,3\n", 2, 3),
    ],
)
def test_a_line_with_extra_fields_names_file_and_line(tmp_path, text, line, fields):
    path = _write(tmp_path, text)
    message = (
        f"load_csv_windows could not parse {str(path)!r}: line {line} has {fields} "
        "fields, but the header has 2 column names ['a', 'y'] (lines counted from 1, "
        "header included). Remove the extra field, quote a value that contains a "
        "comma, or name the extra column in the header."
    )
    with pytest.raises(ValueError, match=re.escape(message)) as error:
        load_csv_windows(path, target="y", seq_len=1)
    # The parser's own error stays attached as the cause.
    assert error.value.__cause__ is not None


@pytest.mark.parametrize("text, line", [('a,y\n1,1\n2,2\n"3,3\n4,4\n', 4), ('a,"y\n1,1\n', 1)])
def test_an_unclosed_quote_names_file_and_line(tmp_path, text, line):
    path = _write(tmp_path, text)
    message = (
        f"load_csv_windows could not parse {str(path)!r}: the quote opened on line "
        f"{line} is never closed (lines counted from 1, header included). Close it "
        '(write a quote inside a value as "") or remove it.'
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        load_csv_windows(path, target="y", seq_len=1)


@pytest.mark.parametrize(
    "data, line",
    [
        ("a,y\n1,1\n2,2\ncaf\u00e9,3\n4,4\n".encode("latin-1"), 4),  # a Latin-1 cell
        ("temp\u00b0C,y\n1,1\n2,2\n".encode("latin-1"), 1),  # a Latin-1 header
        ("a,y\n1,1\n2,2\n".encode("utf-16"), 1),  # UTF-16 starts with the byte 0xff
    ],
)
def test_a_file_that_is_not_utf8_names_file_line_and_byte(tmp_path, data, line):
    path = tmp_path / "series.csv"
    path.write_bytes(data)
    first_bad = next(b for b in data.split(b"\n")[line - 1] if b >= 0x80)
    message = (
        f"load_csv_windows could not read {str(path)!r} as UTF-8: line {line} has the "
        f"byte 0x{first_bad:02x}, which is not valid UTF-8 (lines counted from 1, header "
        "included). Save the file as UTF-8 first, e.g. for a Latin-1 file: "
        "p.write_text(p.read_text(encoding='latin-1'), encoding='utf-8')."
    )
    with pytest.raises(ValueError, match=re.escape(message)) as error:
        load_csv_windows(path, target="y", seq_len=1)
    assert isinstance(error.value.__cause__, UnicodeDecodeError)


def test_the_fix_the_utf8_message_suggests_works(tmp_path):
    p = tmp_path / "series.csv"
    p.write_bytes("caf\u00e9,y\n1,1\n2,2\n".encode("latin-1"))
    with pytest.raises(ValueError, match="as UTF-8: line 1 has the byte 0xe9"):
        load_csv_windows(p, target="y", seq_len=1)
    p.write_text(p.read_text(encoding="latin-1"), encoding="utf-8")
    x, y = load_csv_windows(p, target="y", seq_len=1, features=["caf\u00e9"])
    np.testing.assert_array_equal(x, [[[1.0]]])
    np.testing.assert_array_equal(y, [[2.0]])


@pytest.mark.parametrize(
    "header, listed, example",
    [
        ("x,x,y", "'x' at columns [0, 1]", "x.1"),
        # A real column named x.1 does not hide the repeat (pandas would make the copy x.2).
        ("x,x.1,x,y", "'x' at columns [0, 2]", "x.1"),
        ("y,a,y,a", "'y' at columns [0, 2]; 'a' at columns [1, 3]", "y.1"),
    ],
)
def test_a_repeated_column_name_is_an_error(tmp_path, header, listed, example):
    n = header.count(",") + 1
    rows = "".join(",".join([str(i)] * n) + "\n" for i in range(4))
    path = _write(tmp_path, header + "\n" + rows)
    message = (
        f"load_csv_windows found a repeated column name in the header of {str(path)!r}: "
        f"{listed} (columns counted from 0). pandas would silently rename the copy "
        f"(e.g. to {example!r}) and use it as another column. Give every column its own "
        "name in the header line."
    )
    # Also when the repeated name is not among the features asked for.
    for features in (None, ["y"]):
        with pytest.raises(ValueError, match=re.escape(message)):
            load_csv_windows(path, target="y", seq_len=1, features=features)


def test_empty_header_cells_are_not_repeats(tmp_path):
    # A CSV written with its index has an empty first header cell; pandas names
    # empty cells "Unnamed: <i>", so two of them are still distinct columns.
    path = _write(tmp_path, ",x,,y\n0,1,7,10\n1,2,7,20\n2,3,7,30\n")
    x, y = load_csv_windows(path, target="y", seq_len=1, features=["x"])
    np.testing.assert_array_equal(x.ravel(), [1.0, 2.0])
    np.testing.assert_array_equal(y.ravel(), [20.0, 30.0])
