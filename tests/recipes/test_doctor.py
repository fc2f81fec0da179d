"""Tests for the doctor: broken set-ups built for real, repaired and checked by numpy.

Each broken set-up is a user's script: seed, build, compile. The doctor
examines it; the test computes the learned bar itself (the constant
prediction's MSE, or the majority class's accuracy, from numpy) and checks
the repaired model against it, and applies the doctor's `code` to the
script by hand to see the same result.
"""

import pathlib
import subprocess
import sys

import keras
import numpy as np
import pandas as pd
import pytest

from gradguard.recipes import doctor
from gradguard.recipes.doctor import examine

from doctor_data import linear_data

ROOT = pathlib.Path(__file__).resolve().parents[2]
FAST = dict(epochs=3, batch_size=16, verbose=False)


# -- data and bars, computed here with numpy ------------------------------------


def sequence_data(n=320, steps=12, *, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, steps, 2)).astype("float32")
    y = (x[:, -3:, :1].sum(1) - 0.5 * x[:, -1:, 1]).astype("float32")  # recent steps
    return x, y


def split(x, y, fraction=0.2):
    cut = len(y) - int(round(len(y) * fraction))
    return x[:cut], y[:cut], x[cut:], y[cut:]


def val_over_trivial(model, x, y):
    """Validation MSE over the constant (training mean) prediction's, by numpy."""
    x_train, y_train, x_val, y_val = split(x, y)
    finite = np.isfinite(y_train).all(1) & np.isfinite(x_train).reshape(len(x_train), -1).all(1)
    trivial = np.mean((y_val - y_train[finite].mean(0)) ** 2)
    pred = np.asarray(model.predict(x_val, verbose=0), np.float64)
    return float(np.mean((pred - y_val) ** 2) / trivial)


# -- set-ups as users write them ----------------------------------------------------


def mlp(optimizer, d=8, *, hidden=32, seed=0, **dense):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((d,)), keras.layers.Dense(hidden, activation="relu", **dense),
                              keras.layers.Dense(1)])
    model.compile(optimizer=optimizer, loss="mse")
    return model


def fit_by_hand(model, x, y, seed=0):
    """The user's script after the change: the same seed, fit, judged by numpy."""
    x_train, y_train, x_val, y_val = split(x, y)
    keras.utils.set_random_seed(seed)
    model.fit(x_train, y_train, validation_data=(x_val, y_val), verbose=0,
              epochs=FAST["epochs"], batch_size=FAST["batch_size"])
    return val_over_trivial(model, x, y)


def test_healthy_mlp_is_healthy_in_one_trial_and_untouched():
    x, y = linear_data()
    model = mlp(keras.optimizers.SGD(0.05))
    before = [w.copy() for w in model.get_weights()]
    found = examine(model, x, y, **FAST)
    assert found.cause == "healthy" and found.problem == "none"
    assert len(found.trials) == 1 and found.cure is None and found.code == ()
    assert val_over_trivial(found.model, x, y) <= 0.1
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert model.optimizer.iterations.numpy() == 0  # the user's model never trained


def test_learning_rate_too_high_is_cured_and_the_code_reproduces_it():
    x, y = linear_data()
    found = examine(mlp(keras.optimizers.SGD(0.5)), x, y, **FAST)
    assert found.cause == "learning_rate" and found.problem == "exploding"
    assert found.trials["learned"].iloc[-1] and not found.trials["learned"].iloc[0]
    assert pd.notna(found.trials["exploded_step"].iloc[0])
    assert val_over_trivial(found.model, x, y) <= 0.1
    # The printed block, pasted into the script in place of its compile call.
    assert found.code == ("optimizer = keras.optimizers.SGD(learning_rate=0.05)",
                          "model.compile(optimizer=optimizer, loss='mse')  # and your metrics")
    names = {"keras": keras, "np": np, "model": mlp(keras.optimizers.SGD(0.5))}
    exec("\n".join(found.code), names)
    by_hand = fit_by_hand(names["model"], x, y)
    assert by_hand <= 0.1
    assert by_hand == pytest.approx(found.trials["val/trivial"].iloc[-1], rel=0.05)


