"""NaNGuard names the cause: each broken set-up built for real, and healthy runs."""

import keras
import numpy as np
import pytest

from gradguard.callbacks import NaNGuard
from gradguard.callbacks.attach import find_monitor, rebuild_train_function
from tests.callbacks.helpers import WeightsPerStep, adding_data


def _data(n=512, d=8, scales=None, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype("float32")
    w = rng.normal(size=(d, 1)).astype("float32")
    y = (np.tanh(x @ w / np.sqrt(d)) + 0.1 * rng.normal(size=(n, 1))).astype("float32")
    if scales is not None:
        x = (x * scales).astype("float32")
    return x, y


def _dense(d, depth=3, act="tanh", init="glorot_uniform"):
    layers = [keras.Input((d,))] + [
        keras.layers.Dense(16, activation=act, kernel_initializer=init, name=f"d{i}")
        for i in range(depth)
    ]
    return keras.Sequential(layers + [keras.layers.Dense(1, name="head")])


def _setup(name):
    """(x, y, model, optimizer, batch size) of a broken set-up."""
    keras.utils.set_random_seed(0)
    if name == "learning_rate":  # a well-scaled net, SGD far too fast
        return (*_data(), _dense(8), keras.optimizers.SGD(1.0), 32)
    if name == "input_scale":  # features spanning 1e-3..1e4
        x, y = _data(scales=np.logspace(-3, 4, 8))
        return x, y, _dense(8, act="relu"), keras.optimizers.SGD(1e-3), 32
    if name == "depth":  # 8 linear layers at init gain 3
        init = keras.initializers.RandomNormal(stddev=3.0 / 4.0)
        return (*_data(d=16), _dense(16, depth=8, act="linear", init=init),
                keras.optimizers.SGD(1e-3), 32)
    if name == "recurrence":  # tanh RNN, 100 steps, recurrent gain 1.2
        x, y = adding_data(512, 100)
        model = keras.Sequential([
            keras.Input((100, 2)),
            keras.layers.SimpleRNN(32, name="rnn", recurrent_initializer=(
                keras.initializers.Orthogonal(gain=1.2))),
            keras.layers.Dense(1, name="head"),
        ])
        return x, y, model, keras.optimizers.SGD(0.1), 32
    if name == "bad_data":  # one NaN in one training row
        x, y = _data()
        x[300, 3] = np.nan
        return x, y, _dense(8), keras.optimizers.Adam(1e-2), 64
    raise ValueError(name)


def _fit(name, guard, epochs=2):
    x, y, model, optimizer, batch_size = _setup(name)
    model.compile(optimizer=optimizer, loss="mse")
    keep = WeightsPerStep()
    model.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=False,
              verbose=0, callbacks=[keep, guard])
    return model, keep


@pytest.mark.parametrize("name, trigger", [
    # SGD(1.0): the norm is 725x the first step's at step 5, before the spike
    # gate has its min_history of 5 norms: the absolute early rule catches it.
    ("learning_rate", "early_blowup"),
    ("input_scale", "nonfinite_gradient"),
    ("depth", "nonfinite_gradient"),
    # tanh RNN at gain 1.2: its norm passes 100x the first step's within the warm-up.
    pytest.param("recurrence", "early_blowup", marks=pytest.mark.slow),
    ("bad_data", "nonfinite_gradient"),
])
def test_stop_names_the_cause_and_keeps_the_pre_onset_weights(name, trigger):
    # skip_bad_data=False: a bad batch stops too (by default it is skipped).
    guard = NaNGuard(verbose=False, skip_bad_data=False)
    model, keep = _fit(name, guard)
    warnings = [e for e in guard.events if e["action"] == "warn"]
    if name == "input_scale":  # one feature x1e4: warned at step 1 from the batch
        assert [(e["trigger"], e["cause"], e["step"]) for e in warnings] == [
            ("off_scale_inputs", "input_scale", 1)]
    else:
        assert not warnings
    event = next(e for e in guard.events if e["action"] != "warn")
    assert (event["trigger"], event["cause"]) == (trigger, name)
    assert event["cure"] and event["evidence"]
    assert f"Cause: {name}" in event["message"]
    # The model holds exactly the weights after the step the report names,
    # from before the onset (and never the bad step's).
    held = event["weights"]["step"]
    assert held < event["onset_step"] <= event["step"]
    if name == "bad_data":  # the step was skipped: nothing to undo
        assert held == event["step"] - 1 and not event["weights"]["restored"]
    assert f"holds the weights after step {held} " in event["message"]
    for a, b in zip(model.get_weights(), keep.weights[held]):
        np.testing.assert_array_equal(a, b)
    # Suspects are only variables that crossed 10x their running median.
    assert all(s["first_step"] is not None and s["ratio"] > 10 for s in event["suspects"])


