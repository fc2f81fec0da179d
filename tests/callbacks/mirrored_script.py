"""Runs under MirroredStrategy on 2 logical CPU devices; prints one JSON line.

Logical devices must be configured before TensorFlow starts, hence a script
run in its own process by test_distributed.py. Every number it prints is
checked there against a single-device computation made here.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2
)

import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from gradguard.callbacks import (  # noqa: E402
    AutoClip, GradientClipping, GradientMonitor, GradientNormLogger,
)
from gradguard.callbacks.attach import find_monitor  # noqa: E402
from tests.callbacks.helpers import dense_model, lstm_model, regression_data  # noqa: E402

LR = 0.1
BATCH = 32  # global batch: 16 per replica
STRATEGY = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


class Updates(keras.callbacks.Callback):
    """The update each step applied, (w_before - w_after) / lr, per variable."""

    def on_train_batch_begin(self, batch, logs=None):
        self.before = [np.array(v) for v in self.model.trainable_variables]

    def on_train_begin(self, logs=None):
        self.norms, self.replicas_agree = [], True

    def on_train_batch_end(self, batch, logs=None):
        after = [np.array(v) for v in self.model.trainable_variables]
        update = [(b - a) / LR for b, a in zip(self.before, after)]
        self.norms.append(float(np.sqrt(sum(np.sum(u.astype(np.float64) ** 2) for u in update))))
        self.per_variable = [float(np.linalg.norm(u)) for u in update]
        for v in self.model.trainable_variables:
            copies = STRATEGY.experimental_local_results(v.value)
            self.replicas_agree &= all(np.array_equal(copies[0], c) for c in copies[1:])


def fit(build, x, y, callbacks, mirrored, steps=2, weights=None, skipping=False,
        **compile_kwargs):
    keras.utils.set_random_seed(0)
    scope = STRATEGY.scope() if mirrored else tf.distribute.get_strategy().scope()
    with scope:
        model = build()
        optimizer = keras.optimizers.SGD(LR, **compile_kwargs)
        if skipping:  # a monitor that skips non-finite steps, compiled in
            optimizer = GradientMonitor(optimizer)
        model.compile(optimizer=optimizer, loss="mse")
    if weights is not None:
        model.set_weights(weights)
    updates = Updates()
    model.fit(x[: steps * BATCH], y[: steps * BATCH], batch_size=BATCH, shuffle=False,
              verbose=0, callbacks=list(callbacks) + [updates])
    return model, updates


def tape_norms(build, weights, x, y, steps=2):
    """Single device, global batches, plain SGD: the global-batch norm per step."""
    model = build()
    model.set_weights(weights)
    out = []
    for step in range(steps):
        xb, yb = x[step * BATCH:(step + 1) * BATCH], y[step * BATCH:(step + 1) * BATCH]
        with tf.GradientTape() as tape:
            loss = keras.losses.MeanSquaredError()(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        out.append(float(np.sqrt(sum(np.sum(g.numpy().astype(np.float64) ** 2) for g in grads))))
        for v, g in zip(model.trainable_variables, grads):
            v.assign_sub(LR * g)
    return out


result = {}
for name, build, shape in [("dense", dense_model, (8,)), ("lstm", lstm_model, (12, 3))]:
    x, y = regression_data(shape, n=96)
    keras.utils.set_random_seed(0)
    weights = build().get_weights()
    logger = GradientNormLogger()
    model, _ = fit(build, x, y, [logger], True, weights=weights)
    monitor = find_monitor(model.optimizer)
    rings = STRATEGY.experimental_local_results(monitor._ring.value)
    result[name] = {
        "logged": logger.to_dataframe("global")["grad_norm"].tolist(),
        "tape": tape_norms(build, weights, x, y),
        "rings_agree": all(np.array_equal(np.array(rings[0]), np.array(r)) for r in rings[1:]),
    }
    # Clipping: Keras' own (compiled in) against gradguard's, each mode.
    for mode, value in [("global_clipnorm", 1.0), ("clipnorm", 0.3), ("clipvalue", 0.05)]:
        keras_model, keras_updates = fit(build, x, y, [], True, weights=weights, **{mode: value})
        ours_model, ours_updates = fit(build, x, y, [GradientClipping(**{mode: value})], True,
                                       weights=weights)
        single_model, _ = fit(build, x, y, [], False, weights=weights, **{mode: value})
        result[name][mode] = {
            "keras_applied": keras_updates.norms,
            "keras_per_variable_max": max(keras_updates.per_variable),
            "gradguard_applied": ours_updates.norms,
            "gradguard_per_variable_max": max(ours_updates.per_variable),
            "gradguard_vs_single_max_diff": max(
                float(np.abs(a - b).max())
                for a, b in zip(ours_model.get_weights(), single_model.get_weights())
            ),
            "keras_vs_single_max_diff": max(
                float(np.abs(a - b).max())
                for a, b in zip(keras_model.get_weights(), single_model.get_weights())
            ),
            "replicas_agree": ours_updates.replicas_agree,
        }
    auto = GradientNormLogger()
    _, auto_updates = fit(build, x, y, [auto, AutoClip(percentile=50.0)], True, steps=3,
                          weights=weights)
    record = find_monitor(auto.model.optimizer).read()
    result[name]["autoclip"] = {
        "applied": auto_updates.norms,
        "threshold": record.threshold.tolist(),
        "norm": record.norm.tolist(),
    }

# A NaN in replica 1's shard of the second batch (rows 16-31 go to replica 1),
# under a monitor that skips non-finite steps (compiled in; NaNGuard turns
# the same skip on; the logger alone applies every update, as Keras does).
x, y = regression_data((8,), n=96)
x[BATCH + 20] = np.nan
keras.utils.set_random_seed(0)
weights = dense_model().get_weights()
logger = GradientNormLogger()
model, updates = fit(dense_model, x, y, [logger], True, steps=3, weights=weights,
                     skipping=True)
result["nan_shard"] = {
    "logged": logger.to_dataframe("global")["grad_norm"].tolist(),
    "applied": updates.norms,
    "replicas_agree": updates.replicas_agree,
    "finite": all(np.isfinite(w).all() for w in model.get_weights()),
    "iterations": int(model.optimizer.iterations.numpy()),
}
# The same under mixed precision: Keras' LossScaleOptimizer decides
# finiteness from replica 0's own gradients (finite here); the monitor inside
# it sees the reduced gradient and skips the step on both replicas.
keras.config.set_dtype_policy("mixed_float16")
logger = GradientNormLogger()
model, updates = fit(dense_model, x, y, [logger], True, steps=3, weights=weights,
                     skipping=True)
keras.config.set_dtype_policy("float32")
result["nan_shard_mixed_precision"] = {
    "logged": logger.to_dataframe("global")["grad_norm"].tolist(),
    "applied": updates.norms,
    "replicas_agree": updates.replicas_agree,
    "finite": all(np.isfinite(w).all() for w in model.get_weights()),
}
print(json.dumps(result))
