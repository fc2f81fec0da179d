"""The doctor's crafted inputs: bad models, bad arrays, huge arrays, taken folders; one line each.

Each test writes real files (a `.keras` saved by Keras, a `.npz` by numpy
or by hand with a header that declares more than it holds, another run's
folder) beside an `outside/` folder, runs `python -m recipes.doctor` in
process, and asserts its one error line and that nothing under `tmp_path`
was created, changed or deleted. Every refusal comes before the first
trial, so no test here trains.
"""

import io
import json
import shutil
import zipfile

import keras
import numpy as np
import pytest

from gradguard.recipes import doctor, doctor_inputs

from fault_checks import craft, error_line, make_outside, snapshot

PROG = "python -m recipes.doctor"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A compiled MLP (3 -> 1, mse), the same uncompiled, and a sparse classifier (3 -> 4)."""
    folder = tmp_path_factory.mktemp("models")
    mlp = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    mlp.save(folder / "uncompiled.keras")
    mlp.compile(optimizer="sgd", loss="mse")
    mlp.save(folder / "m.keras")
    classifier = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4)])
    classifier.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    classifier.save(folder / "sparse.keras")
    return folder


@pytest.fixture
def world(tmp_path, models):
    make_outside(tmp_path)
    for name in ("m.keras", "uncompiled.keras", "sparse.keras"):
        shutil.copy(models / name, tmp_path / name)
    np.savez(tmp_path / "good.npz", x=np.linspace(-1, 1, 60, dtype=np.float32).reshape(20, 3),
             y=np.linspace(0, 1, 20, dtype=np.float32).reshape(20, 1))
    return tmp_path


def npz_declaring(path, shapes: dict) -> None:
    """A `.npz` whose `.npy` headers declare `shapes` (float64) but hold 16 bytes each."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, shape in shapes.items():
            buffer = io.BytesIO()
            np.lib.format.write_array_header_1_0(
                buffer, {"descr": "<f8", "fortran_order": False, "shape": shape})
            archive.writestr(f"{name}.npy", buffer.getvalue() + bytes(16))


def doctor_error(world, capsys, model="m.keras", data="good.npz", extra=()) -> str:
    """Runs the doctor; returns its one error line, asserting nothing under `world` changed."""
    before = snapshot(world)
    with pytest.raises(SystemExit) as info:
        doctor.main(["--model", str(world / model), "--data", str(world / data), *extra])
    code = info.value.code
    text = code if isinstance(code, str) else capsys.readouterr().err
    assert isinstance(code, str) or code == 2
    line = error_line(f"{PROG}: error: {text}" if isinstance(code, str) and
                      not text.startswith(PROG) else text, PROG)
    assert snapshot(world) == before
    return line


