"""find_learning_rate on a real MLP and real batches, checked against independent computations."""

import importlib.util
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from gradguard.callbacks import find_learning_rate
from gradguard.callbacks.lr_finder import suggest


def data(n=512, d=8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype("float32")
    return x, (x @ rng.normal(size=(d, 1)) / np.sqrt(d)).astype("float32")


def mlp(optimizer):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(32, activation="relu"),
                              keras.layers.Dense(1)])
    model.compile(optimizer=optimizer, loss="mse")
    return model


def test_suggestion_lies_in_the_sweep_below_divergence_and_the_model_is_untouched():
    x, y = data()
    model = mlp(keras.optimizers.SGD(0.01, momentum=0.9))
    before = [w.copy() for w in model.get_weights()]
    found = find_learning_rate(model, x, y, num_steps=80, batch_size=32)
    rates = found.learning_rates
    # The sweep is exponential from start_lr, and SGD on an MLP diverges before lr 10.
    assert rates[0] == pytest.approx(1e-7)
    np.testing.assert_allclose(np.diff(np.log(rates)), np.log(1e8) / 79, rtol=1e-6)
    assert found.diverged_lr is not None and found.diverged_lr <= 10.0
    assert rates[0] <= found.suggestion <= found.min_loss_lr < found.diverged_lr
    assert found.smoothed[-1] > 4 * found.smoothed.min() or not np.isfinite(found.losses[-1])
    # The user's model: same weights, optimizer never stepped.
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert int(model.optimizer.iterations) == 0


def test_first_recorded_loss_is_the_models_own_loss_on_the_first_batch():
    """The sweep's step 0 loss is computed before its update: numpy gives the same number."""
    x, y = data()
    model = mlp(keras.optimizers.Adam())
    found = find_learning_rate(model, x, y, num_steps=10, batch_size=16, seed=3)
    first = np.random.default_rng(3).permutation(len(y))[:16]
    expected = np.mean((model.predict(x[first], verbose=0) - y[first]) ** 2)
    assert found.losses[0] == pytest.approx(expected, rel=1e-5)


def test_the_suggested_rate_trains_and_the_diverged_rate_does_not():
    x, y = data()
    model = mlp(keras.optimizers.SGD(0.01))
    found = find_learning_rate(model, x, y, num_steps=60)
    trivial = np.mean((y - y.mean()) ** 2)

    def mse_after_one_epoch(rate):
        trial = mlp(keras.optimizers.SGD(rate))
        trial.fit(x, y, epochs=1, batch_size=32, verbose=0, shuffle=False)
        return float(np.mean((trial.predict(x, verbose=0) - y) ** 2))

    assert mse_after_one_epoch(found.suggestion) < 0.5 * trivial
    diverged = mse_after_one_epoch(found.diverged_lr)
    assert not np.isfinite(diverged) or diverged > trivial


def test_suggest_by_hand():
    rates = np.logspace(-4, 0, 41)
    # Loss falls fastest around 1e-2 and is lowest at 1e-1.
    smoothed = 1.0 - 0.9 / (1 + np.exp(-(np.log10(rates) + 2) * 4)) + np.where(rates > 0.1, 5 * (rates - 0.1), 0)
    assert suggest(rates, smoothed, "steepest") == pytest.approx(1e-2, rel=0.3)
    assert suggest(rates, smoothed, "min/10") == pytest.approx(rates[np.argmin(smoothed)] / 10)
    # A loss that only rises: the first rate.
    assert suggest(rates, np.linspace(1, 2, 41), "steepest") == rates[0]


@pytest.mark.parametrize("kwargs, message", [
    ({"start_lr": 0}, "find_learning_rate received start_lr=0; expected a float > 0."),
    ({"end_lr": 1e-8}, "find_learning_rate received end_lr=1e-08; expected a float > start_lr=1e-07."),
    ({"num_steps": 2}, "find_learning_rate received num_steps=2; expected an int >= 5."),
    ({"method": "valley"}, "find_learning_rate received method='valley'; expected one of"),
])
def test_bad_arguments_are_named(kwargs, message):
    x, y = data(64)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        find_learning_rate(mlp(keras.optimizers.SGD(0.1)), x, y, **kwargs)


def test_a_schedule_or_an_uncompiled_model_is_refused():
    x, y = data(64)
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.9)
    with pytest.raises(ValueError, match="learning rate schedule"):
        find_learning_rate(mlp(keras.optimizers.SGD(schedule)), x, y)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(1)])
    with pytest.raises(ValueError, match="uncompiled model"):
        find_learning_rate(model, x, y)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_under_jax_the_sweep_suggests_a_rate_below_divergence_and_leaves_the_model():
    script = textwrap.dedent("""
        import numpy as np, keras
        from gradguard.callbacks import find_learning_rate
        assert keras.backend.backend() == "jax"
        rng = np.random.default_rng(0)
        x = rng.normal(size=(512, 8)).astype("float32")
        y = (x @ rng.normal(size=(8, 1)) / np.sqrt(8)).astype("float32")
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(32, activation="relu"),
                                  keras.layers.Dense(1)])
        model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss="mse")
        before = [w.copy() for w in model.get_weights()]
        found = find_learning_rate(model, x, y, num_steps=80)
        assert found.diverged_lr is not None
        assert found.learning_rates[0] <= found.suggestion <= found.min_loss_lr < found.diverged_lr
        assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
        print("OK", found.suggestion, found.diverged_lr)
    """)
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-2000:]
