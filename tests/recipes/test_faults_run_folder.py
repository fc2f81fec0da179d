"""`--resume` of a crafted run folder: bad values, links, foreign rows; one line, nothing touched.

Each test writes a finished-looking run folder by hand (config.json from a
real Config, results.csv with the columns `Experiment` writes, a folder per
row) beside an `outside/` folder, breaks it the way an editor, a copy or an
attacker would, resumes it, and asserts the one error line and that no file
under `tmp_path` was created, changed or deleted. Every refusal comes before
training, so no test here trains.
"""

import json
import os
import pathlib
import shutil

import pandas as pd
import pytest

from gradguard.recipes import deep_dense, rnn_long_seq
from gradguard.recipes.safe_paths import UnsafePath, inside, remove_inside

from fault_checks import craft, error_line, make_outside, snapshot


def edit_config(folder: pathlib.Path, **changes) -> None:
    path = folder / "config.json"
    saved = json.loads(path.read_text())
    saved.update(changes)
    path.write_text(json.dumps(saved))


def resume(module, folder, capsys, code):
    with pytest.raises(SystemExit) as info:
        module.main(["--resume", str(folder)])
    assert info.value.code == code
    return error_line(capsys.readouterr().err, f"python -m recipes.{module.NAME}")


@pytest.fixture
def world(tmp_path):
    make_outside(tmp_path)
    return tmp_path


CONFIG_FAULTS = [
    (deep_dense, {"variants": ["../../outside/x"]}, "--variants received '../../outside/x'"),
    (deep_dense, {"variants": ["baseline/../../../outside"]}, "--variants received"),
    (deep_dense, {"variants": ["baseline@../../outside"]}, "optimizer '../../outside'"),
    (deep_dense, {"variants": "baseline"}, "variants='baseline'; expected a list, each a string"),
    (deep_dense, {"variants": []}, "--variants received no value"),
    (deep_dense, {"variants": ["baseline", "baseline"]}, "name each once"),
    (deep_dense, {"epochs": "abc"}, "epochs='abc'; expected an int"),
    (deep_dense, {"epochs": 2.5}, "epochs=2.5; expected an int"),
    (deep_dense, {"batch_size": 0}, "--batch-size received 0; expected an int >= 1"),
    (deep_dense, {"batch_size": -3}, "--batch-size received -3"),
    (deep_dense, {"seeds": 0}, "--seeds received 0"),
    (deep_dense, {"seed": "0/../.."}, "seed='0/../..'; expected an int"),
    (deep_dense, {"seed": -1}, "--seed received -1"),
    (deep_dense, {"n_train": None}, "n_train=None; expected an int"),
    (deep_dense, {"depth": 0}, "--depth received 0"),
    (deep_dense, {"optimizer": "../x"}, "optimizer='../x'; expected one of ['sgd'"),
    (deep_dense, {"lr": -1}, "--lr received -1"),
    (deep_dense, {"lr": float("nan")}, "--lr received nan"),
    (deep_dense, {"quick": "yes"}, "quick='yes'; expected true or false"),
    (deep_dense, {"scale_range": [1.0]}, "scale_range=[1.0]; expected a list of 2"),
    (deep_dense, {"factorial": True}, "--factorial replaces --variants"),
    (deep_dense, {"factorial_clip": "clipnorm"}, "--factorial-clip received clipnorm without"),
    (rnn_long_seq, {"cells": ["../x"]}, "cells=['../x']; expected a list, each one of ['simple_rnn'"),
    (rnn_long_seq, {"cell": "../x"}, "cell='../x'; expected one of"),
    (rnn_long_seq, {"variants": ["irnn"], "cells": ["lstm"]}, "--cells lstm would label it lstm"),
    (rnn_long_seq, {"seq_len": 1}, "--seq-len received 1"),
]


@pytest.mark.parametrize("module, changes, message", CONFIG_FAULTS,
                         ids=[f"{m.NAME}-{'-'.join(c)}-{i}" for i, (m, c, _) in enumerate(CONFIG_FAULTS)])
def test_a_bad_value_in_config_json_is_refused_before_anything_is_touched(
        world, capsys, module, changes, message):
    folder = world / "run"
    craft(folder, module)
    edit_config(folder, **changes)
    before = snapshot(world)
    line = resume(module, folder, capsys, 2)
    assert message in line
    assert "config.json" in line and ("start a new run with --out" in line
                                      or "Start a new run with --out" in line)
    assert snapshot(world) == before


