"""AGC and ZClip: the pure helpers against optax and NumPy, then through `fit`."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from gradguard.callbacks import AGC, AutoClip, GradientClipping, GradientMonitor, ZClip
from gradguard.callbacks.adaptive_clipping import (
    adaptive_grad_clip, unitwise_norm, zclip_init, zclip_update,
)
from gradguard.callbacks.attach import find_monitor
from tests.callbacks.clipping_reference import agc_numpy, zclip_numpy
from tests.callbacks.helpers import dense_model, regression_data

SHAPES = [(), (7,), (5, 3), (4, 6, 2), (3, 3, 2, 4)]


def _tensors(seed, scale=1.0):
    rng = np.random.default_rng(seed)
    return [np.asarray(scale * rng.normal(size=s), "float32") for s in SHAPES]


def _np(values):
    return [keras.ops.convert_to_numpy(v) for v in values]


def test_unitwise_norm_reduces_all_axes_but_the_last():
    for x in _tensors(0):
        got = keras.ops.convert_to_numpy(unitwise_norm(x))
        if x.ndim <= 1:
            np.testing.assert_allclose(got, np.linalg.norm(x), rtol=1e-6)
        else:
            want = np.linalg.norm(x.reshape(-1, x.shape[-1]), axis=0)
            assert got.shape == (1,) * (x.ndim - 1) + (x.shape[-1],)
            np.testing.assert_allclose(got.reshape(-1), want, rtol=1e-6)


@pytest.mark.parametrize("clipping", [1e-3, 0.01, 0.1, 1.0, 10.0])
def test_agc_matches_optax_and_numpy(clipping):
    optax = pytest.importorskip("optax")
    grads, params = _tensors(1, scale=0.5), _tensors(2)
    params[1] = np.zeros_like(params[1])  # a zero bias: the eps floor
    got = _np(adaptive_grad_clip(grads, params, clipping, 1e-3))
    # optax reduces a rank-3 tensor over axis 0 only (a multi-head kernel,
    # units (heads, dim)); Keras' rank-3 kernels (Conv1D, (width, in, out))
    # have their units last, so that one is compared with axis=(0, 1).
    want = [optax.adaptive_grad_clip(clipping, 1e-3, axis=(0, 1) if g.ndim == 3 else None)
            .update([g], None, [p])[0][0] for g, p in zip(grads, params)]
    for g, w, n in zip(got, want, agc_numpy(grads, params, clipping, 1e-3)):
        np.testing.assert_allclose(g, np.asarray(w), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(g, n, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("clipping", [1e-3, 0.01, 0.1, 1.0])
def test_agc_bounds_every_unit_and_is_idempotent(clipping):
    grads, params = _tensors(3, scale=10.0), _tensors(4)
    once = _np(adaptive_grad_clip(grads, params, clipping))
    for g, p in zip(once, params):
        g_norm = keras.ops.convert_to_numpy(unitwise_norm(g))
        limit = clipping * np.maximum(keras.ops.convert_to_numpy(unitwise_norm(p)), 1e-3)
        assert np.all(g_norm <= limit * (1 + 1e-5))
    twice = _np(adaptive_grad_clip(once, params, clipping))
    for a, b in zip(once, twice):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def _recorded_norms():
    """A norm sequence like a run's: noise, two spikes, a NaN, a drift."""
    rng = np.random.default_rng(5)
    norms = 1.0 + 0.1 * rng.standard_normal(80)
    norms[30], norms[31], norms[50] = 8.0, 5.0, 40.0
    norms[40] = np.nan
    norms[10] = np.inf  # in the warm-up
    norms[60:] *= np.linspace(1.0, 2.0, 20)
    return norms.astype("float32")


@pytest.mark.parametrize("z,alpha,warmup", [(2.5, 0.97, 25), (1.5, 0.9, 5)])
def test_zclip_matches_the_reference_loop(z, alpha, warmup):
    norms = _recorded_norms()
    state = zclip_init()
    got = []
    for n in norms:
        threshold, state = zclip_update(state, n, z_threshold=z, alpha=alpha,
                                        warmup_steps=warmup)
        got.append(float(keras.ops.convert_to_numpy(threshold)))
        assert np.isfinite(keras.ops.convert_to_numpy(state.mean))  # NaN never enters
    want = zclip_numpy(norms, z, alpha, warmup)
    np.testing.assert_allclose(got, want, rtol=1e-4)
    assert np.isfinite(want[30]) and np.isfinite(want[50])  # the spikes were clipped
    assert int(keras.ops.convert_to_numpy(state.count)) == len(norms) - 2


# -- through fit --------------------------------------------------------------


def _agc_model():
    keras.utils.set_random_seed(0)
    return dense_model()


