"""One worker of a 2-process MultiWorkerMirroredStrategy run; prints one JSON line.

Usage: python mwms_worker.py INDEX PORT0 PORT1. Run by test_distributed.py.

Keras 3.15's `fit` does not run under MultiWorkerMirroredStrategy as it is;
two test-side work-arounds (kept here, out of gradguard) make plain Keras
run, and gradguard is then tested on top:
- `_maybe_symbolic_build` cannot reduce the distributed first batch: the
  model is built from a host batch first;
- tensorflow/tensorflow#72388: the scalar logs are reduced with `axis=0`;
  they are reduced with `axis=None` instead.
"""

import json
import os
import sys

index, ports = int(sys.argv[1]), sys.argv[2:4]
os.environ["TF_CONFIG"] = json.dumps({
    "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
    "task": {"type": "worker", "index": index},
})
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402

strategy = tf.distribute.MultiWorkerMirroredStrategy()

import keras  # noqa: E402
import keras.src.backend.tensorflow.trainer as tf_trainer  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from gradguard.callbacks import GradientClipping, GradientNormLogger  # noqa: E402
from tests.callbacks.helpers import dense_model, regression_data  # noqa: E402

_reduce = tf_trainer.reduce_per_replica


def _scalar_safe(values, strategy, reduction):  # tensorflow#72388
    if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(strategy):
        return tf.nest.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
    return _reduce(values, strategy, reduction)


tf_trainer.reduce_per_replica = _scalar_safe

x, y = regression_data((8,), n=64)
options = tf.data.Options()
options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
data = tf.data.Dataset.from_tensor_slices((x, y)).batch(32).with_options(options)
result = {}
for name, clip in [("plain", None), ("clipped", 1.0)]:
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = dense_model()
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        model._symbolic_build(data_batch=(x[:16], y[:16]))
    model._maybe_symbolic_build = lambda *args, **kwargs: None
    logger = GradientNormLogger()
    callbacks = [logger] + ([GradientClipping(global_clipnorm=clip)] if clip else [])
    model.fit(data, epochs=1, verbose=0, callbacks=callbacks)
    result[name] = {
        "logged": logger.to_dataframe("global")["grad_norm"].tolist(),
        "weights": [np.asarray(w).tolist() for w in model.get_weights()],
    }
print(json.dumps(result))
