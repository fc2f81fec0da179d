"""What NaNGuard measures on the model for its diagnosis (Keras in, numbers out)."""

from __future__ import annotations

import keras
import numpy as np

from .structure_signs import kernel_gains, ungated_recurrent_gain

# MultiHeadAttention's einsum kernels: their fan-in is not "every axis but the last".
EINSUM_KERNELS = ("query", "key", "value", "attention_output")


# Layers that rescale what they receive to unit scale: a kernel whose
# output goes only into one of them amplifies nothing downstream. (Not
# SpectralNormalization: it wraps a layer and normalizes that layer's own
# kernel, not the input it receives.)
NORMALIZATIONS = ("BatchNormalization", "LayerNormalization", "GroupNormalization",
                  "RMSNormalization", "UnitNormalization")


def normalized_kernels(model) -> set[str]:
    """Paths of the kernels whose layer feeds only normalization layers.

    Read from the model's graph (a `Sequential` or functional model; a
    subclassed model has none, so nothing is excluded). A convolution
    stack at init gain 3 with BatchNormalization after each layer has
    gains that multiply to 3**8 and learns like a Glorot one: its
    normalizations undo each gain.
    """
    out = set()
    for layer in model._flatten_layers(include_self=False):
        kernel = getattr(layer, "kernel", None)
        nodes = getattr(layer, "_outbound_nodes", None) or []
        if kernel is None or not nodes:
            continue
        if all(type(n.operation).__name__ in NORMALIZATIONS for n in nodes):
            out.add(kernel.path)
    return out


def _reader(values):
    """`variable -> numpy array`: from `values` (`{id(variable): array}`) or a host read."""
    if values is None:
        return keras.ops.convert_to_numpy
    return lambda v: values[id(v)]


def initial_gains(model, values=None) -> tuple[list[float], float | None]:
    """The kernels' gains and the ungated recurrent kernels' largest singular value.

    Taken when a fit starts: the `depth` and `recurrence` evidence. Dense
    and convolution kernels count; attention's einsum kernels (whose fan-in
    is not "every axis but the last") and embeddings do not; a GRU's or
    LSTM's gated recurrent kernel does not either (`ungated_recurrent_gain`),
    nor does a kernel whose layer feeds only a normalization layer
    (`normalized_kernels`). `values`: `{id(variable): array}` (a host
    copy already made, e.g. NaNGuard's first snapshot), or `None` to read
    the variables.
    """
    variables, read = model.trainable_variables, _reader(values)
    normalized = normalized_kernels(model)
    gains = kernel_gains([
        read(v) for v in variables
        if v.path.endswith("kernel") and "recurrent" not in v.path
        and v.path not in normalized
        and not any(f"/{p}/" in f"/{v.path}" for p in EINSUM_KERNELS)
    ])
    recurrent = ungated_recurrent_gain([
        read(v) for v in variables if v.path.endswith("recurrent_kernel")
    ])
    return gains, recurrent


def input_columns(model, paths) -> tuple[int, int, int] | None:
    """`(kernel, bias, fan_in)` of the model's first kernel in the record's columns.

    `None` when that kernel's layer feeds only normalization layers: a
    BatchNormalization after it removes the batch mean, so the bias's
    gradient is rounding noise and the kernel/bias ratio says nothing of
    the inputs' scale (healthy Conv2D + BatchNormalization nets on
    unit-scale inputs read "input_scale").
    """
    first = next((v for v in model.trainable_variables
                  if v.path.endswith("kernel") and len(v.shape) >= 2
                  and "recurrent" not in v.path), None)
    if first is None or first.path not in paths or first.path in normalized_kernels(model):
        return None
    bias = first.path[: -len("kernel")] + "bias"
    if bias not in paths:
        return None
    return paths.index(first.path), paths.index(bias), int(np.prod(first.shape[:-1]))


def weights_norm(model, values=None) -> float:
    """The global norm of the trainable weights (a host copy; `values` as `initial_gains`)."""
    read = _reader(values)
    return float(np.sqrt(sum(
        np.sum(np.square(np.asarray(read(v), dtype=np.float64)))
        for v in model.trainable_variables)))


def to_float(value) -> float:
    return float(keras.ops.convert_to_numpy(value))
