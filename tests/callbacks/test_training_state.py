"""The monitor as invisible training state: checkpoints, repeated fit, resume, exceptions.

Each test trains a real model the way users do: checkpoints written during
`fit` and read back by a process that never imports gradguard, a run
interrupted and resumed with `BackupAndRestore`, `fit` called several times,
an exception in the middle of training.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings

import h5py
import keras
import numpy as np
import pytest

from gradguard.callbacks import AutoClip, GradientMonitor, GradientNormLogger, NaNGuard
from gradguard.callbacks.attach import find_monitor
from tests.callbacks.helpers import dense_model, lstm_model, regression_data

GRAD_KEYS = ("grad_norm", "grad_norm_max", "grad_norm_clipped")


def _model(seed=0, build=dense_model):
    keras.utils.set_random_seed(seed)
    model = build()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    return model


def _plain_python(code: str) -> dict:
    """Runs `code` in a fresh interpreter that never imports gradguard."""
    script = textwrap.dedent(code) + textwrap.dedent("""
        import sys
        assert not any(m.startswith("gradguard") for m in sys.modules), "gradguard imported"
    """)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONWARNINGS="error::UserWarning")
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _h5_layout(path) -> dict:
    """Every dataset in an h5 file: name -> shape."""
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj.shape)
                     if isinstance(obj, h5py.Dataset) else None)
    return out


# -- 1. checkpoints --------------------------------------------------------


def test_checkpoints_written_during_fit_are_plain_keras_files(tmp_path):
    x, y = regression_data((8,), n=64)
    runs = {}
    for name, extra in [("plain", []), ("gradguard", None)]:
        model = _model()
        folder = tmp_path / name
        folder.mkdir()
        callbacks = [
            keras.callbacks.ModelCheckpoint(str(folder / "epoch{epoch}.keras")),
            keras.callbacks.ModelCheckpoint(
                str(folder / "epoch{epoch}.weights.h5"), save_weights_only=True
            ),
        ]
        if extra is None:  # gradguard's callbacks on both sides of them
            callbacks = [GradientNormLogger()] + callbacks + [NaNGuard(verbose=False)]
        model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0,
                  callbacks=callbacks)
        runs[name] = folder
    # The same datasets, names and shapes as plain Keras writes.
    for file in ["epoch2.weights.h5", "epoch1.weights.h5"]:
        assert _h5_layout(runs["gradguard"] / file) == _h5_layout(runs["plain"] / file)

    # Loaded where gradguard was never imported: no warning (they are errors
    # there), the full optimizer state, equal to plain Keras' at the same step.
    loaded = {}
    for name, folder in runs.items():
        loaded[name] = _plain_python(f"""
            import json, keras, numpy as np
            model = keras.saving.load_model({str(folder / "epoch2.keras")!r})
            twin = keras.Sequential([
                keras.Input((8,)),
                keras.layers.Dense(16, activation="tanh", name="hidden"),
                keras.layers.Dense(8, activation="relu", name="middle"),
                keras.layers.Dense(1, name="head"),
            ])
            twin.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
            twin.optimizer.build(twin.trainable_variables)
            twin.load_weights({str(folder / "epoch2.weights.h5")!r})
            state = lambda m: [np.asarray(v).tolist() for v in m.optimizer.variables]
            print(json.dumps({{
                "optimizer": type(model.optimizer).__name__,
                "iterations": int(model.optimizer.iterations.numpy()),
                "keras_file": state(model), "weights_file": state(twin),
                "weights": [w.tolist() for w in model.get_weights()],
            }}))
        """)
    ours, plain = loaded["gradguard"], loaded["plain"]
    assert ours["optimizer"] == "Adam" and ours["iterations"] == 8 == plain["iterations"]
    for key in ["keras_file", "weights_file", "weights"]:
        assert len(ours[key]) == len(plain[key])
        for a, b in zip(ours[key], plain[key]):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    moments = [np.asarray(v) for v in ours["keras_file"][2:]]
    assert all(np.abs(m).sum() > 0 for m in moments)  # Adam's moments are there


def test_model_save_from_inside_a_callback_keeps_the_inner_layout(tmp_path):
    x, y = regression_data((8,), n=64)
    model = _model()

    class SaveMidEpoch(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 2:
                self.model.save(tmp_path / "mid.keras")

    model.fit(x, y, batch_size=16, verbose=0,
              callbacks=[AutoClip(), GradientNormLogger(), SaveMidEpoch()])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = keras.saving.load_model(tmp_path / "mid.keras")
    assert type(loaded.optimizer) is keras.optimizers.Adam
    assert int(loaded.optimizer.iterations.numpy()) == 3


# -- 2. BackupAndRestore, in any callback order -----------------------------


class _Interrupt(keras.callbacks.Callback):
    def __init__(self, epoch, batch):
        super().__init__()
        self.at = (epoch, batch)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            raise RuntimeError("interrupted")


@pytest.mark.parametrize("backup_first", [True, False])
def test_interrupted_run_resumes_to_the_same_weights_and_logs(tmp_path, backup_first):
    x, y = regression_data((12, 3), n=96)
    kwargs = dict(batch_size=16, epochs=4, shuffle=False, verbose=0)

    def callbacks(backup_dir, *extra):
        backup = keras.callbacks.BackupAndRestore(str(backup_dir))
        ours = [GradientNormLogger(), NaNGuard(verbose=False)]
        order = [backup] + ours if backup_first else ours + [backup]
        return order + list(extra)

    reference = _model(build=lstm_model)
    full = reference.fit(x, y, callbacks=callbacks(tmp_path / "ref"), **kwargs).history

    model = _model(build=lstm_model)
    with pytest.raises(RuntimeError, match="interrupted"):
        model.fit(x, y, callbacks=callbacks(tmp_path / "run", _Interrupt(2, 3)), **kwargs)
    resumed_model = _model(seed=1, build=lstm_model)  # other initial weights
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no "lost the norms" warning
        resumed = resumed_model.fit(
            x, y, callbacks=callbacks(tmp_path / "run"), **kwargs
        ).history
    for a, b in zip(resumed_model.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert len(resumed["loss"]) == 2  # epochs 3 and 4 ran again
    for key in GRAD_KEYS:
        np.testing.assert_allclose(resumed[key], full[key][2:], rtol=1e-5)
    assert int(resumed_model.optimizer.iterations.numpy()) == 24


KILL_SCRIPT = """
import os, signal, sys, json
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import keras, numpy as np
from gradguard.callbacks import GradientNormLogger
from tests.callbacks.helpers import lstm_model, regression_data

