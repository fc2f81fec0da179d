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

import pandas as pd

from gradguard.recipes import deep_dense, rnn_long_seq
from gradguard.recipes.experiment import COLUMNS
from gradguard.recipes.run_files import write_config


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


CONFIGS = {
    deep_dense: dict(quick=True, depth=2, width=8, n_train=64, n_val=32,
                     variants=("baseline", "standardize")),
    rnn_long_seq: dict(quick=True, seq_len=10, units=4, n_train=64, n_val=32,
                       variants=("baseline",), cells=("simple_rnn",)),
}


def craft(folder: pathlib.Path, module=deep_dense) -> list:
    """A run folder as a finished run leaves it; returns its rows."""
    config = module.Config(**CONFIGS[module])
    folder.mkdir(parents=True)
    write_config(config, folder)
    rows = config.rows()
    records = [{**{c: 0 for c in COLUMNS}, "variant": r.variant, "cell": r.cell, "seed": r.seed,
                "model": "m", "nan_guard": "none", "device": "CPU", "backend": "tensorflow",
                "kernel": ""} for r in rows]
    pd.DataFrame(records, columns=list(COLUMNS)).to_csv(folder / "results.csv", index=False)
    for row in rows:
        for sub, name in (("rows", "grad_norms.csv"), ("tensorboard", "events.out")):
            (folder / sub / row.name).mkdir(parents=True)
            (folder / sub / row.name / name).write_text("step,grad_norm\n1,1.0\n")
    (folder / ".lock").write_text("")
    return rows


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