def test_agc_through_fit_applies_the_clipped_tape_gradient():
    x, y = regression_data((8,), n=32)
    model = _agc_model()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    before = model.get_weights()
    with tf.GradientTape() as tape:
        loss = keras.losses.MeanSquaredError()(y[:16], model(x[:16], training=True))
    grads = [g.numpy() for g in tape.gradient(loss, model.trainable_variables)]
    model.fit(x[:16], y[:16], batch_size=16, epochs=1, shuffle=False, verbose=0,
              callbacks=[AGC(clipping=0.01)])
    clipped = agc_numpy(grads, before, 0.01)
    for w0, w1, g in zip(before, model.get_weights(), clipped):
        np.testing.assert_allclose((w0 - w1) / 0.1, g, rtol=1e-4, atol=1e-6)
    record = find_monitor(model.optimizer).read()
    want = np.sqrt(sum(np.sum(g ** 2) for g in clipped))
    np.testing.assert_allclose(record.norm_clipped[0], want, rtol=1e-4)
    assert record.norm[0] > 10 * record.norm_clipped[0]  # it did clip
    assert find_monitor(model.optimizer).adaptive.agc is None  # off after fit


def test_zclip_through_fit_follows_the_reference_on_the_logged_norms():
    x, y = regression_data((8,), n=320, seed=1)
    x[200:216] *= 30.0  # a spike batch after the warm-up
    model = _agc_model()
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    model.fit(x, y, batch_size=16, shuffle=False, verbose=0,
              callbacks=[ZClip(warmup_steps=5)])
    record = find_monitor(model.optimizer).read()
    want = zclip_numpy(record.norm, 2.5, 0.97, 5)
    np.testing.assert_allclose(record.norm_clipped, np.minimum(record.norm, want), rtol=1e-4)
    assert np.isfinite(want[12])  # the spike (step 13) was clipped
    clipped = np.isfinite(want)
    np.testing.assert_allclose(record.threshold[clipped], want[clipped], rtol=1e-4)


def test_monitor_options_and_checkpoint_invisibility(tmp_path):
    x, y = regression_data((8,), n=64)
    model = _agc_model()
    model.compile(optimizer=GradientMonitor(keras.optimizers.Adam(1e-3), zclip=2.5,
                                            zclip_warmup=2), loss="mse")
    model.fit(x, y, batch_size=16, verbose=0)
    assert find_monitor(model.optimizer).adaptive.statistics()["count"] == 4
    path = str(tmp_path / "m.keras")
    model.save(path)
    plain = _agc_model()
    plain.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    plain.optimizer.build(plain.trainable_variables)
    plain.save(str(tmp_path / "plain.keras"))
    # The file holds the inner optimizer's variables only, as plain Keras'.
    import zipfile, h5py, io  # noqa: E401
    def names(p):
        with zipfile.ZipFile(p) as z, h5py.File(io.BytesIO(z.read("model.weights.h5"))) as f:
            out = []
            f.visit(out.append)
            return sorted(n for n in out if n.startswith("optimizer"))
    assert names(path) == names(str(tmp_path / "plain.keras"))
    config = model.optimizer.get_config()
    assert config["zclip"] == 2.5 and config["agc"] is None


def test_one_clipping_mode_only():
    x, y = regression_data((8,), n=32)
    model = _agc_model()
    model.compile(optimizer=keras.optimizers.SGD(0.1, global_clipnorm=1.0), loss="mse")
    with pytest.raises(ValueError, match=r"AGC\(clipping=0.01\) cannot be applied: "
                       r"GradientMonitor cannot clip with AGC\(clipping=0.01\): it "
                       r"already clips with \{'global_clipnorm': 1.0\}"):
        model.fit(x, y, verbose=0, callbacks=[AGC()])
    model = _agc_model()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    with pytest.raises(ValueError, match="use one clipping mode only"):
        model.fit(x, y, verbose=0, callbacks=[ZClip(), AutoClip()])
    with pytest.raises(ValueError, match=r"GradientClipping\(clipnorm=1.0\) cannot be combined "
                       r"with AGC\(clipping=0.01\): use one clipping mode only"):
        model.fit(x, y, verbose=0, callbacks=[AGC(), GradientClipping(clipnorm=1.0)])


@pytest.mark.parametrize("cls,kwargs,message", [
    (AGC, {"clipping": 0}, "AGC received clipping=0; expected a number > 0."),
    (AGC, {"eps": -1.0}, "AGC received eps=-1.0; expected a number >= 0."),
    (ZClip, {"z_threshold": -1}, "ZClip received z_threshold=-1; expected a number > 0."),
    (ZClip, {"alpha": 1.0}, r"ZClip received alpha=1.0; expected a number in \[0, 1\)."),
    (ZClip, {"warmup_steps": 0}, "ZClip received warmup_steps=0; expected an int >= 1."),
])
def test_bad_arguments(cls, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cls(**kwargs)
