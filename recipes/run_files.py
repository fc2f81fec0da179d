"""Where a recipe's results go: a fresh run folder, CSV + Markdown tables.

A run never overwrites another: `new_run_dir` makes a new timestamped folder
(or takes the user's `--out` only if it is new or empty), and `write_table`
writes the results as CSV for analysis and as Markdown for reading
(`DataFrame.to_markdown`). Every file goes through `write_atomic` (a
temporary name, then a rename), so an interrupted or failed write never
leaves a truncated file, and a failed write names the path.
Import these through `recipes.common`.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import pathlib
import time
from typing import Any

import pandas as pd


class RunFolderError(OSError):
    """A results file or folder could not be written; the message names it."""


class RunFolderInvalid(RunFolderError):
    """A run folder's contents cannot be trusted (refused before anything was touched)."""


def write_atomic(path: str | os.PathLike, data: str | bytes) -> pathlib.Path:
    """`atomic_write.write_atomic`, whose failure names the path and the fix.

    Raises:
        RunFolderError: If the folder or file cannot be written (read-only,
            full disk, a folder in the way), naming `path`; `path` itself is
            left as it was.
    """
    # Imported here: gradguard.callbacks loads Keras, which --help need not wait for.
    from gradguard.callbacks.atomic_write import write_atomic as write_whole

    try:
        return write_whole(path, data)
    except OSError as error:
        raise RunFolderError(
            f"could not write {os.fspath(path)!r}: {error.strerror or error}; free space "
            "or fix the folder's permissions (nothing already written was changed)."
        ) from error


def new_run_dir(
    out: str | os.PathLike | None,
    name: str,
    *,
    root: str | os.PathLike = "runs",
) -> pathlib.Path:
    """Creates and returns a fresh folder for one run's results.

    A run never writes into another run's folder. Without `out`, the folder
    is `<root>/<name>-<YYYYmmdd-HHMMSS>`, with `-1`, `-2`, ... appended when
    that name is taken (two runs in the same second). With `out`, that path
    is used if it does not exist yet or is an empty folder.

    Args:
        out: The folder the user asked for (`--out`), or `None`.
        name: Recipe name, the prefix of generated folder names.
        root: Parent of generated folders. Defaults to `"runs"`, relative to
            the working directory (ignored by git).

    Returns:
        The path of the new, empty folder.

    Raises:
        FileExistsError: If `out` is a file or a folder that is not empty.

    Example:

    >>> import tempfile
    >>> root = tempfile.mkdtemp()
    >>> new_run_dir(None, "linear_chain", root=root).name.startswith("linear_chain-")
    True
    """
    if out is not None:
        problem = check_out_dir(out, who=f"new_run_dir received out={os.fspath(out)!r}:")
        if problem:
            raise FileExistsError(problem)
        path = pathlib.Path(out)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise RunFolderError(
                f"could not create the results folder {os.fspath(out)!r}: "
                f"{error.strerror or error}; pick a writable path with --out."
            ) from error
        return path
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = pathlib.Path(root) / f"{name}-{stamp}"
    for attempt in itertools.count():
        path = base if attempt == 0 else base.with_name(f"{base.name}-{attempt}")
        try:
            path.mkdir(parents=True)
        except FileExistsError:
            continue
        return path
    raise AssertionError("unreachable")  # pragma: no cover


def write_table(
    table: pd.DataFrame,
    out_dir: str | os.PathLike,
    stem: str = "results",
    *,
    caption: str | None = None,
) -> tuple[pathlib.Path, pathlib.Path]:
    """Writes a results table as `<stem>.csv` and `<stem>.md` in `out_dir`.

    The CSV keeps full precision for analysis; the Markdown (see
    `markdown_table`) is for reading and pasting into a README. A
    non-default index is written as leading columns.

    Args:
        table: One tidy row per variant.
        out_dir: Existing folder to write into, normally from `new_run_dir`.
        stem: File name without extension. Defaults to `"results"`.
        caption: Optional line written above the Markdown table (e.g. the
            device). Defaults to `None`.

    Returns:
        The paths `(csv_path, md_path)`.

    Example:

    >>> import tempfile
    >>> csv, md = write_table(pd.DataFrame({"a": [1.5]}), tempfile.mkdtemp())
    >>> print(md.read_text(), end="")
    |   a |
    |----:|
    | 1.5 |
    """
    out_dir = pathlib.Path(out_dir)
    if not isinstance(table.index, pd.RangeIndex):
        table = table.reset_index()
    csv_path = out_dir / f"{stem}.csv"
    md_path = out_dir / f"{stem}.md"
    write_atomic(csv_path, table.to_csv(index=False))
    text = markdown_table(table)
    if caption:
        text = f"{caption}\n\n{text}"
    write_atomic(md_path, text)
    return csv_path, md_path


def markdown_table(table: pd.DataFrame, *, float_format: str = ".6g") -> str:
    """`DataFrame.to_markdown` without the index, `|` escaped, missing cells blank.

    Float columns keep `nan`; a missing value elsewhere (`None`, `pd.NA`)
    is an empty cell.

    Args:
        table: The DataFrame to format.
        float_format: Format spec for floats. Defaults to `".6g"`.

    Returns:
        The table, one line per row, ending with a newline.

    Example:

    >>> print(markdown_table(pd.DataFrame({"gain": [0.5], "regime": ["vanishing"]})), end="")
    |   gain | regime    |
    |-------:|:----------|
    |    0.5 | vanishing |
    """
    cells = table.copy()
    for column in cells.columns:
        if not pd.api.types.is_float_dtype(cells[column]):
            values = cells[column].astype(object)
            cells[column] = values.where(values.notna(), None).map(
                lambda v: v.replace("|", "\\|") if isinstance(v, str) else v)
    return cells.to_markdown(index=False, floatfmt=float_format) + "\n"


def write_config(config: Any, out_dir: str | os.PathLike, stem: str = "config") -> pathlib.Path:
    """Writes a dataclass config as `<stem>.json` in `out_dir`, for reruns.

    Args:
        config: A dataclass instance, normally from `parse_config`.
        out_dir: Existing folder to write into.
        stem: File name without extension. Defaults to `"config"`.

    Returns:
        The path of the JSON file.
    """
    path = pathlib.Path(out_dir) / f"{stem}.json"
    return write_atomic(path, json.dumps(dataclasses.asdict(config), indent=2, default=str) + "\n")


def check_out_dir(out: str | os.PathLike, *, who: str = "--out") -> str | None:
    """Explains why `out` cannot hold a new run, or returns `None` if it can.

    `out` can hold a run if it does not exist yet or is an empty folder.
    `parse_config` calls this for a Config's `out` field, so that a taken
    folder is refused before training, and `new_run_dir` calls it again.

    Args:
        out: The folder the user asked for.
        who: What the message starts with. Defaults to `"--out"`.

    Returns:
        An error message, or `None` when `out` is usable.

    Example:

    >>> import tempfile
    >>> check_out_dir(tempfile.mkdtemp()) is None  # an empty folder
    True
    """
    path = pathlib.Path(out)
    if path.exists() and not path.is_dir():
        return (
            f"{who} {os.fspath(out)!r} is an existing file; pick a new folder "
            "path, or leave --out unset to get a new folder under runs/."
        )
    if path.is_dir() and any(path.iterdir()):
        return (
            f"{who} {os.fspath(out)!r} already exists and is not empty; pick a "
            "new path (a run never overwrites another), or leave --out unset to "
            "get a new folder under runs/."
        )
    return None

