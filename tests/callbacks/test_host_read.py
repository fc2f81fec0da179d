"""`host_read.to_numpy`: the same values as `Variable.numpy()`, for every kind of variable."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from gradguard.callbacks import NaNGuard
from gradguard.callbacks.attach import find_monitor
from gradguard.callbacks.host_read import COMPILE_AFTER, read_many, to_int, to_numpy
from tests.callbacks.helpers import dense_model, regression_data


def _fitted_adam():
    """Data and a dense model fitted one epoch with Adam(0.1), so Adam's slots exist."""
    x, y = regression_data((8,), n=64)
    model = dense_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-1), loss="mse")
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    return x, y, model


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
    x, y, model = _fitted_adam()
    variables = [*model.weights, *model.optimizer.variables]
    read = [to_numpy(v) for v in variables]
    frozen = [np.array(a, copy=True) for a in read]
    model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    changed = 0
    for v, a, b in zip(variables, read, frozen):
        np.testing.assert_array_equal(a, b, err_msg=v.path)
        changed += not np.array_equal(v.numpy(), b)
    assert changed >= len(model.weights)  # training did move them


def test_read_many_equals_each_variable_read_eager_then_compiled_and_copies_stay_put():
    x, y, model = _fitted_adam()
    variables = [*model.weights, *model.optimizer.variables]
    kept = []
    for read in range(COMPILE_AFTER + 2):  # eager reads, then the compiled reader's
        got = read_many(variables, model)
        want = [v.numpy() for v in variables]
        assert [g.dtype for g in got] == [w.dtype for w in want]
        for g, w, v in zip(got, want, variables):
            np.testing.assert_array_equal(g, w, err_msg=f"read {read}: {v.path}")
        kept.append((got, [np.array(g, copy=True) for g in got]))
        model.fit(x, y, batch_size=16, epochs=1, verbose=0)  # moves every weight
    assert model._gradguard_reader[2] is not None  # the compiled reader was used
    for got, frozen in kept:  # a snapshot's arrays are copies: later updates never reach them
        for g, f in zip(got, frozen):
            np.testing.assert_array_equal(g, f)


def test_read_many_after_a_recompile_reads_the_new_optimizer():
    x, y, model = _fitted_adam()
    for _ in range(COMPILE_AFTER + 1):
        read_many([*model.weights, *model.optimizer.variables], model)
    model.compile(optimizer=keras.optimizers.SGD(1e-2, momentum=0.9), loss="mse")
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    variables = [*model.weights, *model.optimizer.variables]
    for _ in range(COMPILE_AFTER + 1):
        got = read_many(variables, model)
    for g, v in zip(got, variables):
        np.testing.assert_array_equal(g, v.numpy(), err_msg=v.path)
    assert len(got) == len(variables)