# Each link points outside the run folder, at a folder or file a resume would delete or write.
LINKS = [
    ("rows", "outside"),  # rows/ itself: its .incomplete leftovers would be removed there
    ("rows/baseline-dense-seed0", "outside/x-dense-seed0"),
    ("tensorboard/baseline-dense-seed0", "outside/x-dense-seed0"),
    ("rows/standardize-dense-seed0.incomplete", "outside/x-dense-seed0"),
    ("results.csv", "outside/results.csv"),
    (".lock", "outside/precious.txt"),
    ("config.json", "outside/precious.txt"),
    ("summary.txt", "outside/missing.txt"),  # a dangling link
]


@pytest.mark.parametrize("name, target", LINKS, ids=[n for n, _ in LINKS])
def test_a_symbolic_link_in_the_run_folder_is_refused_and_never_followed(
        world, capsys, name, target):
    folder = world / "run"
    craft(folder)
    link = folder / name
    if link.is_dir():
        shutil.rmtree(link)
    elif os.path.lexists(link):
        link.unlink()
    link.symlink_to(world / target)
    before = snapshot(world)
    line = resume(deep_dense, folder, capsys, 2)
    assert f"holds a symbolic link, {str(link)!r}" in line
    assert "move the link away" in line
    assert snapshot(world) == before


def _edit_results(folder, edit):
    path = folder / "results.csv"
    table = pd.read_csv(path, keep_default_na=False)
    edit(table).to_csv(path, index=False)


RESULTS_FAULTS = [
    ("duplicate", lambda t: pd.concat([t, t.iloc[:1]]),
     "holds the row variant='baseline', cell='dense', seed=0 twice; delete one of the two lines"),
    ("foreign column", lambda t: t.assign(extra=1), "with ['extra'] that no row has"),
    ("no seed column", lambda t: t.drop(columns="seed"), "without ['seed']"),
    ("variant not in config", lambda t: t.assign(variant=["baseline", "clipnorm"]),
     "variant='clipnorm', cell='dense', seed=0, which its config.json does not ask for"),
    ("cell with ../", lambda t: t.assign(cell=["../../outside", "dense"]),
     "cell='../../outside', seed=0, which its config.json does not ask for"),
    ("seed not a number", lambda t: t.assign(seed=["abc", "0"]), "is damaged"),
]


@pytest.mark.parametrize("edit, message", [f[1:] for f in RESULTS_FAULTS],
                         ids=[f[0] for f in RESULTS_FAULTS])
def test_a_bad_row_in_results_csv_is_refused_before_any_row_is_removed(world, capsys, edit, message):
    folder = world / "run"
    craft(folder)
    _edit_results(folder, edit)
    (folder / "rows" / "lost.incomplete").mkdir()  # a leftover a resume removes once it trusts the folder
    before = snapshot(world)
    line = resume(deep_dense, folder, capsys, 1)
    assert message in line and "results.csv" in line
    assert "finishes the run" not in line  # no advice to do what fails again
    assert snapshot(world) == before


def test_a_finished_row_whose_folder_is_gone_is_named_with_the_fix(world, capsys):
    folder = world / "run"
    rows = craft(folder)
    for path in (folder / "rows" / rows[1].name).iterdir():
        path.unlink()
    (folder / "rows" / rows[1].name).rmdir()
    before = snapshot(world)
    line = resume(deep_dense, folder, capsys, 1)
    assert (f"lists the finished row variant='standardize', cell='dense', seed=0, but its folder "
            f"{str(folder / 'rows' / rows[1].name)!r} is gone") in line
    assert "delete that line of results.csv to train the row again" in line
    assert snapshot(world) == before


@pytest.mark.parametrize("relative", ["../outside/x-dense-seed0", "rows/../../outside", "", "rows/a/../../.."])
def test_inside_refuses_a_path_that_leaves_the_folder(world, relative):
    folder = world / "run"
    craft(folder)
    before = snapshot(world)
    with pytest.raises(UnsafePath, match="is not inside the run folder"):
        remove_inside(folder, folder / relative)
    assert snapshot(world) == before


def test_remove_inside_never_follows_a_link_below_the_folder(world):
    folder = world / "run"
    craft(folder)
    (folder / "tensorboard" / "baseline-dense-seed0" / "linked").symlink_to(world / "outside")
    before = snapshot(world)
    with pytest.raises(UnsafePath, match="it is a symbolic link"):
        remove_inside(folder, folder / "tensorboard" / "baseline-dense-seed0" / "linked" / "precious.txt")
    assert snapshot(world) == before
    assert inside(folder, folder / "rows" / "baseline-dense-seed0") == folder / "rows" / "baseline-dense-seed0"
