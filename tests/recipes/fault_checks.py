"""What every fault test asserts: the file system before and after, and one error line.

`snapshot(root)` records every entry under `root` without following links:
its kind, and a file's size, mtime and SHA-256 (a link's target). A fault
test takes one of `tmp_path` (the crafted run folder and a sibling
`outside/` folder with files a bad path could reach), runs the command,
and asserts that the snapshot is unchanged: nothing outside changed,
nothing inside lost, because every refusal comes before anything is
touched.
"""

from __future__ import annotations

import hashlib
import os
import pathlib


def snapshot(root: pathlib.Path) -> dict:
    """Every path under `root` -> what it is, links not followed."""
    found = {}
    for top, dirs, files in os.walk(root, followlinks=False):
        for name in dirs + files:
            path = pathlib.Path(top, name)
            info = path.lstat()
            if path.is_symlink():
                found[path] = ("link", os.readlink(path))
            elif path.is_dir():
                found[path] = ("dir", info.st_mtime_ns)
            else:
                found[path] = ("file", info.st_size, info.st_mtime_ns,
                               hashlib.sha256(path.read_bytes()).hexdigest())
    return found


def make_outside(tmp_path: pathlib.Path) -> pathlib.Path:
    """A sibling folder a path escaping the run folder would reach, with a row-like folder in it."""
    outside = tmp_path / "outside"
    (outside / "x-dense-seed0").mkdir(parents=True)
    (outside / "x-dense-seed0" / "keep.txt").write_text("not the run's\n")
    (outside / "results.csv").write_text("a,b\n1,2\n")
    (outside / "precious.txt").write_text("keep me\n")
    return outside


def error_line(err: str, prog: str) -> str:
    """The one `prog: error:` line of `err`, asserting there is no traceback and no other."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if f"{prog}: error:" in line]
    assert len(lines) == 1, err
    return lines[0]
