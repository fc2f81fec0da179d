"""Outputs that stopped depending on the inputs (`collapse.py`) and NaNGuard's `collapsed` event.

The measurement is checked against numpy; the probe's weight swap against
the model's own values, bit for bit; the guard on real fits: a net whose
hidden layer is saturated mid-fit (its outputs one constant from then on)
gets `collapsed` after the break and the weights of a snapshot from before
it, one saturated from its first step (no loss rise) gets it at the end of
its first epoch, and a healthy net whose loss rises (noisier targets from
the middle of the fit) is probed and gets no event. The held-out siamese net at 100x its
rate, the case the rule was made for, is a slow test.
"""

import keras
import numpy as np
import pytest

from gradguard.callbacks import NaNGuard
from gradguard.callbacks.collapse import (
    CONSTANT, RISE, VARIED, above_best, find_collapse, output_spread, spread_at, targets_vary,
    values_put_back,
)


def test_output_spread_against_numpy():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(16, 3)).astype("float32")
    b = rng.normal(size=(16, 2, 2)).astype("float32") * 5
    flat = [a.reshape(16, -1).astype(np.float64), b.reshape(16, -1).astype(np.float64)]
    rms = np.sqrt(np.mean(np.concatenate([f.ravel() for f in flat]) ** 2))
    expected = max(f.std(axis=0).max() for f in flat) / rms
    np.testing.assert_allclose(output_spread([a, {"b": b}]), expected, rtol=1e-12)
    # One output for every sample: 0 (float32 rounding of it: ~1e-7 of its scale).
    assert output_spread(np.full((16, 1), 0.4999, "float32")) == 0.0
    assert output_spread(np.zeros((8, 4))) == 0.0
    nudged = np.full((16, 1), 0.4999, "float32")
    nudged[3] = np.nextafter(np.float32(0.4999), np.float32(1))
    assert 0 < output_spread(nudged) < CONSTANT
    # Nothing to judge: a non-finite output or a single sample.
    assert np.isnan(output_spread(np.array([[1.0], [np.nan]])))
    assert np.isnan(output_spread(np.ones((1, 3))))


def test_targets_vary_above_best_and_find_collapse():
    assert targets_vary(np.array([0, 1, 0])) and not targets_vary(np.ones((4, 2)))
    assert targets_vary(None)  # an autoencoder's targets are its inputs
    assert targets_vary({"a": np.ones(4), "b": np.arange(4)})
    assert above_best(RISE * 0.2 * 1.01, 0.2) and not above_best(RISE * 0.2, 0.2)
    assert not above_best(1.0, None) and not above_best(float("nan"), 0.2)
    assert not above_best(1.0, 0.0)
    detail = find_collapse(0.0, 0.04, 0, 0.25, 0.1, 127)
    assert "stopped depending on the inputs" in detail and "step 0" in detail
    assert "0.04" in detail and "(step 127)" in detail
    assert find_collapse(CONSTANT * 2, 0.3, 0, 0.25, 0.1, 5) is None  # not constant now
    assert find_collapse(0.0, VARIED / 2, 0, 0.25, 0.1, 5) is None  # never varied
    assert find_collapse(float("nan"), 0.3, 0, 0.25, 0.1, 5) is None


def _classifier(seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((6,)),
        keras.layers.Dense(16, activation="tanh"),
        keras.layers.BatchNormalization(),
        keras.layers.Dense(1, activation="sigmoid"),
    ])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="binary_crossentropy")
    return model


def _separable(n=1280, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype("float32")
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype("float32")[:, None]
    return x, y


def test_a_snapshots_spread_leaves_the_models_own_weights_bit_for_bit():
    x, y = _separable(256)
    model = _classifier()
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)  # moving statistics moved
    own = [np.array(w) for w in model.get_weights()]
    other = [w * 0 for w in own]  # a snapshot whose outputs are all one value
    with values_put_back(model.weights):
        assert spread_at(model, other, x[:64]) == 0.0
    for before, after in zip(own, model.get_weights()):
        np.testing.assert_array_equal(before, after)
    expected = output_spread(model(x[:64], training=False))
    with values_put_back(model.weights):
        assert spread_at(model, own, x[:64]) == expected > VARIED


class _Saturate(keras.callbacks.Callback):
    """Saturates the hidden tanh layer at `at_step`: every sample then gets one output."""

    def __init__(self, at_step):
        super().__init__()
        self.at_step, self.step = at_step, 0

    def on_train_batch_begin(self, batch, logs=None):
        self.step += 1
        if self.step == self.at_step:
            dense = self.model.layers[0]
            kernel, bias = dense.get_weights()
            dense.set_weights([kernel * 0, bias * 0 + 50.0])  # tanh(50) = 1, gradient 0