@pytest.mark.slow
def test_input_scale_is_cured_by_normalization_pasted_by_hand():
    x, y = linear_data(scale=1000.0)
    found = examine(mlp(keras.optimizers.SGD(0.05)), x, y, **FAST)
    assert found.cause == "input_scale"
    assert found.cure == "Normalization in front of the inputs"
    assert val_over_trivial(found.model, x, y) <= 0.1
    # The lines, as printed, around the user's model.
    model = mlp(keras.optimizers.SGD(0.05))
    names = {"keras": keras, "np": np, "x": split(x, y)[0], "model": model}
    exec("\n".join(found.code), names)
    assert fit_by_hand(names["model"], x, y) <= 0.1


@pytest.mark.slow
def test_bad_data_rows_are_named_and_dropped():
    x, y = linear_data()
    x[[7, 100]] = np.nan
    y[31] = np.inf
    found = examine(mlp(keras.optimizers.SGD(0.05)), x, y, **FAST)
    assert found.cause == "bad_data"
    assert "7, 31, 100" in found.evidence and "7, 31, 100" in found.code[0]
    assert found.cure == "drop the non-finite rows"
    assert not found.trials["learned"].iloc[0]
    assert val_over_trivial(found.model, x, y) <= 0.1  # rows 7, 31, 100 are training rows


@pytest.mark.parametrize("kwargs, message", [
    ({"epochs": 0}, "examine received epochs=0; expected an int >= 1."),
    ({"max_trials": 2.5}, "examine received max_trials=2.5; expected an int >= 1."),
    ({"validation_split": 1.0}, "examine received validation_split=1.0; expected a float in (0, 1)"),
    ({"target": -1}, "examine received target=-1; expected a number > 0"),
])
def test_examine_refuses_bad_arguments(kwargs, message):
    x, y = linear_data(32)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        examine(mlp(keras.optimizers.SGD(0.1)), x, y, **kwargs)


def test_examine_refuses_an_uncompiled_model():
    x, y = linear_data(32)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(1)])
    with pytest.raises(ValueError, match="examine received an uncompiled model; call model.compile"):
        examine(model, x, y)


# -- the command line -------------------------------------------------------------


@pytest.mark.parametrize("args, message", [
    (["--model", "missing.keras", "--data", "{npz}"], "--model 'missing.keras': no such file."),
    (["--model", "{npz}", "--data", "{npz}"], "expected a .keras or .h5 file"),
    (["--model", "{keras}", "--data", "{keras}"], "expected a .npz or a .csv file"),
    (["--model", "{keras}", "--data", "{csv}"], "give --target-column and --seq-len too"),
    (["--model", "{keras}", "--data", "{npz}", "--epochs", "0"], "--epochs received 0"),
])
def test_cli_refuses_bad_arguments_before_loading_anything(tmp_path, capsys, args, message):
    files = {"npz": tmp_path / "d.npz", "keras": tmp_path / "m.keras", "csv": tmp_path / "s.csv"}
    for path in files.values():
        path.write_bytes(b"")
    args = [a.format(**{k: str(v) for k, v in files.items()}) for a in args]
    with pytest.raises(SystemExit) as error:
        doctor.main(args)
    assert error.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("arrays, message", [
    ({"x": np.zeros((4, 2))}, "expected x and y"),
    ({"x": np.zeros((4, 2)), "y": np.zeros(3)}, "x has 4 rows but y has 3"),
    ({"x": np.zeros((4, 2)), "y": np.zeros(4), "x_val": np.zeros((2, 2))}, "x_val with y_val"),
])
def test_cli_names_a_bad_data_file_in_one_line(tmp_path, arrays, message):
    np.savez(tmp_path / "d.npz", **arrays)
    (tmp_path / "m.keras").write_bytes(b"")
    with pytest.raises(SystemExit) as error:
        doctor.main(["--model", str(tmp_path / "m.keras"), "--data", str(tmp_path / "d.npz")])
    assert message in str(error.value.code) and "\n" not in str(error.value.code)


