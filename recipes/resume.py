"""Resuming a run folder safely: its lock, its saved settings, its finished rows.

`--resume DIR` trusts three things in `DIR`, and each can be damaged on a
real machine: `config.json` (cut short, or another recipe's; its values are
checked like flags by `cli.parse_config`), `results.csv` (a last row cut
short by a copy, stray bytes, a row twice, a foreign column or row, a
finished row's folder deleted: `check_rows`) and the folder itself (a
second run of it, still training). These helpers check each and answer with
one line naming the file and the fix, so that a fault never turns into a
traceback or a damaged folder.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import os
import pathlib

import pandas as pd

from .run_files import RunFolderError, RunFolderInvalid
from .safe_paths import inside


class RunFolderBusy(RunFolderError):
    """Another process holds the run folder's lock."""


LOCK_NAME = ".lock"

# "requested": a SIGTERM came; "now": the recipe is handling the interrupt.
# Set by `report.run_main`'s handler and read between rows: an exception a
# C extension swallowed (cleared instead of raised) still stops the run at
# the next row boundary instead of letting it finish as if no signal came.
STOPPING = {"requested": False, "now": False}


def check_stop() -> None:
    """Raises KeyboardInterrupt when a SIGTERM came and was swallowed."""
    if STOPPING["requested"] and not STOPPING["now"]:
        raise KeyboardInterrupt


@contextlib.contextmanager
def run_lock(out_dir: str | os.PathLike):
    """Holds an exclusive lock on a run folder while rows are trained in it.

    `fcntl.flock` on `<out_dir>/.lock`: the operating system releases it
    when the process ends, however it ends, so a killed run never leaves a
    stale lock. Two runs (a run and a `--resume` of it, or two resumes)
    would otherwise each remove the other's rows in progress.

    Raises:
        RunFolderBusy: If another process holds the lock, naming the folder.
    """
    import fcntl

    path = inside(out_dir, pathlib.Path(out_dir) / LOCK_NAME)  # never a link to elsewhere
    try:
        file = open(path, "a")
    except OSError as error:
        raise RunFolderError(
            f"could not open the lock file {os.fspath(path)!r}: {error.strerror or error}; "
            "fix the folder's permissions."
        ) from error
    with file:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise RunFolderBusy(
                f"{os.fspath(out_dir)!r} is in use by another run (it holds "
                f"{os.fspath(path)!r}); wait for that run to end, then --resume "
                "the folder if rows are missing."
            ) from None
        try:
            yield path
        finally:
            fcntl.flock(file, fcntl.LOCK_UN)


def read_run_config(folder: str | os.PathLike, config_cls: type, prog: str) -> dict:
    """The settings saved in `<folder>/config.json`, checked for `config_cls`.

    Args:
        folder: The run folder being resumed.
        config_cls: The recipe's Config dataclass.
        prog: The command, for messages (`python -m recipes.<name>`).

    Returns:
        The saved settings, as keyword arguments of `config_cls`.

    Raises:
        ValueError: With one line naming the file and the fix, if the file
            is missing, unreadable or damaged, or was written by another
            recipe (it holds settings `config_cls` does not have).
    """
    path = pathlib.Path(folder) / "config.json"
    if not path.is_file():
        raise ValueError(f"--resume received {os.fspath(folder)!r}, which has no config.json; "
                         "pass the folder of an interrupted run.")
    try:
        saved = json.loads(path.read_bytes().decode("utf-8"))
        if not isinstance(saved, dict):
            raise ValueError(f"expected an object, found {type(saved).__name__}")
    except (OSError, ValueError) as error:  # JSONDecodeError, UnicodeDecodeError
        reason = getattr(error, "strerror", None) or str(error).splitlines()[0]
        raise ValueError(f"--resume cannot read {os.fspath(path)!r} ({reason}); restore it from "
                         "a copy, or start a new run with --out.") from None
    names = {f.name for f in dataclasses.fields(config_cls)}
    foreign = sorted(set(saved) - names)
    if foreign:
        raise ValueError(
            f"--resume received {os.fspath(folder)!r}, a run of another recipe (its config.json "
            f"has {', '.join(foreign)}, which {prog} does not); resume it with the recipe that "
            "made it.")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()}


