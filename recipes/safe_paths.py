"""Paths a run writes or deletes: inside its folder, never through a symbolic link.

A run folder is made by a recipe or the doctor, and read back on a resume:
its names (`rows/<row>`, `tensorboard/<row>`) come from values a user can
edit (`config.json`), and its entries can be replaced by links. Before a
run writes or deletes anything it asks here:

- `inside(folder, path)`: `path`, resolved, lies inside `folder` and no
  part of it below `folder` is a symbolic link;
- `remove_inside(folder, path)`: deletes `path` only after that check, and
  never follows a link (`shutil.rmtree` would delete a linked folder's
  contents);
- `find_link(folder)`: the first symbolic link anywhere under `folder` (a
  run never makes one), so that a resume refuses the folder before it
  touches anything.

Every refusal is a `RunFolderError` with one line naming the path and the fix.
"""

from __future__ import annotations

import os
import pathlib
import shutil

from .run_files import RunFolderError, RunFolderInvalid


class UnsafePath(RunFolderInvalid):
    """A path outside the run folder, or through a symbolic link: refused, nothing touched."""


def inside(folder: str | os.PathLike, path: str | os.PathLike) -> pathlib.Path:
    """`path`, checked to lie inside `folder` without crossing a symbolic link.

    Args:
        folder: The run folder (itself may be reached through a link).
        path: A path in it, absolute or relative to the working directory.

    Returns:
        `path` as a `pathlib.Path`.

    Raises:
        UnsafePath: If `path` resolves outside `folder`, or one of its parts
            below `folder` (itself included) is a symbolic link.

    Example:

    >>> import tempfile
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> inside(root, root / "rows" / "baseline-dense-seed0").name
    'baseline-dense-seed0'
    """
    folder, path = pathlib.Path(folder), pathlib.Path(path)
    root = folder.resolve()
    try:
        relative = path.absolute().relative_to(folder.absolute())
    except ValueError:
        relative = None
    if relative is None or ".." in relative.parts or not relative.parts:
        raise UnsafePath(
            f"refused to touch {os.fspath(path)!r}: it is not inside the run folder "
            f"{os.fspath(folder)!r} (a name in config.json or results.csv holding '/' or '..'?); "
            "fix the name, or start a new run with --out.")
    step = root
    for part in relative.parts:
        step = step / part
        if step.is_symlink():
            raise UnsafePath(
                f"refused to follow {os.fspath(step)!r}: it is a symbolic link (to "
                f"{os.readlink(step)!r}) and a run folder never holds one; move the link away, "
                "or start a new run with --out.")
    return path


def remove_inside(folder: str | os.PathLike, path: str | os.PathLike) -> None:
    """Deletes `path` (a folder or a file) if it exists, after `inside`'s check.

    Raises:
        UnsafePath: As `inside`; nothing is deleted then.
        RunFolderError: If it cannot be deleted, naming it.
    """
    path = inside(folder, path)
    if not os.path.lexists(path):
        return
    try:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    except OSError as error:
        raise RunFolderError(f"could not remove {os.fspath(path)!r}: {error.strerror or error}; "
                             "fix the folder's permissions.") from error


def find_link(folder: str | os.PathLike) -> pathlib.Path | None:
    """The first symbolic link under `folder` (links are not followed), or `None`."""
    for top, dirs, files in os.walk(folder, followlinks=False):
        for name in sorted(dirs + files):
            if os.path.islink(os.path.join(top, name)):
                return pathlib.Path(top, name)
    return None


def check_no_links(folder: str | os.PathLike, who: str) -> None:
    """Raises `UnsafePath` naming the first symbolic link under `folder`, if any.

    Args:
        folder: The run folder about to be resumed or reused.
        who: What the message starts with, e.g. `"--resume"`.
    """
    link = find_link(folder)
    if link is not None:
        raise UnsafePath(
            f"{who} {os.fspath(folder)!r} holds a symbolic link, {os.fspath(link)!r} -> "
            f"{os.readlink(link)!r}, and a run folder never does; move the link away (nothing "
            "was touched), or start a new run with --out.")