def test_cli_reads_a_csv_series_and_names_its_bad_cell(tmp_path):
    (tmp_path / "m.keras").write_bytes(b"")
    (tmp_path / "s.csv").write_text("load,temp\n1,10\n2,oops\n3,12\n4,13\n")
    with pytest.raises(SystemExit) as error:
        doctor.main(["--model", str(tmp_path / "m.keras"), "--data", str(tmp_path / "s.csv"),
                     "--target-column", "load", "--seq-len", "2"])
    message = str(error.value.code)
    assert "temp" in message and "oops" in message and "\n" not in message
    args = doctor.parse_args(["--model", str(tmp_path / "m.keras"), "--data", str(tmp_path / "s.csv"),
                              "--target-column", "load", "--seq-len", "2"])
    (tmp_path / "s.csv").write_text("load,temp\n1,10\n2,11\n3,12\n4,13\n")
    x, y, val = doctor.load_data(args)
    assert x.shape == (2, 2, 1) and y.ravel().tolist() == [3.0, 4.0] and val is None


def test_cli_help_does_not_import_keras():
    code = ("import sys; from recipes import doctor\n"
            "try: doctor.parse_args(['--help'])\n"
            "except SystemExit: pass\n"
            "print('keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.stdout.strip().endswith("False"), out.stderr


# -- broad set-ups (slow): conv, attention, RNN, deep stacks, classification ----------


SLOW = dict(epochs=5, batch_size=16, verbose=False)


def sequential(layers, optimizer, shape, loss="mse"):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input(shape), *layers])
    model.compile(optimizer=optimizer, loss=loss)
    return model


def conv(lr):
    return sequential([keras.layers.Conv1D(16, 3, activation="relu"), keras.layers.Flatten(),
                       keras.layers.Dense(1)], keras.optimizers.SGD(lr), (12, 2))


def attention(lr):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 2))
    h = keras.layers.Dense(16)(inputs)
    h = keras.layers.MultiHeadAttention(2, 8)(h, h) + h
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Flatten()(h)))
    model.compile(optimizer=keras.optimizers.SGD(lr), loss="mse")
    return model


def simple_rnn(gain):
    return sequential([keras.layers.SimpleRNN(16, activation="relu",
                                              recurrent_initializer=keras.initializers.Orthogonal(gain=gain)),
                       keras.layers.Dense(1)], keras.optimizers.SGD(0.01), (12, 2))


def deep_relu(std):
    init = keras.initializers.RandomNormal(stddev=std / np.sqrt(32))
    return sequential([*[keras.layers.Dense(32, activation="relu", kernel_initializer=init) for _ in range(6)],
                       keras.layers.Dense(1)], keras.optimizers.SGD(0.05), (8,))


def deep_tanh_small():
    init = keras.initializers.RandomNormal(stddev=0.05)
    return sequential([*[keras.layers.Dense(32, activation="tanh", kernel_initializer=init) for _ in range(8)],
                       keras.layers.Dense(1)], keras.optimizers.SGD(0.05), (8,))


