"""Float16 overflow or bad data: the failing batch again in float32 (issue 29)."""

import re

import keras
import numpy as np

from gradguard.callbacks import NaNGuard
from gradguard.callbacks.float32_replay import (
    computes_in_float16, float32_copy, judge_float32, loss_in_float32,
)
from tests.callbacks.helpers import tanh_data


def _model():
    return keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                             keras.layers.Dense(1, dtype="float32")])


def _forward64(weights, x):
    k1, b1, k2, b2 = (np.asarray(w, np.float64) for w in weights)
    return np.maximum(x.astype(np.float64) @ k1 + b1, 0.0) @ k2 + b2


def test_the_float32_copy_computes_what_float64_numpy_does():
    keras.config.set_dtype_policy("mixed_float16")  # conftest resets it
    keras.utils.set_random_seed(0)
    model = _model()
    model.compile(optimizer="adam", loss="mse")
    x = (tanh_data(n=32)[0] * 3e4).astype("float32")  # float16 overflows in the first layer
    copy = float32_copy(model)
    assert computes_in_float16(model) and not computes_in_float16(copy)
    want = _forward64(model.get_weights(), x)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(copy(x)), want, rtol=1e-4)
    assert not np.isfinite(keras.ops.convert_to_numpy(model(x))).all()  # as given: overflow
    assert judge_float32(float("nan"), 3.0) and not judge_float32(float("nan"), float("inf"))
    assert not judge_float32(1.0, 1.0)


def _overflowing_fit(build):
    """A guarded epoch under mixed_float16, inputs at ~3e4: (first event, start weights, x, y)."""
    keras.config.set_dtype_policy("mixed_float16")  # conftest resets it
    keras.utils.set_random_seed(0)
    x, y = tanh_data(n=128)
    x = (x * 3e4).astype("float32")
    model = build()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    start = model.get_weights()
    guard = NaNGuard(verbose=False)
    model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0, callbacks=[guard])
    return guard.events[0], start, x, y


def test_float16_overflow_on_finite_data_is_loss_scale_not_bad_data():
    event, start, x, y = _overflowing_fit(_model)
    assert (event.cause, event.method) == ("loss_scale", "replay")
    # The float32 loss in the evidence is the first batch's from the start
    # weights (every step overflowed: none was applied), computed here in float64.
    want = float(np.mean((_forward64(start, x[:32]) - y[:32]) ** 2))
    got = float(re.search(r"non-finite under the float16 policy, (\S+) in float32", event.evidence)[1])
    assert got == np.float32(want) or abs(got - want) <= 1e-3 * want


def _counts_model(x):
    norm = keras.layers.Normalization()
    norm.adapt(x)
    return keras.Sequential([keras.Input((8,)), norm, keras.layers.Dense(16, activation="tanh"),
                             keras.layers.Dense(1, dtype="float32")])


def test_raw_counts_through_normalization_overflow_float16_only():
    # The mixed-precision pitfall the generated population's `loss_scale`
    # set-ups build: raw counts (mean 1e5) standardized by an adapted
    # Normalization layer. In float32 the net learns; under mixed_float16
    # the inputs are cast to float16 on the way in (1e5 > 6.55e4: inf).
    x, y = tanh_data(n=128)
    x = (x * 3e4 + 1e5).astype("float32")
    keras.utils.set_random_seed(0)
    twin = _counts_model(x)
    twin.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    losses = twin.fit(x, y, batch_size=32, epochs=3, verbose=0).history["loss"]
    assert np.isfinite(losses).all() and losses[-1] < 0.8 * losses[0]

    keras.config.set_dtype_policy("mixed_float16")  # conftest resets it
    keras.utils.set_random_seed(0)
    model = _counts_model(x)
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    guard = NaNGuard(verbose=False)
    model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0, callbacks=[guard])
    event = guard.events[0]
    assert (event.trigger, event.cause, event.method) == ("nonfinite_loss", "loss_scale", "replay")
    assert all(np.isfinite(w).all() for w in model.get_weights())


class _Settings:
    """A plain object handed to a layer (keras-io's traffic forecaster: its graph)."""

    def __init__(self, scale):
        self.scale = scale


class _Affine(keras.layers.Layer):
    """A custom layer as that forecaster writes its own: no `get_config`, an object argument."""

    def __init__(self, units, settings, **kwargs):
        super().__init__(**kwargs)
        self.units, self.scale = units, settings.scale

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units),
                                      initializer="glorot_uniform")
        self.bias = self.add_weight(shape=(self.units,), initializer="zeros")

    def call(self, x):
        return keras.ops.relu(keras.ops.matmul(x, self.kernel) * self.scale + self.bias)


def _custom_model():
    return keras.Sequential([keras.Input((8,)), _Affine(16, _Settings(1.0)),
                             keras.layers.Dense(1, dtype="float32")])


def test_a_model_that_cannot_be_cloned_runs_in_float32_itself_and_is_put_back():
    keras.config.set_dtype_policy("mixed_float16")  # conftest resets it
    keras.utils.set_random_seed(0)
    model = _custom_model()
    model.compile(optimizer="adam", loss="mse")
    x, y = tanh_data(n=32)
    x = (x * 3e4).astype("float32")
    assert float32_copy(model) is None  # the clone needs get_config
    weights = [np.array(w) for w in model.get_weights()]
    policies = [layer._dtype_policy for layer in model._flatten_layers()]
    want = float(np.mean((_forward64(weights, x) - y) ** 2))
    got = loss_in_float32(model, (x, y, None))
    assert abs(got - want) <= 1e-3 * want
    # As given the first layer overflows float16; the model is as it was.
    assert not np.isfinite(keras.ops.convert_to_numpy(model(x))).all()
    assert [layer._dtype_policy for layer in model._flatten_layers()] == policies
    for before, after in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(before, after)
    # Only a single compiled loss is computed here.
    model.compile(optimizer="adam", loss=["mse"])
    assert loss_in_float32(model, (x, y, None)) is None


def test_float16_overflow_in_a_model_that_cannot_be_cloned_is_loss_scale():
    event = _overflowing_fit(_custom_model)[0]
    assert (event.trigger, event.cause, event.method) == ("nonfinite_loss", "loss_scale", "replay")
    assert "in float32 from the same weights" in event.evidence
