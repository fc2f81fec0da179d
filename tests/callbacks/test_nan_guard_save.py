"""What NaNGuard changed survives a save, and what it prints stands on its own lines."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from gradguard.callbacks import NaNGuard


def _diverging_fit(guard):
    """A well-scaled tanh MLP under SGD at lr 1.0: its norm spikes within a few steps."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 8)).astype("float32")
    w = rng.normal(size=(8, 1)).astype("float32")
    y = (np.tanh(x @ w / np.sqrt(8)) + 0.1 * rng.normal(size=(512, 1))).astype("float32")
    model = keras.Sequential([keras.Input((8,))]
                             + [keras.layers.Dense(16, activation="tanh") for _ in range(3)]
                             + [keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse")
    model.fit(x, y, batch_size=32, epochs=3, shuffle=False, verbose=0, callbacks=[guard])
    return model


def test_saved_model_loads_with_the_rate_in_use_after_rollbacks(tmp_path, capsys):
    guard = NaNGuard(action="rollback", lr_factor=0.5, max_retries=1)
    model = _diverging_fit(guard)
    actions = [e["action"] for e in guard.events]
    assert actions[:1] == ["rollback"] and actions[-1] == "stop"  # the second event found no retry left
    in_use = guard.events[0]["new_learning_rate"]
    assert in_use == pytest.approx(0.5)
    path = tmp_path / "after_rollback.keras"
    model.save(path)
    # A fresh process, with nothing of this one's monitor: only the file.
    script = ("import json, keras, gradguard.callbacks; "
              f"o = keras.saving.load_model({str(path)!r}).optimizer; "
              "print(json.dumps([type(o).__name__, float(keras.ops.convert_to_numpy(o.learning_rate)), "
              "o.get_config()['learning_rate']]))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         timeout=120, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    name, rate, config_rate = json.loads(out.stdout.strip().splitlines()[-1])
    assert name == "SGD" and rate == pytest.approx(in_use) and config_rate == pytest.approx(in_use)
    # The optimizer holds the rate in use, as the file does (issue 29).
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(in_use)

    printed = capsys.readouterr().out
    first = guard.events[0]
    # Each message starts on a line of its own, headline first, then indented lines.
    caught = first["trigger"].replace("_", " ")  # early blowup: SGD(1.0) is caught at step 5
    assert f"\nStep {first['step']}: NaNGuard caught {caught}: cause {first['cause']}, " \
           "action rollback, learning rate 1 -> 0.5.\n  What: " in printed
    for label in ("  Cause: ", "  Cure: ", "  Weights: the model holds the weights after step"):
        assert label in first["message"]
    assert first["message"].splitlines()[0] == printed.split("\n")[1]
    # One closing line says the retries ran out (wrapped at 120 columns).
    closing = printed[printed.rindex("NaNGuard: training stopped"):].strip().splitlines()
    assert max(len(line) for line in closing) <= 120
    last = " ".join(line.strip() for line in closing)
    assert last.startswith(f"NaNGuard: training stopped at step {guard.events[-1]['step']} after 1 rollback ")
    assert "retries are exhausted" in last and "learning rate 1 -> 0.5" in last
