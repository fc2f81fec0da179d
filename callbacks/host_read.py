"""`to_numpy`: a variable's value on the host, by the backend's cheapest read.

The callbacks' per-batch hooks read a few variables: the monitor's ring and
its count, the step counter, and (every few dozen steps) every weight for a
snapshot. Under TensorFlow `Variable.numpy()` runs two eager ops (a read
and an identity) through Python dispatch, and `ops.convert_to_numpy` more:
on this project's 2-core machine about 150 us and 250 us a variable,
against about 50 us for the read op alone (`tf.raw_ops.ReadVariableOp`,
TensorFlow's public raw-op API). A guard that read three variables a step
paid about 0.5 ms of a 20 ms LSTM step for them, and a snapshot of a
42-variable MLP with Adam (126 variables) 28 ms.

Only a plain TensorFlow resource variable read eagerly takes the short
path; a `tf.distribute` variable, a read inside a `tf.function`, JAX and
torch go through `Variable.numpy()` as before. Both give the same array.
"""

from __future__ import annotations

import keras
import numpy as np


def to_numpy(variable) -> np.ndarray:
    """A numpy copy of a `keras.Variable`'s value (or of a backend variable).

    Args:
        variable: a `keras.Variable`, or the backend variable it holds.

    Returns:
        A numpy array (a numpy scalar for a scalar variable).
    """
    value = getattr(variable, "value", variable)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf  # loaded already: the backend is TensorFlow

        # A variable Keras created inside the first traced step (an
        # optimizer's) is a subclass of tf.Variable; a `tf.distribute`
        # one is also a `DistributedValues`, and keeps the general path.
        if (isinstance(value, tf.Variable)
                and not isinstance(value, tf.distribute.DistributedValues)
                and tf.executing_eagerly()):
            return tf.raw_ops.ReadVariableOp(
                resource=value.handle, dtype=value.dtype
            ).numpy()
    return np.asarray(keras.ops.convert_to_numpy(value))


def to_int(variable) -> int:
    """A scalar integer variable's value (a step counter, a count)."""
    return int(to_numpy(variable))


COMPILE_AFTER = 3  # reads of the same variables before they get a compiled reader


def read_many(variables, holder) -> list[np.ndarray]:
    """Numpy copies of many variables (a snapshot's weights and optimizer state).

    Under TensorFlow each eager read is an op dispatched from Python (~60 us
    on this project's machine): a snapshot of a 15-layer MLP with Adam (92
    variables) took ~7 ms, and NaNGuard takes 4 a epoch, so a fit of 30
    short steps paid ~0.1 s for them. From the `COMPILE_AFTER`-th read of the
    same list on, one compiled function reads them all (~1 ms). It is kept
    on `holder` (the model, past Keras' attribute tracking: not a layer,
    variable or saved state), so a later `fit` with fresh callbacks reuses
    it; a new list (a recompile, a new optimizer) starts the count again.
    Tracing it costs ~0.2 s once, which is why the first reads stay eager.
    JAX, torch and `tf.distribute` variables are read one by one (`to_numpy`).

    Args:
        variables: `keras.Variable`s.
        holder: the object the compiled reader lives on (the model).

    Returns:
        One array per variable, equal to `to_numpy(variable)`.
    """
    variables = list(variables)
    values = [getattr(v, "value", v) for v in variables]
    if keras.backend.backend() != "tensorflow":
        return [to_numpy(v) for v in variables]
    import tensorflow as tf

    if not tf.executing_eagerly() or not all(
            isinstance(v, tf.Variable) and not isinstance(v, tf.distribute.DistributedValues)
            for v in values):
        return [to_numpy(v) for v in variables]
    key = tuple(id(v) for v in values)
    cache = getattr(holder, "_gradguard_reader", None)
    if cache is None or cache[0] != key:
        cache = [key, 0, None]  # the list, reads so far, the compiled reader
        object.__setattr__(holder, "_gradguard_reader", cache)
    cache[1] += 1
    if cache[2] is None and cache[1] >= COMPILE_AFTER:
        # Called as a concrete function: the polymorphic call's dispatch
        # hashes every captured variable, ~0.4 ms of a ~1 ms read of the
        # 20-layer MLP's 129 variables.
        cache[2] = tf.function(
            lambda: [tf.identity(v) for v in values], autograph=False
        ).get_concrete_function()
    if cache[2] is None:
        return [to_numpy(v) for v in variables]
    return [t.numpy() for t in cache[2]()]
