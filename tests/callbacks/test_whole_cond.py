"""`whole_cond`: a `cond` run for its effects, kept as one `If` op under TensorFlow."""

import keras
import numpy as np
import pytest

from gradguard.callbacks import GradientMonitor
from gradguard.callbacks.whole_cond import whole_cond


def _assigns(pred_value: bool) -> float:
    v = keras.Variable(1.0)

    def run(pred):
        whole_cond(pred, lambda: v.assign(2.0), lambda: v.assign(3.0))
        return v.value

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        run = tf.function(run)
        run(tf.constant(pred_value))
    else:
        run(keras.ops.convert_to_tensor(pred_value))
    return float(keras.ops.convert_to_numpy(v.value))


@pytest.mark.parametrize("pred,expected", [(True, 2.0), (False, 3.0)])
def test_whole_cond_runs_the_branch_pred_chooses(pred, expected):
    assert _assigns(pred) == expected


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow's lowering")
def test_the_undo_skip_traces_one_unlowered_if_and_still_skips():
    import tensorflow as tf

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(1)])
    monitor = GradientMonitor(keras.optimizers.Adam(1e-2), skip_nonfinite=True)
    model.compile(optimizer=monitor, loss="mse")
    x = np.ones((8, 4), "float32")
    y = np.ones((8, 1), "float32")
    model.train_on_batch(x, y)
    assert monitor.undo_skip(model.trainable_variables)

    @tf.function
    def step(x, y):  # the monitored update, traced as the train step traces it
        with tf.GradientTape() as tape:
            loss = keras.ops.mean((model(x) - y) ** 2)
        grads = tape.gradient(loss, model.trainable_variables)
        monitor.apply(grads, model.trainable_variables)

    graph = step.get_concrete_function(tf.constant(x), tf.constant(y)).graph
    ifs = [op for op in graph.get_operations() if op.type in ("If", "StatelessIf")]
    unlowered = [op for op in ifs if not op.get_attr("_lower_using_switch_merge")]
    # The restore is one op: its branch assigns every weight and Adam slot back.
    assert len(unlowered) == 1
    restore = unlowered[0]
    assert len([t for t in restore.inputs if t.dtype == tf.resource]) >= len(model.weights)

    before = [w.numpy().copy() for w in model.weights]
    step(tf.constant(np.full((8, 4), np.nan, "float32")), tf.constant(y))  # skipped
    for w, old in zip(model.weights, before):
        np.testing.assert_array_equal(w.numpy(), old)
    step(tf.constant(x), tf.constant(y))  # applied
    assert any(not np.array_equal(w.numpy(), old) for w, old in zip(model.weights, before))


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow's lowering")
def test_the_undo_skip_under_xla_leaves_a_nan_batch_out():
    # jit_compile=True: XLA compiles the unlowered If as it compiles any If.
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(1)])
    model.compile(optimizer=GradientMonitor(keras.optimizers.Adam(1e-2)), loss="mse",
                  jit_compile=True)
    x = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
    y = np.ones((16, 1), "float32")
    model.train_on_batch(x, y)
    before = [w.copy() for w in model.get_weights()]
    bad = x.copy()
    bad[3, 1] = np.nan
    model.train_on_batch(bad, y)  # skipped: nothing changes
    for w, old in zip(model.get_weights(), before):
        np.testing.assert_array_equal(w, old)
    model.train_on_batch(x, y)
    assert any(not np.array_equal(w, old) for w, old in zip(model.get_weights(), before))
