"""An Embedding model under MirroredStrategy on 2 logical CPUs; prints one JSON line.

Checked in test_sparse_gradients.py: the logged norms and the weights after
clipping equal a single-device replay on the global batches, with the
embedding's IndexedSlices densified (repeated tokens summed).
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

from gradguard.callbacks import GradientClipping, GradientNormLogger  # noqa: E402
from tests.callbacks.dense_tape import embedding_model, replay_sgd, token_data  # noqa: E402

LR, BATCH, STEPS = 0.5, 16, 2
STRATEGY = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])

x, y = token_data(n=BATCH * STEPS)
keras.utils.set_random_seed(0)
weights = embedding_model().get_weights()
result = {}
for mode, value in [("none", None), ("clipvalue", 0.02), ("global_clipnorm", 0.3)]:
    with STRATEGY.scope():
        model = embedding_model()
        model.compile(optimizer=keras.optimizers.SGD(LR), loss="mse")
    model.set_weights(weights)
    logger = GradientNormLogger()
    callbacks = [logger] + ([] if mode == "none" else [GradientClipping(**{mode: value})])
    model.fit(x, y, batch_size=BATCH, shuffle=False, verbose=0, callbacks=callbacks)
    norms, replayed = replay_sgd(embedding_model, weights, x, y, BATCH, LR, STEPS,
                                 mode=None if mode == "none" else mode, value=value)
    result[mode] = {
        "logged": logger.to_dataframe("global")["grad_norm"].tolist(),
        "tape": norms.tolist(),
        "max_weight_diff": max(float(np.abs(a - b).max())
                               for a, b in zip(model.get_weights(), replayed)),
    }
print(json.dumps(result))
