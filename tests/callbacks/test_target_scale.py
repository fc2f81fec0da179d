"""Targets far from unit scale: the sign, its floors, and NaNGuard's warning (issue 29)."""

import keras
import numpy as np
import pytest

from gradguard.callbacks import NaNGuard
from gradguard.callbacks import diagnosis as dg
from gradguard.callbacks.target_scale import (
    TARGET_LOSS, TARGET_SCALE, find_off_scale_targets, targets_rms,
)
from tests.callbacks.helpers import tanh_data


def test_targets_rms_is_the_largest_column_root_mean_square():
    rng = np.random.default_rng(0)
    y = (rng.normal(size=(64, 3)) * [1.0, 50.0, 3.0]).astype("float32")
    y[5, 1] = np.nan  # ignored, not propagated
    finite = np.where(np.isfinite(y), y, 0.0)
    counts = np.isfinite(y).sum(axis=0)
    want = float(np.sqrt((finite.astype(np.float64) ** 2).sum(axis=0) / counts).max())
    assert targets_rms((None, y, None)) == pytest.approx(want, rel=1e-6)
    assert targets_rms((None, np.arange(8), None)) is None  # integer labels: no sign
    assert targets_rms((np.ones((4, 2)), None, None)) is None  # no targets


@pytest.mark.parametrize("rms, loss, off", [
    (2e6, 4e12, True), (3e4, -1.5e6, True),  # MSE on x1e5 targets; BCE on labels x1e5 (negative)
    (23.0, 540.0, False),  # Boston's raw prices: under both floors
    (2e6, 0.5, False),  # the scale never reached the loss
    (None, 1e9, False), (2e6, float("nan"), False),
])
def test_off_scale_targets_need_both_floors(rms, loss, off):
    detail = find_off_scale_targets(rms, loss)
    assert (detail is not None) == off
    if off:
        assert f"{rms:.3g}" in detail and rms > TARGET_SCALE and abs(loss) > TARGET_LOSS


def test_name_cause_prefers_the_targets_over_the_learning_rate():
    signs = dict(growth=None, short=True, earlier_suspects=[], spikes=0, weight_growth=None,
                 gains=[1.0, 1.0], recurrent_gain=None, input_ratio=None)
    def cause(trigger, rms):
        return dg.name_cause(trigger, {**signs, "target_rms": rms}, suspects=[],
                             repeated=False, clip=None, learning_rate=0.1, epoch=0, batch=3)[0]
    assert cause("early_blowup", 2e6) == "target_scale"
    assert cause("off_scale_targets", 2e6) == "target_scale"
    assert cause("early_blowup", 23.0) == "learning_rate"
    assert cause("early_blowup", None) == "learning_rate"
    assert cause("nonfinite_gradient", 2e6) == "bad_data"  # nothing diverging: a bad batch


def _fit(y_scale):
    keras.utils.set_random_seed(0)
    x, y = tanh_data(n=128)
    y = (y * y_scale).astype("float32")
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="tanh"),
                              keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    guard = NaNGuard(verbose=False)
    history = model.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0,
                        callbacks=[guard])
    return guard, history, y


def test_targets_times_1e5_are_a_target_scale_warning_and_training_goes_on():
    guard, history, y = _fit(1e5)
    event = guard.events[0]
    assert (event.trigger, event.cause, event.action, event.step) == (
        "off_scale_targets", "target_scale", "warn", 1)
    # The figure in the event is the first batch's, computed here independently.
    rms = float(np.sqrt(np.mean(y[:32].astype(np.float64) ** 2)))
    assert f"{rms:.3g}" in event.detail
    assert len(history.history["loss"]) == 2  # a warning: training went on
    assert len(guard.events) == 1


def test_unit_scale_targets_draw_no_event():
    guard, history, _ = _fit(1.0)
    assert guard.events == [] and len(history.history["loss"]) == 2


def test_labels_x1e5_under_a_sigmoid_are_warned_once_the_scale_reaches_the_loss():
    # A sigmoid at 0.5 gives a binary cross-entropy of log 2 whatever the
    # labels' scale: the first loss is under the floor, a later one is not.
    keras.utils.set_random_seed(0)
    x, y = tanh_data(n=256)
    labels = ((y > 0) * 1e5).astype("float32")
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(
        1, activation="sigmoid", kernel_initializer="zeros")])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    first = float(keras.losses.binary_crossentropy(labels[:32], model(x[:32])).numpy().mean())
    assert abs(first) < TARGET_LOSS  # log 2 (p = 0.5 everywhere), computed here
    guard = NaNGuard(verbose=False)
    model.fit(x, labels, batch_size=32, epochs=1, shuffle=False, verbose=0, callbacks=[guard])
    [event] = guard.events
    assert (event.trigger, event.cause, event.action) == ("off_scale_targets", "target_scale", "warn")
    assert 1 < event.step <= 8


def test_labels_x1e5_whose_first_loss_is_a_few_hundred_are_warned_at_the_first_step():
    # A sigmoid of small logits on labels x1e5: the first batch loss, computed
    # here, is between the floor and the old one (1e3): the scale reached it.
    keras.utils.set_random_seed(0)
    x, y = tanh_data(n=256)
    labels = ((y > 0) * 1e5).astype("float32")
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(
        1, activation="sigmoid",
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.003))])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    first = float(keras.losses.binary_crossentropy(labels[:32], model(x[:32])).numpy().mean())
    assert TARGET_LOSS < abs(first) < 1e3
    guard = NaNGuard(verbose=False)
    model.fit(x, labels, batch_size=32, epochs=1, shuffle=False, verbose=0, callbacks=[guard])
    [event] = guard.events
    assert (event.trigger, event.cause, event.action, event.step) == (
        "off_scale_targets", "target_scale", "warn", 1)
    assert f"{first:.3g}" in event.detail
