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
