"""AGC and ZClip under MirroredStrategy on 2 logical CPUs; prints one JSON line.

Each mode trains the same model on the same batches once mirrored (global
batch 32, 16 per replica) and once on one device; the weights must agree,
and every replica must hold the same copy.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from gradguard.callbacks import AGC, ZClip  # noqa: E402
from gradguard.callbacks.attach import find_monitor  # noqa: E402
from tests.callbacks.helpers import dense_model, regression_data  # noqa: E402

STRATEGY = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


def fit(callback, mirrored, x, y):
    keras.utils.set_random_seed(0)
    scope = STRATEGY.scope() if mirrored else tf.distribute.get_strategy().scope()
    with scope:
        model = dense_model()
        model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    model.fit(x, y, batch_size=32, shuffle=False, verbose=0, callbacks=[callback])
    agree = True
    if mirrored:
        for v in model.trainable_variables:
            copies = STRATEGY.experimental_local_results(v.value)
            agree &= all(np.array_equal(copies[0], c) for c in copies[1:])
    return model, agree


result = {}
x, y = regression_data((8,), n=32 * 12, seed=1)
x[32 * 9:32 * 10] *= 30.0  # a spike batch after the warm-up
for mode, make in (("agc", lambda: AGC(0.01)), ("zclip", lambda: ZClip(warmup_steps=5))):
    mirrored, agree = fit(make(), True, x, y)
    single, _ = fit(make(), False, x, y)
    record = find_monitor(mirrored.optimizer).read()
    result[mode] = {
        "vs_single_max_diff": max(float(np.max(np.abs(a - b))) for a, b in
                                  zip(mirrored.get_weights(), single.get_weights())),
        "replicas_agree": bool(agree),
        "norm": record.norm.tolist(), "norm_clipped": record.norm_clipped.tolist(),
        "clipped": bool(np.any(record.norm_clipped < 0.5 * record.norm)),
    }
print(json.dumps(result))
