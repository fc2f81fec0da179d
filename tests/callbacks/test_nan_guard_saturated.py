"""NaNGuard on a net saturated from its first step: every gradient 0, the loss flat.

Under `mixed_float16`, inputs ~1e4 drive a float16 softmax to exact 0/1
probabilities; the float32 cross-entropy gets them through a cast (no
logits to recover, as it does in float32), clips them, and its gradient is
0 everywhere: the first layer's kernel and bias gradients give no
input-scale estimate (`input_ratio` divides 0 by 0). The keras-io
population's mnist_convnet under its fp16_overflow break does this.
The guard measures the first batch's inputs instead: every column is off
unit scale, so the forward-pass experiment warns at the first batch
(`off_scale_inputs`, since session 6; before it, the stall did at step 8
from the measured scale, `structure_signs.input_scale_of`, which stays the
path where no experiment can run). The test checks the figures against
numpy's and that the unit-scale twin stays silent.
"""

import keras
import numpy as np
import pytest

from gradguard.callbacks import NaNGuard
from gradguard.callbacks.structure_signs import (
    first_layer_dead, first_layer_unapplied, input_scale, input_scale_of,
)


def _classifier_data(scale, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 1.0, size=(512, 16)).astype("float32")
    y = keras.utils.to_categorical((x[:, :4].sum(axis=1) > 2.0).astype(int) + (x[:, 4] > 0.5),
                                   3).astype("float32")
    return (x * scale).astype("float32"), y


def _model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((16,)), keras.layers.Dense(32, activation="relu"),
                             keras.layers.Dense(3, activation="softmax")])


@pytest.fixture
def mixed_float16():
    keras.config.set_dtype_policy("mixed_float16")
    yield
    keras.config.set_dtype_policy("float32")


def _fit(x, y):
    model = _model()
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    guard = NaNGuard(verbose=False)
    history = model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0,
                        callbacks=[guard])
    return model, guard, history.history["loss"]


def test_first_layer_dead_and_input_scale_of_on_small_arrays():
    zero = np.zeros((3, 4))
    assert first_layer_dead(zero, 0, 1)
    assert not first_layer_dead(np.array([[0.0, 0.0], [1e-3, 1e-4]]), 0, 1)
    assert not first_layer_dead(np.full((2, 2), np.nan), 0, 1)  # non-finite: no sign
    assert not first_layer_dead(np.empty((0, 2)), 0, 1)
    assert input_scale_of(3.0, True, 500.0) == (3.0, False)  # the gradient estimate first
    assert input_scale_of(None, True, 500.0) == (500.0, True)
    assert input_scale_of(None, False, 500.0) == (None, False)
    assert input_scale_of(None, True, None) == (None, False)
    # from the norms: a dead first layer takes the measured scale; no columns, no scale
    assert input_scale(zero, (0, 1, 1), 500.0) == (500.0, True)
    assert input_scale(zero, None, 500.0) == (None, False)
    # no finite kernel-and-bias row at all: nothing applied yet (zeros are applied)
    assert first_layer_unapplied(np.empty((0, 2)), 0, 1)
    assert first_layer_unapplied(np.array([[np.nan, 1.0], [2.0, np.inf]]), 0, 1)
    assert not first_layer_unapplied(np.array([[np.nan, 1.0], [2.0, 3.0]]), 0, 1)
    assert not first_layer_unapplied(zero, 0, 1)


@pytest.mark.slow  # two one-epoch fits of a small MLP: ~6 s idle
def test_a_net_saturated_from_its_first_step_is_warned_input_scale(mixed_float16):
    import tensorflow as tf

    x, y = _classifier_data(3e4)
    model, guard, _ = _fit(x, y)
    # Independently: the first batch's gradients are exactly 0 from the start weights.
    fresh = _model()
    with tf.GradientTape() as tape:
        p = tf.cast(fresh(x[:32]), "float32")
        loss = tf.reduce_mean(keras.losses.categorical_crossentropy(y[:32], p))
    grads = tape.gradient(loss, fresh.trainable_variables)
    assert all(float(tf.norm(g)) == 0.0 for g in grads) and float(loss) > 1.0
    # Every input column is off unit scale: since session 6 the forward-pass
    # experiment names it at the first batch (`off_scale_inputs`), before the
    # stall would (the stall then is not judged again in that fit).
    assert len(guard.events) == 1
    event = guard.events[0]
    assert (event.trigger, event.cause, event.action, event.step) == (
        "off_scale_inputs", "input_scale", "warn", 1)
    rms = np.sqrt(np.square(x[:32].astype(np.float64)).mean(axis=0))
    assert "16 of 16 float input columns" in event.evidence
    assert f"the median column's {float(np.median(rms)):.3g}" in event.evidence
    assert f"the largest {float(rms.max()):.3g}" in event.evidence


@pytest.mark.slow
def test_the_unit_scale_twin_has_no_event(mixed_float16):
    x, y = _classifier_data(1.0)
    _, guard, losses = _fit(x, y)
    assert len(guard.events) == 0 and np.isfinite(losses).all()


def test_a_classifier_whose_every_step_was_skipped_is_judged_on_the_measured_scale(
        mixed_float16):
    # Inputs ~1e4 into a float32 softmax: the scaled gradients overflow
    # float16 at every scale the loss scaler tries for the first 8 batches
    # (keras-io's toy ResNet on pixels at ~3e4 did this), so no step gives a
    # first-layer gradient to estimate the input scale from: the first
    # batch's measured scale stands in for the stall's sign.
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(512, 16)) * 1e4).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, 10, 512), 10).astype("float32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(32, activation="relu"),
                              keras.layers.Dense(10, activation="softmax", dtype="float32")])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="categorical_crossentropy")
    steps = []

    class Steps(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            steps.append(int(self.model.optimizer.iterations.numpy()))

    guard = NaNGuard(verbose=False)
    model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0,
              callbacks=[guard, Steps()])
    assert steps[:8] == [0] * 8  # independently: no step applied in the first 8 batches
    # Every column at ~1e4: the forward-pass experiment (float32, on the
    # guard's copy) names it at the first batch, where no gradient could
    # (before session 6, the stall did, from the measured scale).
    event = guard.events[0]
    assert (event.trigger, event.cause, event.action) == (
        "off_scale_inputs", "input_scale", "warn")
    rms = np.sqrt(np.square(x[:32].astype(np.float64)).mean(axis=0))
    assert "16 of 16 float input columns" in event.evidence
    assert f"the largest {float(rms.max()):.3g}" in event.evidence
