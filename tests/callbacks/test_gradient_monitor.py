"""GradientMonitor: skipping non-finite steps, saving, mixed precision."""

import warnings

import keras
import numpy as np
import pytest

from gradguard.callbacks import (
    AutoClip, GradientMonitor, GradientNormLogger, NaNGuard, remove_monitor,
)
from gradguard.callbacks.gradient_record import APPLIED
from gradguard.callbacks.optimizer_chain import innermost_optimizer
from tests.callbacks.helpers import LastRecord, dense_model, global_norm, regression_data, tape_steps


def _compiled(optimizer, **compile_kwargs):
    model = dense_model()
    model.compile(optimizer=optimizer, loss="mse", **compile_kwargs)
    return model


@pytest.mark.parametrize("make", [
    lambda: keras.optimizers.Adam(1e-2),
    lambda: keras.optimizers.SGD(1e-2, momentum=0.9, nesterov=True),
], ids=["adam", "nesterov"])
def test_nonfinite_gradient_skips_the_update_and_keeps_optimizer_state(make):
    x, y = regression_data((8,), n=48)
    x[16:32] = np.nan  # the second batch
    model = _compiled(GradientMonitor(make()))
    updates = []

    class Keep(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            updates.append((
                self.model.get_weights(),
                [np.array(v) for v in self.model.optimizer.inner_optimizer.variables],
            ))

    model.fit(x, y, batch_size=16, shuffle=False, verbose=0, callbacks=[Keep()])
    record = model.optimizer.read()
    assert record.first_nonfinite.tolist() == [-1, 0, -1]
    assert np.isnan(record.norm[1])
    (w1, s1), (w2, s2), (w3, _) = updates
    for a, b in zip(w1, w2):
        np.testing.assert_array_equal(a, b)  # step 2 changed nothing
    inner = model.optimizer.inner_optimizer
    for a, b, v in zip(s1, s2, inner.variables):
        if v is inner.iterations:  # a skipped step still counts as a step
            assert int(b) == int(a) + 1
        else:
            np.testing.assert_array_equal(a, b)  # nor Adam's moments
    assert record.steps.tolist() == [1, 2, 3]
    assert all(np.isfinite(w).all() for w in w3)
    assert record.weights_finite.all()


@pytest.mark.parametrize("spe", [1, 2])
def test_tally_counts_rows_alarms_and_step_as_the_record_shows(spe):
    # The tally is what NaNGuard reads every batch instead of the ring: it
    # must agree with the ring after every execution. Steps 1-2 healthy,
    # a NaN batch (skipped: an alarm), two healthy steps, then steps whose
    # update overflows the weights (applied, weights not finite: alarms).
    x, y = regression_data((8,), n=16 * 8)
    x[32:48] = np.nan
    monitor = GradientMonitor(keras.optimizers.SGD(1e-2), check_weights=True)
    model = _compiled(monitor, steps_per_execution=spe)
    seen = []

    class Compare(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch >= 4:  # from the next step on, updates go to inf
                monitor.inner_optimizer.learning_rate.assign(float("inf"))
            record = monitor.read()
            alarms = int(np.sum((record.status != APPLIED) | ~record.weights_finite))
            seen.append((tuple(monitor.tally()),
                         (record.count, alarms, int(record.steps[-1]))))

    model.fit(x, y, batch_size=16, shuffle=False, verbose=0, callbacks=[Compare()])
    assert len(seen) == 8 // spe
    for tally, expected in seen:
        assert tally == expected
    assert seen[-1][0][0] == 8 and seen[-1][0][2] == 8 == monitor.last_step
    assert seen[-1][0][1] >= 2  # the NaN batch and the overflow at least
    before_overflow = seen[4 // spe - 1][0]
    assert before_overflow[1] == 1  # only the NaN batch, up to step 4


@pytest.mark.parametrize("check_weights", [False, True], ids=["row-first", "row-after"])
@pytest.mark.parametrize("setup", ["plain", "accumulate", "loss-scaled"])
def test_each_row_carries_the_step_number_the_optimizer_counts(setup, check_weights):
    # Without check_weights the row is written before the update, with the
    # step number it predicts (the counter + 1); with it, after the update.
    # Either way each row's step must be what the optimizer's own counter
    # reads after that step: applied, skipped (a NaN batch), skipped by a
    # LossScaleOptimizer inside, and micro-batches under accumulation,
    # two steps per execution, fit called twice.
    x, y = regression_data((8,), n=16 * 6)
    x[32:48] = np.nan  # the third batch
    inner = keras.optimizers.SGD(
        1e-2, gradient_accumulation_steps=2 if setup == "accumulate" else None)
    if setup == "loss-scaled":
        inner = keras.optimizers.LossScaleOptimizer(inner)
    monitor = GradientMonitor(inner, check_weights=check_weights)
    model = _compiled(monitor, steps_per_execution=2)
    counted = []

    class Count(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            updater = innermost_optimizer(monitor)
            # Keras' own micro-batch counter under accumulation.
            counter = getattr(updater, "_iterations", updater.iterations)
            counted.append((int(np.asarray(counter)), int(monitor.read().steps[-1])))

    for _ in range(2):
        model.fit(x, y, batch_size=16, shuffle=False, verbose=0, callbacks=[Count()])
    record = monitor.read()
    assert [c for c, _ in counted] == [2, 4, 6, 8, 10, 12]
    assert all(c == s for c, s in counted)
    assert record.steps.tolist() == list(range(1, 13))
    assert np.isnan(record.norm[[2, 8]]).all()  # the NaN batch, in each fit


def test_saved_model_loads_back_and_trains_on(tmp_path):
    x, y = regression_data((8,), n=64)
    model = _compiled(GradientMonitor(keras.optimizers.Adam(1e-2), history=32))
    model.fit(x, y, batch_size=16, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.optimizer, GradientMonitor)
    assert loaded.optimizer.history == 32
    assert isinstance(loaded.optimizer.inner_optimizer, keras.optimizers.Adam)
    assert int(loaded.optimizer.iterations.numpy()) == 4
    for a, b in zip(loaded.optimizer.inner_optimizer.variables,
                    model.optimizer.inner_optimizer.variables):
        np.testing.assert_array_equal(a, b)  # Adam's moments came back
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    loaded.fit(x, y, batch_size=16, verbose=0, callbacks=[GradientNormLogger()])
    record = loaded.optimizer.read()  # the ring is telemetry, not saved
    assert record.count == 4 and record.steps.tolist() == [5, 6, 7, 8]
    assert int(loaded.optimizer.iterations.numpy()) == 8


def test_callbacks_keep_the_monitor_and_save_the_compiled_optimizer(tmp_path):
    x, y = regression_data((8,), n=64)
    model = _compiled(keras.optimizers.Adam(1e-2))
    adam = model.optimizer
    model.fit(x, y, batch_size=16, verbose=0, callbacks=[
        GradientNormLogger(), NaNGuard(verbose=False), AutoClip()
    ])
    monitor = model.optimizer
    assert isinstance(monitor, GradientMonitor) and monitor.inner_optimizer is adam
    assert int(adam.iterations.numpy()) == 4
    path = tmp_path / "model.keras"
    model.save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "Skipping variable loading"
        loaded = keras.saving.load_model(path)
    assert type(loaded.optimizer) is keras.optimizers.Adam
    for a, b in zip(loaded.optimizer.variables, adam.variables):
        np.testing.assert_array_equal(np.array(a), np.array(b))
    # A second fit reuses the monitor and its compiled step, and trains on.
    train_function = model.train_function
    history = model.fit(x, y, batch_size=16, verbose=0, callbacks=[GradientNormLogger()])
    assert model.optimizer is monitor and model.train_function is train_function
    assert np.isfinite(history.history["grad_norm"][0])
    assert int(adam.iterations.numpy()) == 8
    # remove_monitor puts the compiled optimizer back.
    assert remove_monitor(model) and model.optimizer is adam
    assert not remove_monitor(model)
    model.fit(x, y, batch_size=16, verbose=0)
    assert int(adam.iterations.numpy()) == 12


def test_config_round_trip_and_forwarding():
    inner = keras.optimizers.SGD(0.1, clipnorm=2.0)
    monitor = GradientMonitor(inner, history=16, name="watch")
    clone = GradientMonitor.from_config(monitor.get_config())
    assert clone.history == 16 and clone.name == "watch"
    assert clone.inner_optimizer.clipnorm == 2.0
    monitor.learning_rate = 0.25
    assert float(np.array(inner.learning_rate)) == pytest.approx(0.25)


@pytest.mark.parametrize("placement", ["around", "inside"])
def test_mixed_precision_reports_unscaled_norms(placement):
    keras.config.set_dtype_policy("mixed_float16")
    x, y = regression_data((8,), n=32)
    model = dense_model()
    # Under mixed_float16 Keras wraps the compiled optimizer in a
    # LossScaleOptimizer. "around": LossScaleOptimizer(GradientMonitor(SGD));
    # "inside": the logger wraps the compiled LossScaleOptimizer(SGD).
    sgd = keras.optimizers.SGD(0.01)
    model.compile(
        optimizer=GradientMonitor(sgd) if placement == "around" else sgd,
        loss="mse",
    )
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    weights = model.get_weights()
    logger, last = GradientNormLogger(), LastRecord()
    model.fit(x, y, batch_size=16, shuffle=False, verbose=0, callbacks=[last, logger])
    if placement == "inside":
        assert last.record.count == 2  # the logger's monitor saw both steps
    keras.config.set_dtype_policy("float32")
    expected = tape_steps(dense_model, weights, x, y, 16, 0.01, 2)
    np.testing.assert_allclose(
        logger.to_dataframe("global")["grad_norm"],
        [global_norm(g) for g in expected], rtol=2e-2,
    )


def test_rejects_bad_arguments():
    sgd = keras.optimizers.SGD()
    with pytest.raises(TypeError, match=r"GradientMonitor received optimizer='sgd'"):
        GradientMonitor("sgd")
    with pytest.raises(ValueError, match=r"history=1; expected an int >= 2\."):
        GradientMonitor(sgd, history=1)
    with pytest.raises(ValueError, match=r"already a GradientMonitor"):
        GradientMonitor(GradientMonitor(sgd))
    with pytest.raises(ValueError, match=r"autoclip_percentile=10 but the optimizer already clips"):
        GradientMonitor(keras.optimizers.SGD(clipnorm=1.0), autoclip_percentile=10)
