"""An interrupted examination's own files, read back on a resume, are untrusted: checked first.

Each test crafts the doctor's `--out` folder as an interrupted examination
leaves it (`doctor.json` with this model's and data's fingerprint,
`results.csv`, `findings.json`), damages one thing, runs
`python -m recipes.doctor` in process and asserts one error line naming the
file and the fix, and that nothing under `tmp_path` (the folder and a
sibling `outside/`) was created, changed or deleted. The refusal comes
before trial 0, so no test here trains.
"""

import json
import os

import keras
import numpy as np
import pandas as pd
import pytest

from gradguard.recipes import doctor, doctor_inputs
from gradguard.recipes.run_files import RunFolderInvalid
from gradguard.recipes.trials import COLUMNS

from fault_checks import error_line, make_outside, snapshot

PROG = "python -m recipes.doctor"


@pytest.fixture
def world(tmp_path):
    make_outside(tmp_path)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    model.save(tmp_path / "m.keras")
    np.savez(tmp_path / "d.npz", x=np.linspace(-1, 1, 60, dtype=np.float32).reshape(20, 3),
             y=np.linspace(0, 1, 20, dtype=np.float32).reshape(20, 1))
    out = tmp_path / "exam"
    out.mkdir()
    argv = ["--model", str(tmp_path / "m.keras"), "--data", str(tmp_path / "d.npz"), "--out", str(out)]
    (out / doctor_inputs.MARKER).write_text(json.dumps(doctor_inputs.fingerprint(doctor.parse_args(argv))))
    rows = [{"trial": 0, "change": "as given", "exploded_step": 3, "val_loss": 2.5, "val/trivial": 1.1,
             "accuracy": None, "trend": "flat", "learned": False, "wall_time_s": 1.2, "note": "", "code": ""},
            {"trial": 1, "change": "lr x0.1", "exploded_step": None, "val_loss": 0.01, "val/trivial": 0.05,
             "accuracy": None, "trend": "flat", "learned": True, "wall_time_s": 1.0, "note": "",
             "code": "optimizer = keras.optimizers.SGD(0.001)\nmodel.compile(optimizer=optimizer, loss='mse')"}]
    pd.DataFrame(rows, columns=[*COLUMNS, "note", "code"]).to_csv(out / "results.csv", index=False)
    (out / "findings.json").write_text(json.dumps(
        {"cause": "learning_rate", "problem": "exploded", "evidence": "norm 1e5 at step 3",
         "clip_norm": 1.5, "bad_rows": []}))
    return tmp_path, argv


def refused(world, capsys) -> str:
    root, argv = world
    before = snapshot(root)
    with pytest.raises(SystemExit) as info:
        doctor.main(argv)
    code = info.value.code
    assert isinstance(code, str), code
    assert snapshot(root) == before
    return error_line(code, PROG)


def edit_csv(root, change):
    path = root / "exam" / "results.csv"
    table = pd.read_csv(path, keep_default_na=False, na_values=[""])
    change(table).to_csv(path, index=False)


CSV_FAULTS = [
    ("a column the doctor never writes", lambda t: t.assign(rm_rf="/"), "columns ['rm_rf'] the doctor never writes"),
    ("no learned column", lambda t: t.drop(columns=["learned"]), "no column ['learned']"),
    ("a trial that is no number", lambda t: t.assign(trial=["0", "../../x"]), "holds trial '../../x', not a whole number"),
    ("a negative trial", lambda t: t.assign(trial=[0, -1]), "holds trial -1, not a whole number >= 0"),
    ("a fractional trial", lambda t: t.assign(trial=[0, 1.5]), "holds trial 1.5, not a whole number"),
    ("a trial twice", lambda t: t.assign(trial=[0, 0]), "holds trial 0 twice"),
    ("no trial 0", lambda t: t.assign(trial=[1, 2]), "has no trial 0 (the model as given)"),
    ("a val/trivial that is text", lambda t: t.assign(**{"val/trivial": ["1.1", "lots"]}), "val/trivial 'lots' is not a number"),
    ("an exploded_step that is text", lambda t: t.assign(exploded_step=["3", "soon"]), "exploded_step 'soon' is not a number"),
    ("learned neither True nor False", lambda t: t.assign(learned=["False", "maybe"]), "learned 'maybe' is not True or False"),
]


@pytest.mark.parametrize("what, change, expected", CSV_FAULTS, ids=[c[0] for c in CSV_FAULTS])
def test_results_csv_fault_is_one_line_before_any_trial(world, capsys, what, change, expected):
    edit_csv(world[0], change)
    line = refused(world, capsys)
    assert expected in line and "results.csv" in line
    assert "move results.csv and findings.json away" in line


def test_damaged_results_csv_bytes(world, capsys):
    (world[0] / "exam" / "results.csv").write_bytes(b"\xff\xfe\x00garbage" * 20)
    line = refused(world, capsys)
    assert "results.csv' is damaged" in line and "move results.csv and findings.json away" in line


FINDINGS_FAULTS = [
    ("not JSON", "{cause: learning", "cannot be read"),
    ("a list", "[1, 2]", "has no cause (str)"),
    ("no cause", json.dumps({"problem": "x", "evidence": "y", "bad_rows": [], "clip_norm": None}), "has no cause (str)"),
    ("bad_rows not a list", json.dumps({"cause": "c", "problem": "x", "evidence": "y", "bad_rows": "all",
                                        "clip_norm": None}), "has no bad_rows (list)"),
    ("clip_norm text", json.dumps({"cause": "c", "problem": "x", "evidence": "y", "bad_rows": [],
                                   "clip_norm": "big"}), "has no clip_norm (a number or null)"),
]


@pytest.mark.parametrize("what, text, expected", FINDINGS_FAULTS, ids=[c[0] for c in FINDINGS_FAULTS])
def test_findings_json_fault_is_one_line_before_any_trial(world, capsys, what, text, expected):
    (world[0] / "exam" / "findings.json").write_text(text)
    line = refused(world, capsys)
    assert expected in line and "findings.json" in line


def test_python_api_refuses_a_tensorboard_link_out_of_the_folder(world):
    """`examine(out_dir=...)` never deletes through a link: the trial's old run is not removed."""
    root, _ = world
    out = root / "api"
    out.mkdir()
    os.symlink(root / "outside", out / "tensorboard")
    (root / "outside" / "trial-0").mkdir()
    (root / "outside" / "trial-0" / "keep.txt").write_text("a user's file")
    before = snapshot(root)
    model = keras.saving.load_model(root / "m.keras")
    data = np.load(root / "d.npz")
    with pytest.raises(RunFolderInvalid, match="symbolic link"):
        doctor.examine(model, data["x"], data["y"], out_dir=out, epochs=1, verbose=False)
    assert snapshot(root) == before