def interrupted_advice(out_dir: str | os.PathLike | None, prog: str) -> str:
    """What a failed run's last line adds: what is kept and how to finish, if anything."""
    if out_dir is None or not (pathlib.Path(out_dir) / "config.json").is_file():
        return ""
    kept = pathlib.Path(out_dir) / "results.csv"
    rows = f" Finished rows stay in {os.fspath(kept)};" if kept.is_file() else ""
    return f"{rows} --resume {os.fspath(out_dir)} finishes the run."


def read_results(path: str | os.PathLike, dtype: dict | None = None) -> tuple[pd.DataFrame, int]:
    """The complete rows of a results CSV, and how many damaged rows were left out.

    `write_atomic` never leaves a partial file, but a copy, a sync or an
    editor can: a last line cut short (no newline at its end, or fewer
    fields than the header) is not a finished row, so it is left out, and
    the row is trained again.

    Args:
        path: The CSV file (`results.csv`).
        dtype: Column types for `pandas.read_csv`. Defaults to `None`.

    Returns:
        `(table, dropped)`; an empty table when the file does not exist.

    Raises:
        RunFolderInvalid: With one line naming the file and the fix, if it
            cannot be read or is not a results table.
    """
    path = pathlib.Path(path)
    if not path.exists():
        return pd.DataFrame(), 0
    try:
        text = path.read_bytes().decode("utf-8")
        lines = text.splitlines(keepends=True)
        header = next(csv.reader(lines[:1]), [])
        rows = [line for line in lines[1:] if line.strip()]
        complete = [line for line in rows if line.endswith("\n")
                    and len(next(csv.reader([line]), [])) == len(header)]
        if not header:
            raise ValueError("no header line")
        table = pd.read_csv(io.StringIO("".join(lines[:1] + complete)), dtype=dtype,
                            keep_default_na=False, na_values=[""])
    except (OSError, ValueError, pd.errors.ParserError) as error:  # UnicodeDecodeError too
        reason = getattr(error, "strerror", None) or str(error).splitlines()[0]
        raise RunFolderInvalid(
            f"{os.fspath(path)!r} is damaged ({reason[:120]}); restore it from a copy, or move "
            "it away to train every row again.") from None
    return table, len(rows) - len(complete)


def check_rows(done: pd.DataFrame, rows: list, out_dir: pathlib.Path, path: pathlib.Path,
               columns: tuple[str, ...]) -> None:
    """Checks the rows read back from `results.csv` before any is trusted.

    Args:
        done: The table `read_results` read from `path`.
        rows: The rows the saved settings ask for (`variants.Row`).
        out_dir: The run folder.
        path: `results.csv`, for messages.
        columns: Every column a row can have; the first three are the key
            (variant, cell, seed).

    Raises:
        RunFolderInvalid: With one line naming the file, the row or
            column and the fix, for a column no row has, a row twice, a
            row the settings do not ask for, or a finished row whose
            `rows/<row>/` folder is gone.
    """
    where = f"--resume: {os.fspath(path)!r}"
    if done.empty and not len(done.columns):
        return
    foreign = [c for c in done.columns if c not in columns]
    missing = [c for c in columns[:3] if c not in done.columns]
    if foreign or missing:
        raise RunFolderInvalid(
            f"{where} has columns {list(done.columns)[:6]}..., "
            + (f"with {foreign} that no row has" if foreign else f"without {missing}")
            + "; restore it from a copy, or move it away to train every row again.")
    wanted = {(r.variant, r.cell, r.seed): r for r in rows}
    seen = set()
    for variant, cell, seed in zip(*(done[c] for c in columns[:3])):
        key = (variant, cell, None if pd.isna(seed) else int(seed))
        row = f"variant={variant!r}, cell={cell!r}, seed={key[2]}"
        if key in seen:
            raise RunFolderInvalid(f"{where} holds the row {row} twice; delete one of the two "
                                   "lines (they are one row), then --resume again.")
        seen.add(key)
        if key not in wanted:
            raise RunFolderInvalid(
                f"{where} holds the row {row}, which its config.json does not ask for; "
                "delete that line, or resume with the settings that made it.")
        folder = out_dir / "rows" / wanted[key].name
        if not inside(out_dir, folder).is_dir():
            raise RunFolderInvalid(
                f"{where} lists the finished row {row}, but its folder {os.fspath(folder)!r} "
                "is gone; restore the folder from a copy, or delete that line of results.csv "
                "to train the row again.")


def count_rows(path: str | os.PathLike) -> int:
    """Finished rows in a results CSV (0 when missing or unreadable)."""
    try:
        return len(read_results(path)[0])
    except RunFolderError:
        return 0