def test_the_cures_carry_numbers():
    # min_history=2: the spike gate judges from step 3, with norms to suggest a clip from.
    guard = NaNGuard(verbose=False, min_history=2)
    _fit("learning_rate", guard)
    assert "lower the learning rate to ~0.1 (a tenth of 1)" in guard.events[0]["cure"]
    assert "clip the global norm at ~" in guard.events[0]["cure"]


def test_bad_data_is_skipped_not_rolled_back():
    x, y, model, optimizer, batch_size = _setup("bad_data")
    model.compile(optimizer=optimizer, loss="mse")
    guard = NaNGuard(action="rollback", verbose=False)
    history = model.fit(x, y, batch_size=batch_size, epochs=3, shuffle=False,
                        verbose=0, callbacks=[guard])
    # Batch 4 (rows 256..319) fails in every epoch; the second time it is
    # named bad data for the repetition alone.
    assert [(e["epoch"], e["batch"], e["action"]) for e in guard.events] == [
        (0, 4, "skip"), (1, 4, "skip"), (2, 4, "skip")]
    assert "batch 4 failed in epoch 0 too (now epoch 1" in guard.events[1]["evidence"]
    assert guard.retries == 0 and find_monitor(model.optimizer).lr_multiplier == 1.0
    assert all(np.isfinite(history.history["loss"]))
    # As good as training on the clean rows alone would get (same steps).
    clean = np.isfinite(x).all(axis=1)
    assert model.evaluate(x[clean], y[clean], verbose=0) < 0.05


def test_rollback_recovers_from_a_learning_rate_too_high():
    x, y, model, optimizer, batch_size = _setup("learning_rate")
    model.compile(optimizer=optimizer, loss="mse")
    guard = NaNGuard(action="rollback", verbose=False)
    model.fit(x, y, batch_size=batch_size, epochs=3, shuffle=False, verbose=0,
              callbacks=[guard])
    assert guard.events[0]["action"] == "rollback"
    assert model.evaluate(x, y, verbose=0) < 0.1


@pytest.mark.parametrize("scheduler", ["callback", "plateau", "schedule"])
def test_rollback_cut_and_learning_rate_schedules(scheduler):
    x, y, model, _, batch_size = _setup("learning_rate")
    callbacks = []
    if scheduler == "schedule":
        lr = keras.optimizers.schedules.ExponentialDecay(1.0, 100, 0.99)
    else:
        lr = 1.0
        callbacks = [keras.callbacks.LearningRateScheduler(lambda epoch: 1.0)
                     if scheduler == "callback" else
                     keras.callbacks.ReduceLROnPlateau("loss", factor=0.9, patience=0)]
    model.compile(optimizer=keras.optimizers.SGD(lr), loss="mse")
    guard = NaNGuard(action="rollback", lr_factor=0.5, max_retries=1, verbose=False)
    history = model.fit(x, y, batch_size=batch_size, epochs=3, shuffle=False, verbose=0,
                        callbacks=callbacks + [guard])
    monitor = find_monitor(model.optimizer)
    first = guard.events[0]
    cuts = len([e for e in guard.events if e["action"] == "rollback"])
    assert first["action"] == "rollback"
    assert first["new_learning_rate"] == pytest.approx(first["learning_rate"] * 0.5)
    rate = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    if scheduler == "schedule":
        # A schedule cannot be set: the cut multiplies the updates, the
        # event says so, and the schedule's later values cannot undo it.
        assert monitor.lr_multiplier == pytest.approx(0.5 ** cuts)
        assert "LearningRateSchedule" in first["detail"]
        step = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
        assert rate == pytest.approx(0.99 ** (step / 100), rel=1e-5)
        assert guard.learning_rate == pytest.approx(rate * 0.5 ** cuts, rel=1e-5)
    else:
        assert monitor.lr_multiplier == 1.0 and "LearningRateSchedule" not in first["detail"]
        assert guard.learning_rate == pytest.approx(rate)
        if scheduler == "plateau":  # goes on from the cut rate: at most 1.0 x the cuts
            assert rate <= 0.5 ** cuts + 1e-7
        else:  # a fixed rate per epoch replaces the cut at the next epoch, as any rate set by hand
            last_cut = max(e["epoch"] for e in guard.events if e["action"] == "rollback")
            assert rate == (1.0 if history.epoch[-1] > last_cut else 0.5 ** cuts)


