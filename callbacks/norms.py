"""Pure helpers for gradient norms and clipping, written with `keras.ops`.

They run inside the compiled train step (TensorFlow graph, XLA, JAX jit) as
well as eagerly, and hold no state: the optimizer wrapper that calls them owns
the variables.

**Sparse gradients.** Under TensorFlow the gradient of a gather (an
`Embedding`, `ops.take`) is a `tf.IndexedSlices`: rows `values` for the
rows `indices` of the variable, where an index repeats once per occurrence
(a token twice in a batch). The gradient is the densified sum, so its norm
is not the norm of `values`. `combine_duplicates` sums repeated rows first;
after that every helper here sees the norm and elements of the densified
gradient. The update itself gets the slices as given, as in plain Keras
(`monitor_step.measure`): Keras' Adam and RMSprop update a repeated row
once per occurrence, so summing the rows first would change training.
"""

from __future__ import annotations

from typing import Sequence

from keras import ops


def is_sparse(g) -> bool:
    """True for a `tf.IndexedSlices` gradient (checked without importing TF)."""
    return type(g).__name__ == "IndexedSlices" and hasattr(g, "indices")


def map_values(g, fn):
    """Applies `fn` to a gradient, or to the `values` of an `IndexedSlices`."""
    if g is None:
        return None
    if is_sparse(g):
        import tensorflow as tf

        return tf.IndexedSlices(fn(g.values), g.indices, g.dense_shape)
    return fn(g)


def combine_duplicates(g):
    """An `IndexedSlices` whose repeated indices are summed into one row.

    The result has as many rows as `g` (a static shape, so it compiles under
    XLA): one per distinct index, in ascending order, then rows of zeros
    (index 0) that change neither the densified gradient nor any norm or
    element-wise clip. Dense gradients and `None` are returned unchanged.

    Args:
        g: a gradient: tensor, `tf.IndexedSlices` or `None`.

    Returns:
        The same gradient, with each index of an `IndexedSlices` once.
    """
    if not is_sparse(g):
        return g
    import tensorflow as tf  # only TensorFlow makes IndexedSlices

    indices = g.indices
    order = tf.argsort(indices, stable=True)
    ordered = tf.gather(indices, order)
    previous = tf.concat([ordered[:1] - 1, ordered[:-1]], axis=0)
    starts = tf.not_equal(ordered, previous)
    segment = tf.cumsum(tf.cast(starts, "int32")) - 1
    n = tf.shape(indices)[0]
    values = tf.math.unsorted_segment_sum(tf.gather(g.values, order), segment, n)
    unique = tf.math.unsorted_segment_sum(
        tf.where(starts, ordered, tf.zeros_like(ordered)), segment, n
    )
    return tf.IndexedSlices(values, unique, g.dense_shape)


def squared_norms(grads: Sequence) -> list:
    """Returns the squared L2 norm of each gradient tensor (float32 scalars).

    A `None` gradient (a variable the loss does not depend on) gives 0. An
    `IndexedSlices` must have had its duplicates combined
    (`combine_duplicates`); its norm is then that of its `values`.
    """
    out = []
    for g in grads:
        if g is None:
            out.append(ops.zeros((), dtype="float32"))
        else:
            g = ops.cast(g.values if is_sparse(g) else g, "float32")
            out.append(ops.sum(g * g))
    return out


def variable_norms(grads: Sequence) -> list:
    """Returns the L2 norm of each gradient tensor, as float32 scalars.

    A `None` gradient (a variable the loss does not depend on) has norm 0.

    Args:
        grads: list of gradient tensors or `None`.

    Returns:
        A list of float32 scalars, one per gradient.
    """
    return [ops.sqrt(s) for s in squared_norms(grads)]


def global_norm(norms) -> object:
    """Combines per-variable norms into the global norm sqrt(sum(n_i^2)).

    Args:
        norms: a 1-D tensor (or list of scalars) of per-variable L2 norms.

    Returns:
        A float32 scalar. NaN or inf when any input is.
    """
    norms = ops.convert_to_tensor(norms, dtype="float32")
    return ops.sqrt(ops.sum(ops.square(norms)))


