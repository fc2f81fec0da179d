"""gradguard under data-parallel training: tf.distribute and Keras' JAX DataParallel.

MirroredStrategy runs on 2 logical CPU devices in a subprocess
(`mirrored_script.py`: logical devices must be set before TensorFlow
starts); every number it reports is compared here with the same training on
one device and the global batch.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from gradguard.callbacks import GradientNormLogger

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


@pytest.fixture(scope="module")
def mirrored():
    done = subprocess.run(
        [sys.executable, os.path.join(HERE, "mirrored_script.py")],
        capture_output=True, text=True, timeout=600,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("model", ["dense", "lstm"])
def test_mirrored_norms_are_the_global_batch_norms(mirrored, model):
    result = mirrored[model]
    np.testing.assert_allclose(result["logged"], result["tape"], rtol=1e-5)
    assert result["rings_agree"]  # every replica's ring holds the same rows


@pytest.mark.parametrize("model", ["dense", "lstm"])
def test_mirrored_clipping_bounds_the_applied_update_once(mirrored, model):
    result = mirrored[model]
    norms = np.array(result["tape"])
    clip = result["global_clipnorm"]
    # The update actually applied has norm min(norm, c), as on one device.
    np.testing.assert_allclose(clip["gradguard_applied"], np.minimum(norms, 1.0), rtol=1e-5)
    assert result["clipnorm"]["gradguard_per_variable_max"] <= 0.3 * (1 + 1e-5)
    for mode in ["global_clipnorm", "clipnorm", "clipvalue"]:
        assert result[mode]["gradguard_vs_single_max_diff"] < 1e-6
        assert result[mode]["replicas_agree"]
    # Keras' own clipping, per replica before the all-reduce, overshoots
    # wherever clipping is active (the dense model's norms exceed 1).
    if model == "dense":
        assert min(clip["keras_applied"]) > 1.2
        assert result["clipnorm"]["keras_per_variable_max"] > 0.4
        assert result["clipvalue"]["keras_vs_single_max_diff"] > 1e-3
    autoclip = result["autoclip"]
    np.testing.assert_allclose(
        autoclip["applied"], np.minimum(autoclip["norm"], autoclip["threshold"]), rtol=1e-5
    )


def test_mirrored_nan_in_one_replica_shard_skips_the_step_everywhere(mirrored):
    result = mirrored["nan_shard"]
    assert np.isnan(result["logged"][1]) and np.isfinite(result["logged"][2])
    assert result["applied"][1] == 0.0  # weights unchanged at the bad step
    assert result["replicas_agree"] and result["finite"]
    assert result["iterations"] == 3  # the skipped step still counts
    mixed = mirrored["nan_shard_mixed_precision"]  # the loss-scaled path
    assert np.isnan(mixed["logged"][1]) and mixed["applied"][1] == 0.0
    assert mixed["replicas_agree"] and mixed["finite"]


def test_unsupported_strategy_is_refused_by_name():
    import tensorflow as tf

    strategy = tf.distribute.experimental.CentralStorageStrategy()
    with strategy.scope():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse")
    x = np.zeros((8, 4), "float32")
    with pytest.raises(ValueError, match=r"GradientNormLogger does not support the distribution strategy CentralStorageStrategy; gradguard supports"):
        model.fit(x, x[:, :1], verbose=0, callbacks=[GradientNormLogger()])


JAX_SCRIPT = textwrap.dedent("""
    import json, os, sys
    os.environ["KERAS_BACKEND"] = "jax"
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    import jax, keras, numpy as np
    sys.path.insert(0, {root!r})
    from gradguard.callbacks import GradientClipping, GradientNormLogger
    from tests.callbacks.helpers import dense_model, regression_data
    assert len(jax.devices()) == 2
    keras.distribution.set_distribution(keras.distribution.DataParallel())
    x, y = regression_data((8,), n=64)
    keras.utils.set_random_seed(0)
    model = dense_model()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    weights = [np.array(w) for w in model.get_weights()]
    logger = GradientNormLogger()
    before = []
    class Keep(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            before.append([np.array(v) for v in self.model.trainable_variables])
        def on_train_end(self, logs=None):
            before.append([np.array(v) for v in self.model.trainable_variables])
    model.fit(x, y, batch_size=32, shuffle=False, verbose=0,
              callbacks=[logger, GradientClipping(global_clipnorm=1.0), Keep()])
    applied = [float(np.sqrt(sum(np.sum(((a - b) / 0.1) ** 2) for a, b in zip(s, t))))
               for s, t in zip(before, before[1:])]
    # jax.grad on the full global batch, one device's view.
    def loss_fn(params, xb, yb):
        h = xb
        for i, act in enumerate([jax.numpy.tanh, jax.nn.relu, lambda z: z]):
            h = act(h @ params[2 * i] + params[2 * i + 1])
        return jax.numpy.mean((h - yb) ** 2)
    norms, params = [], [jax.numpy.asarray(w) for w in weights]
    for step in range(2):
        g = jax.grad(loss_fn)(params, x[32 * step: 32 * step + 32], y[32 * step: 32 * step + 32])
        norm = float(np.sqrt(sum(np.sum(np.square(np.array(t, np.float64))) for t in g)))
        norms.append(norm)
        scale = min(1.0, 1.0 / norm)
        params = [p - 0.1 * scale * t for p, t in zip(params, g)]
    print(json.dumps({{"logged": logger.to_dataframe("global")["grad_norm"].tolist(),
                      "clipped": logger.to_dataframe("global")["grad_norm_clipped"].tolist(),
                      "jax_grad": norms, "applied": applied}}))
""")


def test_jax_data_parallel_norms_and_clipping_are_global():
    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed")
    done = subprocess.run(
        [sys.executable, "-c", JAX_SCRIPT.format(root=ROOT)],
        capture_output=True, text=True, timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(result["logged"], result["jax_grad"], rtol=1e-5)
    np.testing.assert_allclose(result["applied"], np.minimum(result["jax_grad"], 1.0), rtol=1e-4)
    np.testing.assert_allclose(result["clipped"], np.minimum(result["jax_grad"], 1.0), rtol=1e-5)


def _free_ports(n):
    import socket

    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _single_device_sgd(steps=2, clip=None):
    """Plain SGD(0.1) on one device over the same global batches of 32."""
    import tensorflow as tf

    from tests.callbacks.helpers import dense_model, global_norm, regression_data

    x, y = regression_data((8,), n=64)
    keras.utils.set_random_seed(0)
    model = dense_model()
    norms = []
    for step in range(steps):
        with tf.GradientTape() as tape:
            loss = keras.losses.MeanSquaredError()(
                y[32 * step: 32 * step + 32], model(x[32 * step: 32 * step + 32], training=True)
            )
        grads = [g.numpy() for g in tape.gradient(loss, model.trainable_variables)]
        norm = global_norm(grads)
        norms.append(norm)
        scale = 1.0 if clip is None else min(1.0, clip / norm)
        for v, g in zip(model.trainable_variables, grads):
            v.assign_sub(0.1 * scale * g)
    return norms, model.get_weights()


def test_multi_worker_mirrored_two_processes():
    ports = [str(p) for p in _free_ports(2)]
    script = os.path.join(HERE, "mwms_worker.py")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    workers = [
        subprocess.Popen([sys.executable, script, str(i), *ports], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
        for i in range(2)
    ]
    outputs = []
    try:
        for worker in workers:
            out, err = worker.communicate(timeout=240)
            assert worker.returncode == 0, err[-3000:]
            outputs.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for worker in workers:
            worker.kill()
    for name, clip in [("plain", None), ("clipped", 1.0)]:
        norms, weights = _single_device_sgd(clip=clip)
        for result in outputs:  # each worker logs the global-batch norm
            np.testing.assert_allclose(result[name]["logged"], norms, rtol=1e-5)
            for a, b in zip(result[name]["weights"], weights):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
