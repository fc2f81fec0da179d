"""`host_read.to_numpy`: the same values as `Variable.numpy()`, for every kind of variable."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from gradguard.callbacks import NaNGuard
from gradguard.callbacks.attach import find_monitor
from gradguard.callbacks.host_read import to_int, to_numpy
from tests.callbacks.helpers import dense_model, regression_data


@pytest.mark.parametrize("value, dtype", [
    (np.arange(12, dtype="float32").reshape(3, 4), "float32"),
    (np.float32(2.5), "float32"),
    (np.int64(2**40 + 3), "int64"),
    (np.linspace(-3, 3, 7), "bfloat16"),
    (np.arange(5), "int32"),
])
def test_to_numpy_equals_variable_numpy(value, dtype):
    variable = keras.Variable(value, dtype=dtype)
    got, want = to_numpy(variable), variable.numpy()
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(np.asarray(got, np.float64), np.asarray(want, np.float64))


def test_to_numpy_reads_the_optimizer_and_monitor_variables_after_training():
    # Variables Keras creates inside the first traced step (the optimizer's,
    # the monitor's ring) are tf.Variable subclasses: the short path must
    # read them, after every later update, as Variable.numpy() does.
    x, y = regression_data((8,), n=64)
    model = dense_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[NaNGuard()])
    monitor = find_monitor(model.optimizer)
    variables = [*model.weights, *monitor.inner_optimizer.variables,
                 monitor._ring, monitor._count]
    for v in variables:
        np.testing.assert_array_equal(to_numpy(v), v.numpy(), err_msg=v.path)
    assert to_int(monitor.iterations) == 8 == monitor.last_step
    assert int(monitor.read().steps[-1]) == 8


def test_to_numpy_reads_a_mirrored_variable_by_the_general_path():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        variable = keras.Variable(np.arange(3, dtype="float32"))
    assert isinstance(variable.value, tf.distribute.DistributedValues)
    np.testing.assert_array_equal(to_numpy(variable), [0.0, 1.0, 2.0])



def test_a_copy_read_before_training_is_not_changed_by_the_updates():
    # Snapshots keep these arrays while training goes on: the updates
    # (Adam's in-place ops on the same buffers) must not reach them.
    x, y = regression_data((8,), n=64)
    model = dense_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-1), loss="mse")
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)  # builds Adam's slots
    variables = [*model.weights, *model.optimizer.variables]
    read = [to_numpy(v) for v in variables]
    frozen = [np.array(a, copy=True) for a in read]
    model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    changed = 0
    for v, a, b in zip(variables, read, frozen):
        np.testing.assert_array_equal(a, b, err_msg=v.path)
        changed += not np.array_equal(v.numpy(), b)
    assert changed >= len(model.weights)  # training did move them