BROKEN = {  # name -> (build, data, causes accepted, problem)
    "conv_learning_rate": (lambda: conv(1.0), sequence_data, {"learning_rate"}, "exploding"),
    "attention_learning_rate": (lambda: attention(1.0), sequence_data, {"learning_rate"}, "exploding"),
    "rnn_recurrence": (lambda: simple_rnn(3.0), sequence_data, {"recurrence"}, "exploding"),
    "mlp_depth": (lambda: deep_relu(4.0), lambda: linear_data(640), {"depth"}, "exploding"),
    "mlp_vanishing": (deep_tanh_small, linear_data, {"depth"}, "vanishing"),
    "mlp_dying_relu": (lambda: mlp(keras.optimizers.SGD(0.05),
                                   bias_initializer=keras.initializers.Constant(-10.0)),
                       linear_data, {"activation"}, "dying_relu"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_setup_is_named_and_repaired(name):
    build, make_data, causes, problem = BROKEN[name]
    x, y = make_data()
    found = examine(build(), x, y, **SLOW)
    print(found.trials.to_string(index=False))
    assert found.cause in causes and found.problem == problem
    assert found.cure is not None and found.trials["learned"].iloc[-1]
    assert val_over_trivial(found.model, x, y) <= 0.1


@pytest.mark.slow
def test_a_rate_too_high_under_mixed_precision_is_named_and_repaired():
    # SGD at lr 5 under mixed_float16: the loss scaler skips step after step.
    # Since 7 Dec (session 4) NaNGuard replays the batch in float32 from the
    # same weights: the loss there is 2.2e3x the first, so the weights
    # diverged and float16 only overflowed first. The same net in float32
    # at lr 5 blows up at step 2 (early_blowup, cured by lr x0.1): the rate.
    keras.config.set_dtype_policy("mixed_float16")  # conftest resets it
    x, y = linear_data()
    found = examine(mlp(keras.optimizers.SGD(5.0)), x, y, **SLOW)
    print(found.trials.to_string(index=False))
    assert found.cause == "learning_rate" and found.problem == "exploding"
    assert found.cure is not None and found.trials["learned"].iloc[-1]
    assert val_over_trivial(found.model, x, y) <= 0.1


def classification_data(n=320, *, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype("float32")
    return x, ((x[:, 0] + x[:, 1] > 0).astype("int32") + (x[:, 2] > 1)).astype("int32")


def classifier(lr):
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return sequential([keras.layers.Dense(32, activation="relu"), keras.layers.Dense(3)],
                      keras.optimizers.SGD(lr), (8,), loss=loss)


@pytest.mark.slow
def test_classifier_bar_is_the_majority_class_by_a_clear_margin():
    x, y = classification_data()
    x_train, y_train, x_val, y_val = split(x, y)
    majority = np.mean(y_val == np.bincount(y_train).argmax())
    bar = majority + 0.5 * (1 - majority)
    healthy = examine(classifier(0.1), x, y, **FAST)
    assert healthy.cause == "healthy" and len(healthy.trials) == 1
    found = examine(classifier(50.0), x, y, **FAST)
    assert found.cause == "learning_rate" and found.cure is not None
    accuracy = np.mean(found.model.predict(x_val, verbose=0).argmax(-1) == y_val)
    assert accuracy >= bar > majority


@pytest.mark.slow
def test_out_dir_is_written_per_trial_and_resumed(tmp_path):
    x, y = linear_data()
    first = examine(mlp(keras.optimizers.SGD(0.5)), x, y, out_dir=tmp_path, **FAST)
    table = pd.read_csv(tmp_path / "results.csv")
    assert table["trial"].tolist() == first.trials["trial"].tolist()
    assert sorted(p.name for p in (tmp_path / "tensorboard").iterdir()) == \
        [f"trial-{n}" for n in first.trials["trial"]]
    # Each trial's gradient flow: a PNG, and the same bytes in its TensorBoard run's Images tab.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for n in first.trials["trial"]:
        acc = EventAccumulator(str(tmp_path / "tensorboard" / f"trial-{n}"), size_guidance={"images": 0})
        acc.Reload()
        (image,) = acc.Images(f"charts/gradient_flow-trial-{n}")
        assert image.encoded_image_string == (tmp_path / f"gradient_flow-trial-{n}.png").read_bytes()
    assert "cure: learning rate x0.1" in (tmp_path / "summary.txt").read_text()
    # Interrupted after trial 0: the rerun trains only what is missing.
    (tmp_path / "results.csv").write_text(table.iloc[:1].to_csv(index=False))
    again = examine(mlp(keras.optimizers.SGD(0.5)), x, y, out_dir=tmp_path, **FAST)
    pd.testing.assert_frame_equal(again.trials.drop(columns="wall_time_s"),
                                  first.trials.drop(columns="wall_time_s"), check_dtype=False)
    assert val_over_trivial(again.model, x, y) <= 0.1


@pytest.mark.slow
def test_cli_examines_a_saved_model_and_prints_the_code(tmp_path, capsys):
    x, y = linear_data()
    mlp(keras.optimizers.SGD(0.5)).save(tmp_path / "m.keras")
    np.savez(tmp_path / "d.npz", x=x, y=y)
    found = doctor.main(["--model", str(tmp_path / "m.keras"), "--data", str(tmp_path / "d.npz"),
                         "--batch-size", "16", "--out", str(tmp_path / "run")])
    out = capsys.readouterr().out
    assert found.cause == "learning_rate"
    assert "optimizer = keras.optimizers.SGD(learning_rate=0.05)" in out
    assert (tmp_path / "run" / "summary.txt").read_text() in out
    # Every line within 120 columns, the trials table and the bar included; the TensorBoard
    # command stays whole on its line, to be copied (its length is the paths').
    assert max(len(line) for line in out.splitlines() if "tensorboard --logdir" not in line) <= 120
    table = out[out.rindex("\ntrial  ") + 1:].splitlines()  # the summary's table, to its end
    table = table[:next(i for i, line in enumerate(table) if line.startswith("cure"))]
    rows = [line for line in table[1:] if line[:5].strip()]  # continued lines start blank
    assert [int(line.split()[0]) for line in rows] == found.trials["trial"].tolist(), "\n".join(table)


# -- the cures on their own (no training) ---------------------------------------------


@keras.saving.register_keras_serializable(package="gradguard_tests")
class TwoLayer(keras.Model):
    def __init__(self, units=16, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.hidden = keras.layers.Dense(units, activation="relu")
        self.out = keras.layers.Dense(1)

    def call(self, x):
        return self.out(self.hidden(x))

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def patient(model, x, y):
    from gradguard.recipes.cures import Patient
    return Patient(model, keras.optimizers.SGD(0.5, momentum=0.9), split(x, y))


def test_structural_cures_are_not_applicable_to_a_subclassed_model():
    from gradguard.recipes import cures
    x, y = linear_data(64)
    model = TwoLayer()
    model(x[:1])
    for cure in (cures.FAN_IN, cures.BATCH_NORM, cures.LEAKY, cures.LSTM):
        with pytest.raises(cures.NotApplicable, match="subclassed model has no layer graph"):
            cure.apply(patient(model, x, y), cures.Context(1.0, ()))
    # Normalization wraps any model; the optimizer cures change only the optimizer.
    wrapped = cures.NORMALIZE.apply(patient(model, x, y), cures.Context(1.0, ())).model
    scaled = np.asarray(wrapped.layers[1](split(x, y)[0]))  # adapted on the training rows
    assert np.allclose(scaled.mean(0), 0, atol=1e-4) and np.allclose(scaled.std(0), 1, atol=1e-3)
    optimizer = cures.LR_10.apply(patient(model, x, y), cures.Context(1.0, ())).optimizer
    assert cures.optimizer_code(optimizer) == \
        "optimizer = keras.optimizers.SGD(learning_rate=0.05, momentum=0.9)"
    optimizer = cures.CLIP.apply(patient(model, x, y), cures.Context(1234.5678, ())).optimizer
    assert cures.optimizer_code(optimizer) == \
        "optimizer = keras.optimizers.SGD(learning_rate=0.5, global_clipnorm=1.23e+03, momentum=0.9)"


def test_rebuilt_layers_keep_every_weight_the_cure_leaves_alone():
    from gradguard.recipes import cures
    x, y = linear_data(64)
    model = mlp(keras.optimizers.SGD(0.1))
    leaky = cures.LEAKY.apply(patient(model, x, y), cures.Context(None, ())).model
    assert [layer.get_config().get("activation") for layer in leaky.layers] == ["leaky_relu", "linear"]
    for old, new in zip(model.get_weights(), leaky.get_weights()):
        np.testing.assert_array_equal(old, new)
    batch_norm = cures.BATCH_NORM.apply(patient(model, x, y), cures.Context(None, ())).model
    np.testing.assert_array_equal(batch_norm.layers[0].layers[0].get_weights()[0], model.get_weights()[0])
    with pytest.raises(cures.NotApplicable, match="no stable gradient norms"):
        cures.CLIP.apply(patient(model, x, y), cures.Context(None, ()))
    with pytest.raises(cures.NotApplicable, match="no NaN/inf"):
        cures.DROP_ROWS.apply(patient(model, x, y), cures.Context(None, ()))


@pytest.mark.slow
def test_try_all_trains_every_cure_up_to_max_trials_and_picks_the_best():
    x, y = linear_data()
    found = examine(mlp(keras.optimizers.SGD(0.5)), x, y, try_all=True, max_trials=4, **FAST)
    trained = found.trials[found.trials["note"] == ""]
    assert len(trained) == 4 and trained["learned"].sum() >= 1
    learned = found.trials[found.trials["learned"]]
    assert found.cure == learned.sort_values("val/trivial")["change"].iloc[0]

