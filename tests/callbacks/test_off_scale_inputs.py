"""A few input columns far off the rest's scale (`off_scale_inputs.py`) and NaNGuard's warning.

The measurement is checked against numpy on tables and images; the guard
on real fits: one raw column among standardized ones warns `input_scale`
at the first batch and training goes on, the same data standardized or
behind an adapted `Normalization` layer gets no event, and features that
merely span 1e-2..1e3 (the generated population's healthy
`normalized_scale` set-up) are not columns far off the rest.
"""

import keras
import numpy as np
import pytest

from gradguard.callbacks import NaNGuard
from gradguard.callbacks.off_scale_inputs import (
    COLUMN_SCALE, LOSS_RATIO, find_off_scale_inputs, normalizes_inputs, off_scale_columns,
    rescale_columns,
)


def _table(n=256, d=8, seed=0, raw_column=None):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype("float32")
    y = (x[:, :3].sum(axis=1, keepdims=True) * 0.5).astype("float32")
    if raw_column is not None:
        x[:, raw_column] = x[:, raw_column] * 1e4 + 3e4  # raw units, with an offset
    return x, y


def test_off_scale_columns_on_a_table_and_an_image():
    x, _ = _table(raw_column=5)
    found = off_scale_columns(x[:64])
    rms = np.sqrt(np.mean(x[:64].astype(np.float64) ** 2, axis=0))
    assert found["columns"] == {0: [5]} and found["count"] == 1 and found["total"] == 8
    np.testing.assert_allclose(found["largest"], rms[5], rtol=1e-6)
    np.testing.assert_allclose(found["median"], np.median(rms), rtol=1e-6)
    assert found["position"] is None
    assert off_scale_columns(_table()[0][:64]) is None
    # An image with one pixel of one channel x1e4: found at its index.
    img = np.random.default_rng(1).uniform(size=(32, 8, 8, 3)).astype("float32")
    img[:, 4, 2, 1] *= 1e4
    found = off_scale_columns(img)
    assert found["columns"] == {0: [4 * 24 + 2 * 3 + 1]} and found["position"] == (4, 2, 1)
    # Integer inputs (token ids) and a dict's int leaf are not measured.
    assert off_scale_columns(np.arange(64 * 5).reshape(64, 5) * 10_000) is None
    both = off_scale_columns({"ids": np.ones((64, 3), "int32") * 50_000, "num": x[:64]})
    assert both["count"] == 1


def test_features_spanning_decades_are_not_columns_off_the_rest():
    # The generated population's input-scale set-up: 8 features at 1e-2..1e3.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)) * np.logspace(-2, 3, 8)
    assert x.std(axis=0).max() > COLUMN_SCALE * 0.9  # a large column...
    assert off_scale_columns(x.astype("float32")) is None  # ...but no 1e3x spread


def test_rescale_columns_puts_them_at_the_median_scale():
    x, _ = _table(raw_column=2)
    found = off_scale_columns(x)
    scaled = rescale_columns(x, found)
    rms = np.sqrt(np.mean(scaled.astype(np.float64) ** 2, axis=0))
    np.testing.assert_allclose(rms[2], found["median"], rtol=1e-5)
    np.testing.assert_array_equal(np.delete(scaled, 2, axis=1), np.delete(x, 2, axis=1))
    assert scaled is not x and x[0, 2] != scaled[0, 2]  # the batch itself is not changed


def test_find_off_scale_inputs_needs_the_loss_to_move():
    found = off_scale_columns(_table(raw_column=0)[0])
    assert find_off_scale_inputs(found, 1.0, 1.0) is None
    assert find_off_scale_inputs(found, LOSS_RATIO * 0.99, 1.0) is None
    assert find_off_scale_inputs(found, float("nan"), 1.0) is None
    detail = find_off_scale_inputs(found, 5.0, 1.0)
    assert "input column 0" in detail and "5x" in detail


def test_normalizes_inputs():
    norm = keras.layers.Normalization()
    norm.adapt(_table(raw_column=1)[0])
    assert normalizes_inputs(keras.Sequential([keras.Input((8,)), norm, keras.layers.Dense(1)]))
    assert normalizes_inputs(keras.Sequential([keras.Input((8,)), keras.layers.Rescaling(1e-4),
                                               keras.layers.Dense(1)]))
    assert not normalizes_inputs(keras.Sequential([keras.Input((8,)), keras.layers.Dense(4),
                                                   keras.layers.BatchNormalization(),
                                                   keras.layers.Dense(1)]))