def clipped_global_norm(
    grads: Sequence,
    norms,
    norm,
    *,
    clipnorm: float | None = None,
    clipvalue: float | None = None,
    global_clipnorm: float | None = None,
) -> object:
    """The global norm the gradients will have after Keras' clipping.

    Mirrors `keras.optimizers.Optimizer._clip_gradients`: `clipnorm` clips
    each variable's gradient to norm `clipnorm` (so its norm becomes
    `min(n_i, clipnorm)`), `global_clipnorm` rescales all of them together
    (the global norm becomes `min(norm, global_clipnorm)`), `clipvalue` clips
    each element to `[-clipvalue, clipvalue]`. Only the element-wise mode needs
    another pass over the gradients; the other two reuse `norms`.

    Args:
        grads: list of gradient tensors or `None`.
        norms: 1-D float32 tensor of per-variable norms of `grads`.
        norm: float32 scalar, the global norm of `grads`.
        clipnorm: per-variable threshold, or `None`.
        clipvalue: per-element threshold, or `None`.
        global_clipnorm: global threshold, or `None`.

    Returns:
        A float32 scalar.
    """
    if clipnorm and clipnorm > 0:
        return global_norm(ops.minimum(norms, clipnorm))
    if global_clipnorm and global_clipnorm > 0:
        return ops.minimum(norm, global_clipnorm)
    if clipvalue and clipvalue > 0:
        # Clipped as given (Keras clips an IndexedSlices row by row), then
        # densified: the norm of what the update adds.
        clipped = [
            combine_duplicates(map_values(g, lambda v: ops.clip(v, -clipvalue, clipvalue)))
            for g in grads
        ]
        return global_norm(ops.stack(variable_norms(clipped)))
    return norm


def scale_by_threshold(grads: Sequence, norm, threshold) -> list:
    """Rescales gradients so that their global norm is at most `threshold`.

    Args:
        grads: list of gradient tensors or `None`.
        norm: float32 scalar, their global norm.
        threshold: float32 scalar; `inf` leaves the gradients unchanged.

    Returns:
        The rescaled gradients (same dtypes as the inputs).
    """
    safe_norm = ops.where(norm > 0, norm, 1.0)
    scale = ops.where(norm > threshold, threshold / safe_norm, 1.0)
    return [map_values(g, lambda v: v * ops.cast(scale, v.dtype)) for g in grads]


def ring_percentile(buffer, count, window: int, percentile: float) -> object:
    """Percentile of the finite values among the newest entries of a ring.

    The ring buffer holds step `s` at slot `s % len(buffer)`; `count` steps
    have been written. The newest `min(count, window)` entries are used and
    non-finite ones ignored. Interpolation is linear, as `numpy.percentile`'s
    default. With no finite entry the result is `inf` (clip nothing).

    Args:
        buffer: 1-D float32 tensor (the ring).
        count: int scalar, number of entries written so far.
        window: how many of the newest entries to use (<= len(buffer)).
        percentile: in [0, 100].

    Returns:
        A float32 scalar.
    """
    size = buffer.shape[0]
    slots = ops.arange(size, dtype="int32")
    count = ops.cast(count, "int32")
    newest = ops.mod(count - 1, size)
    age = ops.mod(newest - slots, size)
    used = ops.logical_and(
        age < ops.minimum(count, window), ops.isfinite(buffer)
    )
    n = ops.sum(ops.cast(used, "int32"))
    big = ops.full((size,), float("inf"), dtype="float32")
    ordered = ops.sort(ops.where(used, buffer, big))
    position = percentile / 100.0 * ops.cast(ops.maximum(n - 1, 0), "float32")
    low = ops.cast(ops.floor(position), "int32")
    high = ops.minimum(low + 1, ops.maximum(n - 1, 0))
    low_value = ops.take(ordered, low)
    high_value = ops.take(ordered, high)
    frac = position - ops.cast(low, "float32")
    value = low_value + frac * (high_value - low_value)
    # inf - inf would give NaN when n == 1 and high == low: guard it.
    value = ops.where(high == low, low_value, value)
    return ops.where(n > 0, value, float("inf"))
