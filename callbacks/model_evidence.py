"""What NaNGuard measures on the model for its diagnosis (Keras in, numbers out)."""

from __future__ import annotations

import keras
import numpy as np

from .diagnosis import kernel_gains, ungated_recurrent_gain

# MultiHeadAttention's einsum kernels: their fan-in is not "every axis but the last".
EINSUM_KERNELS = ("query", "key", "value", "attention_output")


def initial_gains(model) -> tuple[list[float], float | None]:
    """The kernels' gains and the ungated recurrent kernels' largest singular value.

    Taken when a fit starts: the `depth` and `recurrence` evidence. Dense
    and convolution kernels count; attention's einsum kernels (whose fan-in
    is not "every axis but the last") and embeddings do not; a GRU's or
    LSTM's gated recurrent kernel does not either (`ungated_recurrent_gain`).
    """
    variables = model.trainable_variables
    gains = kernel_gains([
        keras.ops.convert_to_numpy(v) for v in variables
        if v.path.endswith("kernel") and "recurrent" not in v.path
        and not any(f"/{p}/" in f"/{v.path}" for p in EINSUM_KERNELS)
    ])
    recurrent = ungated_recurrent_gain([
        keras.ops.convert_to_numpy(v)
        for v in variables if v.path.endswith("recurrent_kernel")
    ])
    return gains, recurrent


def input_columns(model, paths) -> tuple[int, int, int] | None:
    """`(kernel, bias, fan_in)` of the model's first kernel in the record's columns."""
    first = next((v for v in model.trainable_variables
                  if v.path.endswith("kernel") and len(v.shape) >= 2
                  and "recurrent" not in v.path), None)
    if first is None or first.path not in paths:
        return None
    bias = first.path[: -len("kernel")] + "bias"
    if bias not in paths:
        return None
    return paths.index(first.path), paths.index(bias), int(np.prod(first.shape[:-1]))


def weights_norm(model) -> float:
    """The global norm of the trainable weights (a host copy)."""
    return float(np.sqrt(sum(
        np.sum(np.square(keras.ops.convert_to_numpy(v).astype(np.float64)))
        for v in model.trainable_variables)))


def to_float(value) -> float:
    return float(keras.ops.convert_to_numpy(value))
