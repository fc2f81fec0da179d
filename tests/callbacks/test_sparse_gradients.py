"""Sparse gradients (`tf.IndexedSlices`): norms, clipping and skipping of the densified gradient.

An `Embedding`'s gradient under TensorFlow repeats a row for each occurrence
of a token. Every check here is against the tape's densified gradient
(`dense_tape.py`) on batches where tokens repeat, in a batch and inside a
sequence.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from gradguard.callbacks import (
    AutoClip, GradientClipping, GradientMonitor, GradientNormLogger, NaNGuard, norms,
)
from gradguard.callbacks.attach import find_monitor
from tests.callbacks.dense_tape import (
    clip, dense_gradients, embedding_model, global_norm, replay_sgd, token_data,
)

LR = 0.5
BATCH = 8


def _slices():
    """Rows for indices [3, 1, 3, 3, 0] of a (5, 2) variable: index 3 three times."""
    values = tf.constant([[3., 4.], [1., -2.], [3., 4.], [-1., 0.5], [0., 7.]])
    return tf.IndexedSlices(values, tf.constant([3, 1, 3, 3, 0]), tf.constant([5, 2]))


def test_combine_duplicates_keeps_the_densified_gradient():
    g = _slices()
    combined = norms.combine_duplicates(g)
    np.testing.assert_allclose(tf.convert_to_tensor(combined), tf.convert_to_tensor(g))
    assert sorted(combined.indices.numpy()[:3]) == [0, 1, 3]
    dense = tf.convert_to_tensor(g).numpy()
    (squared,) = norms.squared_norms([combined])
    np.testing.assert_allclose(float(squared), np.sum(dense ** 2), rtol=1e-6)
    # The values' own norm is not the gradient's (index 3 repeats).
    assert abs(float(tf.reduce_sum(g.values ** 2)) - np.sum(dense ** 2)) > 10


@pytest.mark.parametrize("mode,value", [
    ("clipnorm", 2.0), ("global_clipnorm", 2.0), ("clipvalue", 1.0),
])
def test_clipped_norm_and_scaling_of_slices_match_the_dense_gradient(mode, value):
    g = norms.combine_duplicates(_slices())
    dense = tf.convert_to_tensor(g).numpy()
    per_variable = tf.sqrt(tf.stack(norms.squared_norms([g])))
    norm = norms.global_norm(per_variable)
    clipped = norms.clipped_global_norm([g], per_variable, norm, **{mode: value})
    np.testing.assert_allclose(float(clipped), global_norm(clip([dense], mode, value)), rtol=1e-6)
    (scaled,) = norms.scale_by_threshold([g], norm, 1.0)
    np.testing.assert_allclose(np.linalg.norm(tf.convert_to_tensor(scaled)), 1.0, rtol=1e-6)


def _fit(callbacks, steps=3, **sgd_kwargs):
    x, y = token_data()
    model = embedding_model()
    model.compile(optimizer=keras.optimizers.SGD(LR, **sgd_kwargs), loss="mse")
    weights = model.get_weights()
    logger = GradientNormLogger()
    model.fit(x[:steps * BATCH], y[:steps * BATCH], batch_size=BATCH, shuffle=False,
              verbose=0, callbacks=[logger, *callbacks])
    return model, weights, logger, x, y


# The zoo runs NaNGuard and AutoClip on an Embedding by default too.
@pytest.mark.parametrize("variant", [
    "plain", "global_clipnorm", "clipvalue",
    *(pytest.param(v, marks=pytest.mark.slow) for v in ("nan_guard", "autoclip", "clipnorm")),
])
def test_embedding_norms_clipping_and_weights_match_the_densified_tape(variant):
    mode, value, autoclip, callbacks = None, None, None, []
    if variant == "nan_guard":
        callbacks = [NaNGuard(verbose=False)]
    elif variant == "autoclip":
        autoclip, callbacks = 50.0, [AutoClip(percentile=50.0)]
    elif variant != "plain":
        mode, value = variant, {"clipvalue": 0.02}.get(variant, 0.3)
        callbacks = [GradientClipping(**{mode: value})]
    model, weights, logger, x, y = _fit(callbacks)
    norms, replayed = replay_sgd(embedding_model, weights, x, y, BATCH, LR, 3,
                                 mode=mode, value=value, autoclip=autoclip)
    table = logger.to_dataframe("global")
    np.testing.assert_allclose(table["grad_norm"], norms, rtol=1e-5)
    for got, want in zip(model.get_weights(), replayed):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    if variant == "plain":  # per layer: the embedding's densified norm
        first = dense_gradients(embedding_model_with(weights), keras.losses.MeanSquaredError(),
                                x[:BATCH], y[:BATCH])
        layers = logger.to_dataframe()
        emb = layers[(layers.step == 1) & (layers.layer == "emb")]["norm"].item()
        np.testing.assert_allclose(emb, np.linalg.norm(first[0]), rtol=1e-5)
    if callbacks and isinstance(callbacks[0], NaNGuard):
        assert callbacks[0].events == []


def embedding_model_with(weights):
    model = embedding_model()
    model.set_weights(weights)
    return model


def test_clipping_bounds_the_densified_update_where_keras_alone_does_not():
    # Plain Keras clips an IndexedSlices row by row: a token seen k times
    # moves by up to k x clipvalue. With the monitor the bound holds.
    x, y = token_data()
    x, y = x[:BATCH], y[:BATCH] * 100
    applied = {}
    for name, callbacks in [("keras", []), ("gradguard", [GradientClipping(clipvalue=0.01)])]:
        model = embedding_model()
        kwargs = {"clipvalue": 0.01} if name == "keras" else {}
        model.compile(optimizer=keras.optimizers.SGD(1.0, **kwargs), loss="mse")
        before = model.get_weights()[0]
        model.fit(x, y, batch_size=BATCH, verbose=0, callbacks=callbacks)
        applied[name] = np.abs(before - model.get_weights()[0]).max()
    assert applied["keras"] > 0.015  # a repeated token: several clipped rows summed
    assert applied["gradguard"] <= 0.01 * (1 + 1e-5)


def test_nonfinite_and_spike_steps_with_sparse_gradients_are_skipped():
    x, y = token_data(n=8 * BATCH)
    y[2 * BATCH + 1] = np.nan  # step 3: a NaN target
    y[6 * BATCH:7 * BATCH] *= 1e4  # step 7: a spike
    model = embedding_model()
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    guard = NaNGuard(action="rollback", spike_factor=20.0, min_history=3, verbose=False)

    class Weights(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.seen = [self.model.get_weights()]

        def on_train_batch_end(self, batch, logs=None):
            self.seen.append(self.model.get_weights())

    weights = Weights()
    model.fit(x, y, batch_size=BATCH, shuffle=False, verbose=0, callbacks=[weights, guard])
    record = find_monitor(model.optimizer).read()
    assert record.status.tolist()[2] == 1 and record.status.tolist()[6] == 2
    for step in (3, 7):  # skipped: the weights after it are those before it
        for a, b in zip(weights.seen[step - 1], weights.seen[step]):
            np.testing.assert_array_equal(a, b)
    assert [e["trigger"] for e in guard.events][:1] == ["nonfinite_gradient"]


@pytest.mark.slow
def test_compiled_monitor_with_embedding_and_xla():
    x, y = token_data()
    model = embedding_model()
    model.compile(optimizer=GradientMonitor(keras.optimizers.Adam(0.01)), loss="mse",
                  jit_compile=True)
    weights = model.get_weights()
    model.fit(x[:BATCH], y[:BATCH], batch_size=BATCH, verbose=0)
    grads = dense_gradients(embedding_model_with(weights), keras.losses.MeanSquaredError(),
                            x[:BATCH], y[:BATCH])
    np.testing.assert_allclose(model.optimizer.read().norm[0], global_norm(grads), rtol=1e-5)


@pytest.mark.slow
def test_embedding_under_mirrored_strategy_matches_the_single_device_replay():
    import json
    import os
    import subprocess
    import sys

    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mirrored_sparse_script.py")
    done = subprocess.run([sys.executable, script], capture_output=True, text=True,
                          timeout=600, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for mode in ["none", "clipvalue", "global_clipnorm"]:
        np.testing.assert_allclose(result[mode]["logged"], result[mode]["tape"], rtol=1e-5)
        assert result[mode]["max_weight_diff"] < 1e-5, mode
