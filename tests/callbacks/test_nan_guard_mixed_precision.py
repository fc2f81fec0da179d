"""NaNGuard under mixed_float16: loss-scale skips recorded, divergence caught, double wrap refused."""

import keras
import numpy as np
import pytest

from gradguard.callbacks import GradientMonitor, GradientNormLogger, NaNGuard
from tests.callbacks.helpers import WeightsPerStep
from tests.callbacks.test_nan_guard_causes import _data, _dense, _healthy


class Scales(keras.callbacks.Callback):
    """The loss scaler's scale and iterations after every batch (independent of the guard)."""

    def on_train_begin(self, logs=None):
        self.rows = []

    def on_train_batch_end(self, batch, logs=None):
        optimizer = self.model.optimizer
        self.rows.append((batch, int(optimizer.iterations.numpy()),
                          float(optimizer.dynamic_scale.numpy())))


def _fit(lr, *, target_scale=1.0, epochs=2, guard=None, optimizer=None):
    keras.config.set_dtype_policy("mixed_float16")  # conftest resets it
    keras.utils.set_random_seed(0)
    x, y = _data()
    model = _dense(8)
    model.compile(optimizer=optimizer or keras.optimizers.SGD(lr), loss="mse")
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    keep, scales, logger = WeightsPerStep(), Scales(), GradientNormLogger()
    callbacks = [keep, scales, logger] + ([guard] if guard else [])
    model.fit(x, target_scale * y, batch_size=32, epochs=epochs, shuffle=False,
              verbose=0, callbacks=callbacks)
    return model, keep, scales, logger


def _forward64(weights, x):
    """`_dense(8)` (three tanh layers, a linear head) in float64 numpy."""
    h = x.astype(np.float64)
    ws = [np.asarray(w, np.float64) for w in weights]
    for k, b in zip(ws[0:6:2], ws[1:6:2]):
        h = np.tanh(h @ k + b)
    return h @ ws[6] + ws[7]


def test_consecutive_loss_scale_skips_stop_early_with_the_pre_onset_weights():
    # SGD at lr 5: step 1 is applied at scale 32768; its update makes every
    # later gradient overflow float16. Without the guard the scaler skips
    # 3, then 9, then ... steps and the loss turns NaN in the second epoch.
    _, _, plain, _ = _fit(5.0)
    skips = [b for (b, it, _), prev in zip(plain.rows[1:], plain.rows) if it == prev[1]]
    assert skips[:3] == [1, 2, 3] and len(skips) > 17

    guard = NaNGuard(verbose=False)
    model, keep, scales, logger = _fit(5.0, guard=guard)
    [event] = guard.events
    assert (event["trigger"], event["epoch"], event["batch"], event["step"]) == (
        "loss_scale", 0, 3, 1)
    assert event["loss_scale"]["scales"] == [16384.0, 8192.0, 4096.0]
    # The cause by experiment: batch 3 from the weights of step 1 in float32
    # (float64 numpy here) has a loss far above the fit's first: the rate
    # diverged the weights, float16 only overflowed first. Not loss_scale.
    x, y = _data()
    first = float(np.mean((_forward64(keep.weights[0], x[:32]) - y[:32]) ** 2))
    in_float32 = float(np.mean((_forward64(keep.weights[1], x[96:128]) - y[96:128]) ** 2))
    assert in_float32 > 10 * first
    assert (event["cause"], event["method"]) == ("learning_rate", "replay")
    assert event["loss_scale"]["float32_loss"] == pytest.approx(in_float32, rel=1e-3)
    assert "skipped 3 steps in a row, but in float32" in event["evidence"]
    assert "lower the learning rate to ~0.5" in event["cure"]
    # The scaler skipped batches 1..3 (iterations stayed at 1), as recorded.
    assert [r[:2] for r in scales.rows[:4]] == [(0, 1), (1, 1), (2, 1), (3, 1)]
    table = guard.loss_scale.to_dataframe()
    assert table[["batch", "skipped", "loss_scale"]].values.tolist() == [
        [1, 1, 16384.0], [2, 1, 8192.0], [3, 1, 4096.0]]
    # Stopped at once, holding the weights from before step 1's update,
    # with the scale those weights trained with.
    assert len(keep.weights) == 5 and model.stop_training
    assert event["weights"] == {"step": 0, "restored": True, "kept_last": False}
    for got, want in zip(model.get_weights(), keep.weights[0]):
        np.testing.assert_array_equal(got, want)
    assert float(model.optimizer.dynamic_scale.numpy()) == 32768.0
    # Skipped steps are not norms: the logger has the one applied step.
    assert logger.to_dataframe("global")["step"].tolist() == [1]