DATA_FAULTS = [
    ("text file named .npz", lambda p: p.write_text("x,y\n1,2\n"), "is not a readable .npz (not a zip archive)"),
    ("random bytes", lambda p: p.write_bytes(np.random.default_rng(0).bytes(300)), "not a zip archive"),
    ("empty file", lambda p: p.write_bytes(b""), "is not a readable .npz"),
    ("no y", lambda p: np.savez(p, x=np.ones((4, 3))), "holds ['x']; expected x and y"),
    ("string y", lambda p: np.savez(p, x=np.ones((4, 3)), y=np.array(["a", "b", "a", "b"])),
     "y holds <U1 values, not numbers; encode the labels as ints"),
    ("object y", lambda p: np.savez(p, x=np.ones((2, 3)), y=np.array([{}, None], dtype=object)),
     "y holds object values, not numbers"),
    ("string x", lambda p: np.savez(p, x=np.array([["a"] * 3] * 4), y=np.ones(4)), "x holds <U1 values"),
    ("1-D x", lambda p: np.savez(p, x=np.ones(4), y=np.ones(4)),
     "x has shape (4,); expected (samples, features, ...), at least 2-D: pass x[:, None]"),
    ("0-D y", lambda p: np.savez(p, x=np.ones((4, 3)), y=np.float64(1)), "y has shape ()"),
    ("empty x and y", lambda p: np.savez(p, x=np.ones((0, 3)), y=np.ones(0)), "x has shape (0, 3), with no values"),
    ("no features", lambda p: np.savez(p, x=np.ones((4, 0)), y=np.ones(4)), "x has shape (4, 0), with no values"),
    ("rows differ", lambda p: np.savez(p, x=np.ones((4, 3)), y=np.ones(3)), "x has 4 rows but y has 3"),
    ("x_val alone", lambda p: np.savez(p, x=np.ones((4, 3)), y=np.ones(4), x_val=np.ones((2, 3))),
     "and x_val with y_val, or neither"),
    ("x_val features", lambda p: np.savez(p, x=np.ones((4, 3)), y=np.ones(4), x_val=np.ones((2, 5)),
                                          y_val=np.ones(2)), "x_val has shape (2, 5) but x has (4, 3)"),
    ("val rows differ", lambda p: np.savez(p, x=np.ones((4, 3)), y=np.ones(4), x_val=np.ones((2, 3)),
                                           y_val=np.ones(3)), "x_val has 2 rows but y_val has 3"),
    ("8 TB declared in x", lambda p: npz_declaring(p, {"x": (10**6, 10**6), "y": (10**6,)}),
     "declares 8 TB of arrays (x: float64 (1000000, 1000000)), and the doctor needs about 4x that"),
    ("80 TB declared in y", lambda p: npz_declaring(p, {"x": (10, 3), "y": (10, 10**12)}),
     "(y: float64 (10, 1000000000000))"),
]


@pytest.mark.parametrize("write, message", [f[1:] for f in DATA_FAULTS], ids=[f[0] for f in DATA_FAULTS])
def test_a_bad_data_file_is_refused_before_keras_loads_anything(world, capsys, write, message):
    write(world / "bad.npz")
    line = doctor_error(world, capsys, data="bad.npz", extra=["--out", str(world / "new")])
    assert message in line and str(world / "bad.npz") in line


MODEL_FAULTS = [
    ("random bytes", lambda p: p.write_bytes(np.random.default_rng(1).bytes(500)),
     "is not a Keras file (not a zip archive); save the model with model.save('model.keras')"),
    ("empty", lambda p: p.write_bytes(b""), "is not a Keras file (not a zip archive)"),
    ("zip without config.json", lambda p: zipfile.ZipFile(p, "w").writestr("a.txt", "hi"),
     "is not a Keras file (no config.json in it)"),
    ("config.json not JSON", lambda p: zipfile.ZipFile(p, "w").writestr("config.json", "{oops"),
     "is not a Keras file ("),
]


@pytest.mark.parametrize("write, message", [f[1:] for f in MODEL_FAULTS], ids=[f[0] for f in MODEL_FAULTS])
def test_a_file_that_is_not_a_keras_model_is_named_as_such(world, capsys, write, message):
    write(world / "bad.keras")
    line = doctor_error(world, capsys, model="bad.keras")
    assert message in line and str(world / "bad.keras") in line and "File not found" not in line


def test_an_uncompiled_model_is_refused_before_keras_loads_it(world, capsys):
    line = doctor_error(world, capsys, model="uncompiled.keras")
    assert "was saved before model.compile(...); compile it" in line


@pytest.mark.parametrize("model, y, message", [
    ("m.keras", np.ones((20, 5)), "y has shape (5,) per sample but --model"),
    ("m.keras", np.ones((20, 1, 2)), "y has shape (1, 2) per sample"),
    ("sparse.keras", np.ones((20, 4)), "y has shape (4,) per sample, but --model"),
    ("sparse.keras", np.ones((20, 2, 1)), "y has shape (2, 1) per sample, but --model"),
])
def test_y_that_does_not_match_the_output_is_refused_before_any_trial(world, capsys, model, y, message):
    np.savez(world / "d.npz", x=np.ones((20, 3), np.float32), y=y.astype(np.float32))
    line = doctor_error(world, capsys, model=model, data="d.npz", extra=["--out", str(world / "new")])
    assert message in line
    assert ("Keras would broadcast one against the other" in line if model == "m.keras" else
            "takes one class index per sample (y of shape (n,) or (n, 1))" in line)