def test_a_net_whose_outputs_go_constant_mid_fit_gets_collapsed():
    x, y = _separable()
    model = _classifier()
    guard = NaNGuard(verbose=False, snapshot_every=10)
    model.fit(x, y, batch_size=32, epochs=6, verbose=0, shuffle=False,
              callbacks=[_Saturate(at_step=81), guard])
    events = [e for e in guard.events if e.trigger == "collapsed"]
    assert len(events) == 1, [e.trigger for e in guard.events]
    event = events[0]
    assert event.step > 80 and event.onset_step <= 81
    assert "stopped depending on the inputs" in event.detail
    # Independently: the saturated net's outputs are one value; the restored
    # weights (a snapshot from before the break) give outputs that vary.
    assert event.weights["restored"] and event.restored_step < 81
    assert output_spread(model(x[:256], training=False)) > VARIED
    assert np.abs(model.layers[0].get_weights()[0]).max() > 0
    assert guard.replays_run >= 1 and event.replay_seconds >= 0


def test_a_net_that_never_learns_is_caught_at_the_end_of_its_first_epoch():
    # Saturated at its first step: the loss never rises above a best, so
    # only the end-of-epoch probe sees the outputs (the fourth held-out
    # round's video GRUs at lr x100 sat at ln 5 from the first step).
    x, y = _separable()
    model = _classifier()
    guard = NaNGuard(verbose=False)
    model.fit(x, y, batch_size=32, epochs=3, verbose=0, shuffle=False,
              callbacks=[_Saturate(at_step=1), guard])
    assert [e.trigger for e in guard.events] == ["collapsed"]
    event = guard.events[0]
    assert (event.step, event.epoch, event.batch) == (40, 0, 39)  # 1280 / 32 steps
    assert "from the weights of step 0" in event.detail and event.onset_step == 1
    assert event.action == "stop" and event.restored_step == 0
    assert output_spread(model(x[:256], training=False)) > VARIED  # the start weights again


class NoLossSequential(keras.Sequential):
    """A `train_step` that returns its metrics without the loss (keras-io's trainer pattern)."""

    def train_step(self, data):
        logs = super().train_step(data)
        return {k: v for k, v in logs.items() if k != "loss"}


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="train_step's return differs by backend")
def test_a_fit_whose_logs_hold_no_loss_is_probed_at_its_epoch_ends():
    # Held-out round 8: the trainer pattern at 100x its rate sat at chance
    # with every loss rule blind; the end-of-epoch probe asks for no loss.
    x, y = _separable()
    keras.utils.set_random_seed(0)
    model = NoLossSequential([keras.Input((6,)), keras.layers.Dense(16, activation="tanh"),
                     keras.layers.BatchNormalization(),
                     keras.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="binary_crossentropy",
                  metrics=["accuracy"])
    guard = NaNGuard(verbose=False)
    with pytest.warns(UserWarning, match="no 'loss' in the batch logs") as caught:
        history = model.fit(x, y, batch_size=32, epochs=3, verbose=0, shuffle=False,
                            callbacks=[_Saturate(at_step=1), guard])
    assert sum("no 'loss'" in str(w.message) for w in caught) == 1  # once a fit
    assert "loss" not in history.history and "accuracy" in history.history
    assert [e.trigger for e in guard.events] == ["collapsed"]
    assert (guard.events[0].step, guard.events[0].batch) == (40, 39)


def test_a_healthy_net_whose_loss_rises_is_probed_and_gets_no_event():
    # Clean targets for the first 40 batches, then noisy ones: the batch
    # loss stays far above the best running loss, the outputs still vary.
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3200, 6)).astype("float32")
    y = (x[:, :2].sum(axis=1, keepdims=True) * 0.5).astype("float32")
    y[1280:] += rng.normal(size=(1920, 1)).astype("float32") * 2.0
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    guard = NaNGuard(verbose=False)
    history = model.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False,
                        callbacks=[guard])
    assert guard.events == []
    assert guard._probed_at is not None  # the rule looked, and found outputs that vary
    assert len(history.history["loss"]) == 1


class _Noisy(keras.layers.Layer):
    """Adds noise from its own seed generator at every call, in inference too (a VAE samples so)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seeds = keras.random.SeedGenerator(3)

    def call(self, x):
        return x + 0.1 * keras.random.normal(keras.ops.shape(x), seed=self.seeds)


def test_the_probes_leave_a_sampling_nets_training_as_plain_keras_does():
    # The end-of-epoch probe is a forward pass: it must not move the seed
    # generator that training draws from (keras-io's VAE moved 392.40 -> 391.69).
    x, y = _separable(640)

    def fit(callbacks):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(16, activation="tanh"),
                                  _Noisy(), keras.layers.Dense(1, activation="sigmoid")])
        model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="binary_crossentropy")
        model.fit(x, y, batch_size=32, epochs=3, verbose=0, shuffle=False, callbacks=callbacks)
        return model

    guard = NaNGuard(verbose=False)
    guarded, plain = fit([guard]), fit([])
    assert guard.events == [] and guard._probed_at is not None  # it probed, found nothing
    for a, b in zip(guarded.variables, plain.variables):  # seed state included
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


@pytest.mark.slow
def test_the_held_out_siamese_net_at_100x_its_rate_gets_collapsed():
    from benchmarks.diagnosis_scripts import run_one

    row = run_one("siamese_contrastive", "lr_x100", 0)
    assert row["error"] == ""
    assert row["trigger"] == "collapsed" and row["cause"] == "learning_rate"