def _fit(x, y, first=None, epochs=2):
    keras.utils.set_random_seed(0)
    layers = [keras.Input((x.shape[1],))] + ([first] if first is not None else []) + [
        keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)]
    model = keras.Sequential(layers)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    guard = NaNGuard(verbose=False)
    history = model.fit(x, y, batch_size=32, epochs=epochs, shuffle=False, verbose=0,
                        callbacks=[guard])
    return guard, history


def test_one_raw_column_warns_input_scale_at_the_first_batch_and_training_goes_on():
    x, y = _table(raw_column=5)
    guard, history = _fit(x, y)
    [event] = guard.events
    assert (event.trigger, event.cause, event.action, event.method) == (
        "off_scale_inputs", "input_scale", "warn", "replay")
    assert event.step == 1 and "input column 5" in event.evidence
    assert "standardize the inputs" in event.cure
    assert 0 < event.replay_seconds < 30  # the copy and its two forward passes, timed
    assert len(history.history["loss"]) == 2  # a warning: the fit went on
    # The evidence's two losses, recomputed: the start weights' MSE on the
    # first batch as given and with column 5 at the median column's scale.
    keras.utils.set_random_seed(0)
    start = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(1)])
    found = off_scale_columns(x[:32])
    given = float(np.mean((start.predict(x[:32], verbose=0) - y[:32]) ** 2))
    rescaled = float(np.mean((start.predict(rescale_columns(x[:32], found), verbose=0)
                              - y[:32]) ** 2))
    assert f"{given:.4g} as given" in event.evidence
    assert f"{rescaled:.4g} with it scaled" in event.evidence


@pytest.mark.parametrize("case", ["standardized", "normalization_layer"])
def test_no_warning_where_the_column_is_on_scale_or_normalized(case):
    if case == "standardized":
        x, y = _table()
        guard, _ = _fit(x, y)
    else:
        x, y = _table(raw_column=5)
        norm = keras.layers.Normalization()
        norm.adapt(x)
        guard, _ = _fit(x, y, first=norm)
    assert not [e for e in guard.events if e.trigger == "off_scale_inputs"]


def test_every_column_off_scale_is_judged_against_unit_scale():
    # No column holds the inputs' scale: the median column is off too.
    x, _ = _table()
    raw = x * 1e4
    found = off_scale_columns(raw[:64])
    rms = np.sqrt(np.mean(raw[:64].astype(np.float64) ** 2, axis=0))
    assert found["count"] == found["total"] == 8
    np.testing.assert_allclose(found["median"], np.median(rms), rtol=1e-6)
    assert found["reference"] == 1.0
    scaled = rescale_columns(raw[:64], found)
    np.testing.assert_allclose(np.sqrt(np.mean(scaled.astype(np.float64) ** 2, axis=0)),
                               1.0, rtol=1e-5)
    detail = find_off_scale_inputs(found, 50.0, 2.0)
    assert "8 of 8 float input columns" in detail and "root mean square of 1" in detail
    assert "25x" in detail
    # Raw pixels (0-255: the median column under COLUMN_SCALE) are judged as before.
    pixels = np.random.default_rng(2).uniform(0, 255, size=(32, 8, 8, 1)).astype("float32")
    assert off_scale_columns(pixels) is None


def _conv_autoencoder(steps=64):
    return keras.Sequential([
        keras.Input((steps, 1)),
        keras.layers.Conv1D(8, 7, padding="same", strides=2, activation="relu"),
        keras.layers.Conv1DTranspose(8, 7, padding="same", strides=2, activation="relu"),
        keras.layers.Conv1DTranspose(1, 7, padding="same"),
    ])


@pytest.mark.parametrize("scale", [1.0, 1e4])
def test_a_series_in_raw_units_warns_input_scale_and_a_standardized_one_does_not(scale):
    # A one-channel series to reconstruct, fed 1e4x its standardized values
    # (the targets stay standardized): every column off scale.
    t = np.arange(256 + 64)
    series = np.sin(2 * np.pi * t / 48) + 0.1 * np.random.default_rng(0).normal(size=t.shape)
    clean = np.stack([series[i:i + 64] for i in range(256)])[..., None].astype("float32")
    keras.utils.set_random_seed(0)
    model = _conv_autoencoder()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    guard = NaNGuard(verbose=False)
    history = model.fit(clean * scale, clean, batch_size=32, epochs=2, verbose=0,
                        callbacks=[guard])
    warned = [e for e in guard.events if e.trigger == "off_scale_inputs"]
    if scale == 1.0:
        assert not guard.events
        return
    [event] = warned
    assert (event.cause, event.action, event.step) == ("input_scale", "warn", 1)
    assert "64 of 64 float input columns" in event.evidence
    assert len(history.history["loss"]) == 2  # a warning: the fit went on
