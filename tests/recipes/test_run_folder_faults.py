"""Damaged, shared, full and read-only run folders: one readable line each, never a damaged folder.

Each test breaks a real run folder the way a user's machine would (a cut
copy, stray bytes, another recipe's folder, a second run holding the lock, a
full or read-only disk, two SIGTERMs) and checks the one line the recipe
answers with, and that the folder is as it was or repaired.
"""

import dataclasses
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from gradguard.recipes import deep_dense, rnn_long_seq
from gradguard.recipes.resume import run_lock
from gradguard.recipes.run_files import write_config

TINY = ["--quick", "--depth", "2", "--width", "8", "--n-train", "256", "--n-val", "64",
        "--variants", "baseline", "standardize"]
PROG = "python -m recipes.deep_dense"
ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("faults") / "done"
    return deep_dense.main([*TINY, "--out", str(out)]), out


@pytest.fixture
def run_copy(finished_run, tmp_path):
    table, out = finished_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    return table, copy


def _snapshot(folder: pathlib.Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_error_line(err: str) -> str:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith(f"{PROG}: error:")]
    assert len(lines) == 1, err
    return lines[0]


def _resume(folder, capsys, code):
    with pytest.raises(SystemExit) as info:
        deep_dense.main(["--resume", str(folder)])
    assert info.value.code == code
    return _one_error_line(capsys.readouterr().err)


def test_resume_refuses_another_recipes_folder(tmp_path, capsys):
    folder = tmp_path / "rnn"
    folder.mkdir()
    write_config(rnn_long_seq.Config(quick=True), folder)
    (folder / "results.csv").write_text("variant,cell,seed\nbaseline,lstm,0\n")
    before = _snapshot(folder)
    line = _resume(folder, capsys, 2)
    foreign = sorted({f.name for f in dataclasses.fields(rnn_long_seq.Config)}
                     - {f.name for f in dataclasses.fields(deep_dense.Config)})
    assert {"cell", "cells", "seq_len", "units"} <= set(foreign)
    assert line == (f"{PROG}: error: --resume received {str(folder)!r}, a run of another recipe "
                    f"(its config.json has {', '.join(foreign)}, which "
                    f"{PROG} does not); resume it with the recipe that made it.")
    assert _snapshot(folder) == before


def test_truncated_config_json_is_one_line(run_copy, capsys):
    _, folder = run_copy
    config = folder / "config.json"
    config.write_bytes(config.read_bytes()[:40])
    before = _snapshot(folder)
    line = _resume(folder, capsys, 2)
    assert line.startswith(f"{PROG}: error: --resume cannot read {str(config)!r} (")
    assert line.endswith("); restore it from a copy, or start a new run with --out.")
    assert _snapshot(folder) == before


def test_garbage_in_results_csv_is_one_line_and_the_folder_is_kept(run_copy, capsys):
    _, folder = run_copy
    results = folder / "results.csv"
    results.write_bytes(results.read_bytes()[:30] + b"\xff\xfe\x00garbage\n")
    before = _snapshot(folder)
    line = _resume(folder, capsys, 1)
    assert line.startswith(f"{PROG}: error: {str(results)!r} is damaged (")
    assert "restore it from a copy, or move it away to train every row again." in line
    assert _snapshot(folder) == before


def test_truncated_last_row_is_trained_again(run_copy, capsys):
    table, folder = run_copy
    results = folder / "results.csv"
    text = results.read_text()
    results.write_text(text[:len(text) - 40])  # the last row cut in the middle
    resumed = deep_dense.main(["--resume", str(folder)])
    printed = " ".join(capsys.readouterr().out.split())  # read across lines wrapped at 120 columns
    assert "results.csv: 1 row cut short (not finished); training again" in printed
    pd.testing.assert_frame_equal(resumed.drop(columns="wall_time_s"), table.drop(columns="wall_time_s"))
    again = pd.read_csv(results)
    assert len(again) == 2 and again["val/trivial"].notna().all()


def test_a_second_run_of_a_locked_folder_is_refused(run_copy, capsys):
    _, folder = run_copy
    (folder / "results.csv").write_text(pd.read_csv(folder / "results.csv").iloc[:1].to_csv(index=False))
    shutil.copytree(folder / "rows" / "standardize-dense-seed0",
                    folder / "rows" / "standardize-dense-seed0.incomplete")  # a row in progress
    before = _snapshot(folder)
    with run_lock(folder):  # the first run, still training
        line = _resume(folder, capsys, 1)
    assert line == (f"{PROG}: error: {str(folder)!r} is in use by another run (it holds "
                    f"{str(folder / '.lock')!r}); wait for that run to end, then --resume the "
                    "folder if rows are missing.")
    assert _snapshot(folder) == before  # its row in progress is untouched


def _mount_tmpfs(folder, options):
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                      capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root")


def test_read_only_out_gets_no_resume_advice(tmp_path, capsys):
    out = tmp_path / "ro"
    if os.geteuid() == 0:
        _mount_tmpfs(out, "ro,size=64k")  # root writes through a chmod
    else:
        out.mkdir()
        out.chmod(0o555)
    try:
        with pytest.raises(SystemExit) as info:
            deep_dense.main([*TINY, "--out", str(out)])
        assert info.value.code == 1
        line = _one_error_line(capsys.readouterr().err)
        assert line.startswith(f"{PROG}: error: could not write {str(out / 'config.json')!r}: ")
        assert "--resume" not in line
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", "-l", str(out)], check=True)


def test_full_disk_at_the_tensorboard_writers_is_one_line(tmp_path, capsys):
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "size=64k")
    try:
        out = disk / "run"
        # Room for config.json and one page more (a tmpfs file takes whole
        # 4 KiB pages): the row's TensorBoard run (one per row) fills it.
        with open(disk / "filler", "wb", buffering=0) as f:
            f.write(b"\0" * (64 - 8) * 1024)
        with pytest.raises(SystemExit) as info:
            deep_dense.main([*TINY, "--variants", "standardize", "--out", str(out)])
        assert info.value.code == 1
        line = _one_error_line(capsys.readouterr().err)
        assert line.startswith(f"{PROG}: error: could not write TensorBoard events to '"
                               f"{str(out / 'tensorboard')}/")
        assert ": No space left on device; free space" in line and line.endswith(
            f"(this row is trained again). --resume {out} finishes the run.")
        assert not list(out.rglob("*.incomplete")) and not (out / "results.csv").exists()
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


@pytest.mark.slow
def test_two_sigterms_a_millisecond_apart_end_with_one_line(tmp_path):
    out = tmp_path / "twice"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "recipes.deep_dense", *TINY, "--variants", "baseline", "standardize",
         "batchnorm", "--out", str(out)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    end = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < end and not list(out.glob("rows/*.incomplete")):
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.001)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("Interrupted: ")
    assert not list(out.rglob("*.incomplete"))
