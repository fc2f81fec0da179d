"""A legacy .h5 file saved while a callback's monitor is attached loads where gradguard is not installed.

The file holds the optimizer the user compiled, in plain Keras' layout: its class, config and
state (which Keras' own loader then drops for every Sequential, plain Keras files included;
the test restores it by hand, as a user would).
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from gradguard.callbacks import GradientMonitor, GradientNormLogger, NaNGuard
from gradguard.callbacks.attach import find_monitor

# A fresh process in which `import gradguard...` fails, as on a machine without it: only the file.
LOAD = """
import json, sys
class _NoGradguard:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "gradguard":
            raise ImportError("gradguard is not installed here")
sys.meta_path.insert(0, _NoGradguard())
import h5py, keras, numpy as np
from keras.src.legacy.saving.legacy_h5_format import load_optimizer_weights_from_hdf5_group
model = keras.saving.load_model({path!r})
o = model.optimizer
# Keras' legacy loader builds the optimizer on a Sequential's own (empty) variable list and then
# drops the file's optimizer state with a warning, plain Keras files included: a user restores it
# by hand into a fresh optimizer of the file's class, built on the model's variables (which
# fails unless the file holds exactly that optimizer's variables).
with h5py.File({path!r}) as f:
    state = [v[()] for v in load_optimizer_weights_from_hdf5_group(f)]
fresh = keras.optimizers.deserialize(keras.optimizers.serialize(o))
fresh.build(model.trainable_variables)
fresh.set_weights(state)
print(json.dumps({{"optimizer": type(o).__name__,
                  "inner": type(getattr(o, "inner_optimizer", o)).__name__,
                  "variables": [np.asarray(v).tolist() for v in state],
                  "weights": [w.tolist() for w in model.get_weights()],
                  "gradguard": any(m.startswith("gradguard") for m in sys.modules)}}))
"""


def _load_elsewhere(path):
    out = subprocess.run([sys.executable, "-c", LOAD.format(path=str(path))], capture_output=True,
                         text=True, timeout=180, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 6)).astype("float32")
    y = (x @ rng.normal(size=(6, 1))).astype("float32")
    return x, y


def _model(optimizer):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(16, activation="tanh"),
                              keras.layers.Dense(1)])
    model.compile(optimizer=optimizer, loss=keras.losses.MeanSquaredError())
    return model


def _assert_same(loaded, optimizer_variables, model):
    assert len(loaded["variables"]) == len(optimizer_variables)
    for got, want in zip(loaded["variables"], optimizer_variables):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6, atol=1e-7)
    for got, want in zip(loaded["weights"], model.get_weights()):
        np.testing.assert_array_equal(np.asarray(got, dtype=want.dtype), want)


def test_h5_with_a_callbacks_monitor_loads_without_gradguard_optimizer_state_included(tmp_path):
    x, y = _data()
    model = _model(keras.optimizers.Adam(1e-2))
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[GradientNormLogger(), NaNGuard()])
    monitor = find_monitor(model.optimizer)
    assert monitor is not None
    # What plain Keras' Adam holds after these steps, read from the inner optimizer itself.
    state = [keras.ops.convert_to_numpy(v) for v in monitor.inner_optimizer.variables]
    assert int(state[0]) == 16  # iterations: 2 epochs x 8 batches
    model.save(tmp_path / "m.h5")

    loaded = _load_elsewhere(tmp_path / "m.h5")
    assert loaded["optimizer"] == "Adam" and loaded["gradguard"] is False
    _assert_same(loaded, state, model)
    # The model keeps its monitor and trains on: the save changed nothing here.
    assert find_monitor(model.optimizer) is monitor
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[GradientNormLogger()])
    assert int(keras.ops.convert_to_numpy(monitor.iterations)) == 24


def test_h5_under_mixed_precision_keeps_the_loss_scaler_and_drops_the_monitor(tmp_path):
    x, y = _data()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = _model(keras.optimizers.SGD(1e-2))
        model.fit(x, y, batch_size=64, epochs=1, verbose=0, callbacks=[GradientNormLogger()])
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    monitor = find_monitor(model.optimizer)
    state = [keras.ops.convert_to_numpy(v) for v in model.optimizer.variables]
    model.save(tmp_path / "mixed.h5")
    loaded = _load_elsewhere(tmp_path / "mixed.h5")
    assert (loaded["optimizer"], loaded["inner"]) == ("LossScaleOptimizer", "SGD")
    _assert_same(loaded, state, model)
    assert model.optimizer.inner_optimizer is monitor


def test_h5_after_a_rollback_holds_the_rate_in_use(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 8)).astype("float32")
    y = np.tanh(x @ rng.normal(size=(8, 1)) / np.sqrt(8)).astype("float32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,))] + [keras.layers.Dense(16, activation="tanh") for _ in range(3)]
                             + [keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(1.0), loss=keras.losses.MeanSquaredError())
    guard = NaNGuard(action="rollback", lr_factor=0.5, max_retries=1)
    model.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0, callbacks=[guard])
    assert guard.events and guard.events[0]["action"] == "rollback"
    in_use = guard.events[0]["new_learning_rate"]
    before = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    model.save(tmp_path / "cut.h5")
    loaded = _load_elsewhere(tmp_path / "cut.h5")
    rate = [v for v in loaded["variables"] if not isinstance(v, list)]
    assert loaded["optimizer"] == "SGD"
    assert pytest.approx(in_use) in rate  # SGD's variables: iterations and the learning rate
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == before  # untouched here


def test_h5_of_a_model_compiled_with_the_monitor_keeps_it(tmp_path):
    x, y = _data()
    model = _model(GradientMonitor(keras.optimizers.Adam(1e-3)))
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    model.save(tmp_path / "chosen.h5")
    loaded = keras.saving.load_model(tmp_path / "chosen.h5")  # gradguard is imported here
    assert isinstance(loaded.optimizer, GradientMonitor)