backup, out, kill = sys.argv[1], sys.argv[2], sys.argv[3] == "kill"
keras.utils.set_random_seed(0)
model = lstm_model()
model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
x, y = regression_data((12, 3), n=96)

class Kill(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
    def on_train_batch_end(self, batch, logs=None):
        if kill and (self.epoch, batch) == (2, 3):
            os.kill(os.getpid(), signal.SIGKILL)

logger = GradientNormLogger()
history = model.fit(x, y, batch_size=16, epochs=4, shuffle=False, verbose=0,
                    callbacks=[keras.callbacks.BackupAndRestore(backup), logger, Kill()])
np.savez(out, *model.get_weights())
json.dump({k: history.history[k] for k in ("grad_norm", "grad_norm_max")},
          open(out + ".json", "w"))
"""


def test_sigkilled_run_resumes_exactly(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=root, TF_CPP_MIN_LOG_LEVEL="3")

    def run(backup, out, mode):
        return subprocess.run(
            [sys.executable, "-c", KILL_SCRIPT, str(tmp_path / backup),
             str(tmp_path / out), mode],
            capture_output=True, text=True, env=env, timeout=300,
        )

    killed = run("b", "resumed", "kill")
    assert killed.returncode == -9, killed.stderr[-2000:]
    for mode, backup, out in [("go", "b", "resumed"), ("go", "ref", "reference")]:
        done = run(backup, out, mode)
        assert done.returncode == 0, done.stderr[-2000:]
    a, b = np.load(tmp_path / "resumed.npz"), np.load(tmp_path / "reference.npz")
    for key in a.files:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6)
    logs_a = json.load(open(tmp_path / "resumed.json"))
    logs_b = json.load(open(tmp_path / "reference.json"))
    for key in logs_a:  # the resumed run logged epochs 3 and 4
        np.testing.assert_allclose(logs_a[key], logs_b[key][2:], rtol=1e-5)


# -- 3. repeated fit -------------------------------------------------------


def test_repeated_fit_reuses_the_step_and_continues_steps(tmp_path):
    from tensorboard.backend.event_processing import event_accumulator

    x, y = regression_data((8,), n=64)
    model = _model()
    logger = GradientNormLogger(log_dir=str(tmp_path / "tb"))
    clip = AutoClip(percentile=50.0, history=40)
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[logger, clip])
    train_function = model.train_function
    for _ in range(2):
        model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[logger, clip])
        assert model.train_function is train_function  # nothing retraced
    table = logger.to_dataframe("global")
    assert table["step"].tolist() == list(range(1, 17))
    assert table["fit"].tolist() == [0] * 8 + [1] * 4 + [2] * 4
    assert int(model.optimizer.iterations.numpy()) == 16
    # AutoClip's history carried over: each threshold is the median of the
    # norms of the last 40 steps over all three fits.
    record = find_monitor(model.optimizer).read()
    norms = table["grad_norm"].to_numpy()
    for t in range(16):
        want = np.percentile(norms[max(0, t - 39): t + 1], 50.0)
        np.testing.assert_allclose(record.threshold[t], want, rtol=1e-5)
    # TensorBoard got each step once.
    reader = event_accumulator.EventAccumulator(str(tmp_path / "tb"))
    reader.Reload()
    assert [e.step for e in reader.Scalars("gradients/global_norm")] == list(range(1, 17))


def test_nan_guard_running_median_carries_over_fits():
    x, y = regression_data((8,), n=64)
    model = _model()
    guard = NaNGuard(spike_factor=20.0, min_history=4, verbose=False)
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[guard])
    assert guard.events == []
    # The second fit's first step is huge compared with the first fit's
    # steps: caught at once, at global step 9.
    model.fit(x * 1e3, y * 1e3, batch_size=16, verbose=0, callbacks=[guard])
    assert guard.events[0]["trigger"] == "gradient_spike"
    assert guard.events[0]["step"] == 9


def test_autoclip_is_off_in_a_later_fit_without_it():
    x, y = regression_data((8,), n=64)
    model = _model()
    model.fit(x, y, batch_size=16, verbose=0, callbacks=[AutoClip(), GradientNormLogger()])
    train_function = model.train_function
    model.fit(x, y, batch_size=16, verbose=0, callbacks=[GradientNormLogger()])
    record = find_monitor(model.optimizer).read()
    assert np.isfinite(record.threshold[:4]).all()
    assert np.isinf(record.threshold[4:]).all()  # clipping off, no retrace
    assert model.train_function is train_function


# -- 4. exceptions ----------------------------------------------------------


def test_after_an_exception_the_model_saves_loads_and_trains_plainly(tmp_path):
    x, y = regression_data((8,), n=64)
    bad_x = x.copy()
    bad_x[20] = np.nan  # in the second batch
    model = _model()
    with pytest.raises(FloatingPointError):
        model.fit(bad_x, y, batch_size=16, shuffle=False, verbose=0,
                  # skip_bad_data=False: the bad batch raises (by default it is skipped)
                  callbacks=[AutoClip(), NaNGuard(action="raise", verbose=False,
                                                  skip_bad_data=False)])
    monitor = find_monitor(model.optimizer)
    assert monitor.autoclip_percentile is None  # switched off before raising
    model.save(tmp_path / "after.keras")
    model.save_weights(tmp_path / "after.weights.h5")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = keras.saving.load_model(tmp_path / "after.keras")
    assert type(loaded.optimizer) is keras.optimizers.Adam
    assert int(loaded.optimizer.iterations.numpy()) == 2
    # A plain fit now trains as the documented monitor does: no clipping.
    model.fit(x, y, batch_size=16, shuffle=False, verbose=0)
    assert np.isinf(monitor.read().threshold[-4:]).all()


def test_a_keyboard_interrupt_is_cleaned_up_by_the_next_gradguard_fit():
    x, y = regression_data((8,), n=64)
    model = _model()

    class Stop(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, batch_size=16, verbose=0, callbacks=[AutoClip(), Stop()])
    model.fit(x, y, batch_size=16, verbose=0, callbacks=[GradientNormLogger()])
    assert np.isinf(find_monitor(model.optimizer).read().threshold[-4:]).all()


# -- 5. paths checked before training --------------------------------------


@pytest.mark.parametrize("make", [
    lambda folder: GradientNormLogger(log_dir=str(folder / "tb")),
    lambda folder: NaNGuard(report_path=str(folder / "report.json")),
])
def test_unwritable_paths_fail_before_the_first_step(tmp_path, make):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    callback = make(blocker)
    x, y = regression_data((8,), n=32)
    model = _model()
    weights = model.get_weights()
    with pytest.raises(ValueError, match=rf"received \w+='{blocker}/[\w.]+'(, which|, whose folder '{blocker}') cannot be written: .*Pass a path in a folder you can write to\."):
        model.fit(x, y, batch_size=16, verbose=0, callbacks=[callback])
    for a, b in zip(model.get_weights(), weights):
        np.testing.assert_array_equal(a, b)  # not one step was taken


# -- 6. one logger, one model ----------------------------------------------


def test_a_logger_refuses_a_second_model():
    x, y = regression_data((8,), n=32)
    logger = GradientNormLogger()
    first = _model()
    first.fit(x, y, batch_size=16, verbose=0, callbacks=[logger])
    second = _model(seed=1)
    with pytest.raises(ValueError, match=r"GradientNormLogger was used with model '.+' and is now passed to model '.+'.*create a new GradientNormLogger"):
        second.fit(x, y, batch_size=16, verbose=0, callbacks=[logger])
    assert len(logger.to_dataframe("global")) == 2  # the first model's record kept


def test_user_compiled_monitor_also_saves_the_inner_layout(tmp_path):
    x, y = regression_data((8,), n=32)
    keras.utils.set_random_seed(0)
    model = dense_model()
    model.compile(optimizer=GradientMonitor(keras.optimizers.Adam(1e-2)), loss="mse")
    model.fit(x, y, batch_size=16, verbose=0)
    model.save_weights(tmp_path / "w.weights.h5")
    plain = _model()
    plain.fit(x, y, batch_size=16, verbose=0)
    plain.save_weights(tmp_path / "p.weights.h5")
    assert _h5_layout(tmp_path / "w.weights.h5") == _h5_layout(tmp_path / "p.weights.h5")


def test_mixed_precision_checkpoints_keep_the_loss_scaler_layout(tmp_path):
    keras.config.set_dtype_policy("mixed_float16")  # conftest resets it
    x, y = regression_data((8,), n=64)
    for name, callbacks in [("plain", []), ("ours", [GradientNormLogger(), NaNGuard(verbose=False)])]:
        model = _model()
        model.fit(x, y, batch_size=16, verbose=0, callbacks=callbacks)
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        model.save(tmp_path / f"{name}.keras")
        model.save_weights(tmp_path / f"{name}.weights.h5")
    assert _h5_layout(tmp_path / "ours.weights.h5") == _h5_layout(tmp_path / "plain.weights.h5")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        loaded = keras.saving.load_model(tmp_path / "ours.keras")
    assert type(loaded.optimizer.inner_optimizer) is keras.optimizers.Adam
    assert int(loaded.optimizer.iterations.numpy()) == int(model.optimizer.iterations.numpy())


def test_a_logger_trains_as_plain_keras_and_a_guard_turns_the_skip_on():
    # The logger and AutoClip install a monitor that applies every update,
    # as plain Keras does (no `cond`: a 42-variable MLP's step at x1.02 of
    # plain Adam, not x1.3); NaNGuard turns the skip on for its fit and on.
    x, y = regression_data((8,), n=64)
    x[16:32] = np.nan  # the second batch
    logged, plain = _model(), _model()
    logged.fit(x, y, batch_size=16, shuffle=False, verbose=0,
               callbacks=[GradientNormLogger()])
    plain.fit(x, y, batch_size=16, shuffle=False, verbose=0)
    for a, b in zip(logged.get_weights(), plain.get_weights()):
        np.testing.assert_array_equal(a, b)  # NaN where plain Keras has NaN
    assert np.isnan(logged.get_weights()[0]).all()
    monitor = find_monitor(logged.optimizer)
    assert not monitor.skip_nonfinite
    assert np.isnan(monitor.read().norm[1])  # recorded all the same
    # A later fit with NaNGuard skips the NaN batch: the weights stay finite.
    model = _model()
    model.fit(x[:16], y[:16], batch_size=16, verbose=0, callbacks=[GradientNormLogger()])
    before = model.train_function
    guard = NaNGuard(verbose=False)
    model.fit(x, y, batch_size=16, shuffle=False, verbose=0,
              callbacks=[GradientNormLogger(), guard])
    assert find_monitor(model.optimizer).skip_nonfinite
    assert model.train_function is not before  # retraced with the skip
    assert all(np.isfinite(w).all() for w in model.get_weights())
    assert [e.trigger for e in guard.events] == ["nonfinite_gradient"]
