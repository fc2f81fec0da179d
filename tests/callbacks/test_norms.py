"""Clipping: what the optimizer actually applied, measured from the update.

With plain SGD the applied gradient is (w_before - w_after) / lr, an
independent reading of the clipping that the monitor reports.
"""

import keras
import numpy as np
import pytest

from gradguard.callbacks import AutoClip, GradientClipping, GradientNormLogger
from gradguard.callbacks import norms
from tests.callbacks.helpers import LastRecord, dense_model, global_norm, regression_data

LR = 0.01


def _train_one_step(callbacks, x, y, **sgd_kwargs):
    model = dense_model()
    model.compile(optimizer=keras.optimizers.SGD(LR, **sgd_kwargs), loss="mse")
    before = model.get_weights()
    model.fit(x, y, batch_size=len(x), verbose=0, callbacks=callbacks)
    applied = [(b - a) / LR for b, a in zip(before, model.get_weights())]
    return model, applied


@pytest.mark.parametrize("threshold", [0.01, 0.1, 0.3, 1.0, 3.0, 100.0])
@pytest.mark.parametrize("mode", ["clipnorm", "global_clipnorm", "clipvalue"])
def test_applied_update_respects_threshold(mode, threshold):
    x, y = regression_data((8,), n=32)
    y = y * 20  # large gradients, so that most thresholds bite
    last = LastRecord()
    model, applied = _train_one_step(
        [last, GradientNormLogger(), GradientClipping(**{mode: threshold})], x, y
    )
    record = last.record
    tol = 1e-3 * threshold + 1e-6  # float32 update arithmetic
    if mode == "clipnorm":
        assert max(np.linalg.norm(g) for g in applied) <= threshold + tol
    elif mode == "global_clipnorm":
        assert global_norm(applied) <= threshold + tol
    else:
        assert max(np.abs(g).max() for g in applied) <= threshold + tol
    # The monitor's post-clip norm is the norm of what was applied.
    np.testing.assert_allclose(
        record.norm_clipped[0], global_norm(applied), rtol=2e-3
    )
    assert record.norm_clipped[0] <= record.norm[0] * (1 + 1e-6)


def test_clip_by_threshold_is_idempotent():
    rng = np.random.default_rng(0)
    grads = [rng.normal(size=(4, 3)).astype("float32") * 10, rng.normal(size=3).astype("float32")]
    for threshold in [0.1, 1.0, 5.0, 1e3]:
        norm = norms.global_norm(norms.variable_norms(grads))
        once = norms.scale_by_threshold(grads, norm, threshold)
        norm_once = norms.global_norm(norms.variable_norms(once))
        assert float(norm_once) <= threshold * (1 + 1e-6)
        twice = norms.scale_by_threshold(once, norm_once, threshold)
        for a, b in zip(once, twice):
            np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-6)


def test_ring_percentile_matches_numpy():
    rng = np.random.default_rng(1)
    ring = rng.lognormal(size=16).astype("float32")
    ring[3] = np.inf
    for count, window, q in [(5, 16, 10.0), (16, 16, 50.0), (40, 8, 90.0), (1, 4, 10.0)]:
        newest = [(count - 1 - k) % 16 for k in range(min(count, window))]
        values = ring[newest]
        want = np.percentile(values[np.isfinite(values)], q)
        got = norms.ring_percentile(keras.ops.convert_to_tensor(ring), count, window, q)
        np.testing.assert_allclose(float(got), want, rtol=1e-5)


def test_autoclip_threshold_tracks_percentile():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(16 * 40, 8)).astype("float32")
    y = (rng.normal(size=(16 * 40, 1)) * rng.lognormal(sigma=1.5, size=(16 * 40, 1))).astype("float32")
    model = dense_model()
    model.compile(optimizer=keras.optimizers.SGD(LR), loss="mse")
    applied = []

    class Applied(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.before = self.model.get_weights()

        def on_train_batch_end(self, batch, logs=None):
            after = self.model.get_weights()
            applied.append(global_norm([(b - a) / LR for b, a in zip(self.before, after)]))

    last = LastRecord()
    model.fit(x, y, batch_size=16, shuffle=False, verbose=0,
              callbacks=[last, AutoClip(percentile=25.0, history=20), Applied()])
    record = last.record
    for t in range(len(record.steps)):
        window = record.norm[max(0, t - 19): t + 1]  # current step included
        want = np.percentile(window, 25.0)
        np.testing.assert_allclose(record.threshold[t], want, rtol=1e-5)
        np.testing.assert_allclose(
            applied[t], min(record.norm[t], want), rtol=2e-3, atol=1e-6
        )
    assert (record.norm_clipped <= record.threshold * (1 + 1e-6)).all()
    assert (record.norm > record.threshold).sum() > len(record.steps) // 2


def test_gradient_clipping_rejects_two_modes():
    with pytest.raises(ValueError, match=(
        r"GradientClipping received clipnorm=1.0, clipvalue=0.5, "
        r"global_clipnorm=None; set exactly one of them"
    )):
        GradientClipping(clipnorm=1.0, clipvalue=0.5)
    with pytest.raises(ValueError, match=r"GradientClipping received clipnorm=-1; expected a number > 0\."):
        GradientClipping(clipnorm=-1)


def test_gradient_clipping_refuses_a_model_that_already_clips():
    x, y = regression_data((8,), n=32)
    model = dense_model()
    model.compile(optimizer=keras.optimizers.SGD(LR, clipvalue=0.1), loss="mse")
    before = model.get_weights()
    with pytest.raises(ValueError, match=(
        r"GradientClipping\(global_clipnorm=1.0\) cannot be applied: the "
        r"optimizer already clips with \{'clipvalue': 0.1\}"
    )):
        model.fit(x, y, verbose=0, callbacks=[GradientClipping(global_clipnorm=1.0)])
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)  # no training happened


def test_autoclip_and_gradient_clipping_do_not_combine():
    x, y = regression_data((8,), n=32)
    model = dense_model()
    model.compile(optimizer=keras.optimizers.SGD(LR), loss="mse")
    with pytest.raises(ValueError, match=r"cannot be combined with AutoClip"):
        model.fit(x, y, verbose=0, callbacks=[AutoClip(), GradientClipping(clipnorm=1.0)])
    model = dense_model()
    model.compile(optimizer=keras.optimizers.SGD(LR, clipnorm=1.0), loss="mse")
    with pytest.raises(ValueError, match=r"AutoClip\(percentile=10.0\) cannot be applied"):
        model.fit(x, y, verbose=0, callbacks=[AutoClip()])


@pytest.mark.parametrize("kwargs, message", [
    ({"percentile": 0}, r"AutoClip received percentile=0; expected a number in \(0, 100\]\."),
    ({"percentile": 101}, r"AutoClip received percentile=101;"),
    ({"history": 0}, r"AutoClip received history=0; expected an int >= 1\."),
])
def test_autoclip_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AutoClip(**kwargs)