def test_rollback_on_loss_scale_cuts_the_lr_and_goes_on():
    guard = NaNGuard(action="rollback", lr_factor=0.1, verbose=False)
    model, keep, _, _ = _fit(5.0, guard=guard, epochs=1)
    assert guard.events[0]["trigger"] == "loss_scale"
    assert guard.events[0]["cause"] == "learning_rate"  # float32 diverges too (above)
    assert guard.events[0]["action"] == "rollback"
    assert guard.events[0]["new_learning_rate"] == pytest.approx(0.5)
    # The LossScaleOptimizer around the monitor reads the cut rate too.
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(0.5)
    assert len(keep.weights) == 17  # all 16 batches ran
    assert all(np.isfinite(w).all() for w in model.get_weights())


def test_routine_overflows_are_recorded_not_logged_as_norms():
    # Targets of size ~30: the first steps overflow at the initial scale
    # 2**15; the scaler halves it until they fit (its routine search).
    guard = NaNGuard(verbose=False)
    _, _, scales, logger = _fit(None, target_scale=30.0, epochs=3, guard=guard,
                                optimizer=keras.optimizers.Adam(1e-3))
    assert guard.events == []
    table = guard.loss_scale.to_dataframe()
    assert table["skipped"].sum() >= 3
    assert table["loss_scale"].iloc[0] == 16384.0 and table["step"].iloc[0] == 0
    frame = logger.to_dataframe("global")
    assert np.isfinite(frame["grad_norm"]).all()
    # One row per applied step: the skips got no step number.
    assert frame["step"].tolist() == list(range(1, scales.rows[-1][1] + 1))
    assert len(frame) == 3 * 16 - table["skipped"].sum()


def test_a_scale_below_the_floor_is_divergence_even_unsettled():
    # Targets of 1e6: the gradients overflow float16 at any scale, so no
    # step is ever applied and the scale falls from 2**15 below 1.
    guard = NaNGuard(verbose=False)
    model, keep, _, _ = _fit(None, target_scale=1e6, epochs=2, guard=guard,
                             optimizer=keras.optimizers.Adam(1e-3))
    # Targets of 1e6 are also warned about at the first step (target_scale.py).
    warning, event = guard.events
    assert (warning["trigger"], warning["cause"], warning["action"]) == (
        "off_scale_targets", "target_scale", "warn")
    assert event["cause"] == "loss_scale"
    assert event["loss_scale"]["rule"] == "min_scale"
    assert event["loss_scale"]["scale"] == 0.5 and event["step"] == 0
    assert (event["epoch"], event["batch"], event["loss_scale"]["skipped"]) == (0, 15, 16)
    assert "overflow float16 even unscaled" in event["detail"]
    for got, want in zip(model.get_weights(), keep.weights[0]):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("name", [
    "mlp_adamw",
    pytest.param("deep_relu_sgd_clipped", marks=pytest.mark.slow),
    pytest.param("lstm_rmsprop", marks=pytest.mark.slow),
    "conv_adam",
])
def test_healthy_mixed_precision_runs_raise_no_event(name):
    keras.config.set_dtype_policy("mixed_float16")
    x, y, model, optimizer = _healthy(name)
    model.compile(optimizer=optimizer, loss="mse")
    guard = NaNGuard(verbose=False)
    history = model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[guard])
    assert guard.events == []
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_the_double_loss_scaler_is_refused_before_training():
    keras.config.set_dtype_policy("mixed_float16")
    scaled = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.01))
    with pytest.raises(ValueError, match=(
        r"GradientMonitor received optimizer=LossScaleOptimizer\(SGD\) under "
        r"the 'mixed_float16' dtype policy, where model.compile\(\) wraps the "
        r"optimizer in a second LossScaleOptimizer.*Pass the plain optimizer"
    )):
        GradientMonitor(scaled)
    # Built before the policy changed: the callbacks find two scalers.
    keras.config.set_dtype_policy("float32")
    monitor = GradientMonitor(keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.01)))
    keras.config.set_dtype_policy("mixed_float16")
    x, y = _data()
    model = _dense(8)
    model.compile(optimizer=monitor, loss="mse")
    with pytest.raises(ValueError, match=(
        r"GradientNormLogger found two loss scalers in the model's optimizer, "
        r"LossScaleOptimizer\(GradientMonitor\(LossScaleOptimizer\(SGD\)\)\)"
    )):
        model.fit(x, y, verbose=0, callbacks=[GradientNormLogger()])
    assert int(model.optimizer.iterations.numpy()) == 0