def test_the_lr_multiplier_is_the_learning_rate_in_use():
    # Adam's step does not scale with the gradient, so only a true learning
    # rate change halves it: compare against Adam(lr / 2).
    x, y = _data(n=64)
    runs = []
    for lr, multiplier in [(1e-2, 0.5), (5e-3, 1.0)]:
        keras.utils.set_random_seed(0)
        model = _dense(8)
        model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
        model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0,
                  callbacks=[NaNGuard(action="rollback", verbose=False)])
        model.optimizer.learning_rate = lr
        if find_monitor(model.optimizer).set_lr_multiplier(multiplier):
            # (the multiplier that a schedule's cut uses, compiled into the step now)
            rebuild_train_function(model)
        before = model.get_weights()
        model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
        runs.append([a - b for a, b in zip(model.get_weights(), before)])
    for a, b in zip(*runs):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-7)


@pytest.mark.parametrize("mode", ["skip", "clip"])
def test_the_spike_gate_decides_before_the_update(mode):
    # min_history=2: the gate judges from step 3, before the early rule's
    # absolute evidence (steps 1-2 only) could.
    guard = NaNGuard(spike_action=mode, restore_weights=False, verbose=False,
                     min_history=2)
    model, keep = _fit("learning_rate", guard)
    event = guard.events[0]
    monitor = find_monitor(model.optimizer)
    record = monitor.read()
    row = record.steps == event["step"]
    assert record.status[row][0] == (2 if mode == "skip" else 3)
    if mode == "clip":  # applied with its norm clipped to the running median
        assert record.norm_clipped[row][0] < record.norm[row][0] / 50
        assert "applied clipped to the median" in event["detail"]
    else:
        assert "the update was skipped" in event["detail"]


def _healthy(name):
    keras.utils.set_random_seed(0)
    if name == "lstm_rmsprop":
        rng = np.random.default_rng(0)
        x = rng.normal(size=(256, 20, 3)).astype("float32")
        y = x[:, -5:, 0].mean(axis=1, keepdims=True)
        model = keras.Sequential([keras.Input((20, 3)), keras.layers.LSTM(16),
                                  keras.layers.Dense(1)])
        return x, y, model, keras.optimizers.RMSprop(1e-3)
    if name == "conv_adam":
        rng = np.random.default_rng(0)
        x = rng.normal(size=(256, 12, 12, 1)).astype("float32")
        y = x.mean(axis=(1, 2))
        model = keras.Sequential([
            keras.Input((12, 12, 1)), keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(1)])
        return x, y, model, keras.optimizers.Adam(1e-3)
    x, y = _data(n=512, d=16)
    if name == "deep_relu_sgd_clipped":
        return (x, y, _dense(16, depth=6, act="relu", init="he_normal"),
                keras.optimizers.SGD(0.01, momentum=0.9, global_clipnorm=1.0))
    return x, y, _dense(16), keras.optimizers.AdamW(3e-3)


@pytest.mark.parametrize("name", [
    "mlp_adamw", "deep_relu_sgd_clipped", "lstm_rmsprop", "conv_adam",
])
def test_healthy_runs_raise_no_event(name):
    x, y, model, optimizer = _healthy(name)
    model.compile(optimizer=optimizer, loss="mse")
    guard = NaNGuard(verbose=False)
    history = model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[guard])
    assert guard.events == []
    assert history.history["loss"][-1] < history.history["loss"][0]