@pytest.mark.parametrize("y", [np.ones(20), np.ones((20, 1))])
def test_y_of_one_value_per_sample_fits_a_one_unit_output(world, y):
    model = keras.saving.load_model(world / "m.keras")
    doctor_inputs.check_model(model, y, "m.keras")  # no error: Keras matches (n,) to (n, 1)


def _foreign_run(world):
    craft(world / "taken")


def _other_doctor(world):
    (world / "taken").mkdir()
    (world / "taken" / "doctor.json").write_text(json.dumps(
        {"model_sha256": "0" * 64, "data_sha256": "0" * 64, "settings": {}}))
    (world / "taken" / "results.csv").write_text("trial,change\n0,as given\n")


def _old_doctor(world):
    (world / "taken").mkdir()
    (world / "taken" / "findings.json").write_text("{}")


def _garbage_marker(world):
    (world / "taken").mkdir()
    (world / "taken" / "doctor.json").write_text("{not json")


def _link_inside(world):
    _other_doctor(world)
    (world / "taken" / "tensorboard").symlink_to(world / "outside")


OUT_FAULTS = [
    ("a recipe's run folder", _foreign_run, "already holds files (.lock, config.json, results.csv"),
    ("another model's doctor folder", _other_doctor, "holds the examination of another --model"),
    ("a folder without doctor.json", _old_doctor, "and is not a doctor's folder (no doctor.json)"),
    ("an unreadable doctor.json", _garbage_marker, "cannot read"),
    ("a link inside", _link_inside, "holds a symbolic link"),
    ("a file", lambda w: (w / "taken").write_text("x"), "is an existing file (or link)"),
    ("a link to a folder", lambda w: (w / "taken").symlink_to(w / "outside"), "is an existing file (or link)"),
]


@pytest.mark.parametrize("make, message", [f[1:] for f in OUT_FAULTS], ids=[f[0] for f in OUT_FAULTS])
def test_out_refuses_a_folder_that_is_not_this_examinations(world, capsys, make, message):
    make(world)
    line = doctor_error(world, capsys, extra=["--out", str(world / "taken")])
    assert message in line and str(world / "taken") in line
    assert "pick a new" in line or "start a new run with --out" in line


def test_out_resumes_only_the_same_model_data_and_settings(world):
    args = doctor.parse_args(["--model", str(world / "m.keras"), "--data", str(world / "good.npz"),
                              "--out", str(world / "exam")])
    doctor_inputs.claim_out(args)
    saved = json.loads((world / "exam" / "doctor.json").read_text())
    assert saved["data_sha256"] == __import__("hashlib").sha256((world / "good.npz").read_bytes()).hexdigest()
    (world / "exam" / "results.csv").write_text("trial\n0\n")
    doctor_inputs.check_files(args)  # the same examination: resumed
    np.savez(world / "good.npz", x=np.zeros((20, 3), np.float32), y=np.ones((20, 1), np.float32))
    with pytest.raises(ValueError, match="holds the examination of another --data"):
        doctor_inputs.check_files(args)
    with pytest.raises(ValueError, match="another settings"):
        doctor_inputs.check_out(str(world / "exam"), {**saved, "settings": {**saved["settings"], "epochs": 9}})


@pytest.mark.parametrize("free, refused", [(10**9, False), (4 * 480 - 1, True), (4 * 480, False)])
def test_the_memory_guard_is_four_times_the_declared_bytes(world, free, refused):
    headers = doctor_inputs.read_headers(str(world / "good.npz"))  # 20x3 + 20x1 float32 = 320 bytes
    assert {k: (h.shape, h.nbytes) for k, h in headers.items()} == {"x": ((20, 3), 240), "y": ((20, 1), 80)}
    headers["x_val"] = headers["y_val"] = doctor_inputs.Header((20, 1), np.dtype("float32"))  # + 160
    if refused:
        with pytest.raises(ValueError, match="declares 480 bytes of arrays"):
            doctor_inputs.check_memory("d.npz", headers, free=free)
    else:
        doctor_inputs.check_memory("d.npz", headers, free=free)
