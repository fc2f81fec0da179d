"""A `cond` that runs as one op: TensorFlow's `If` kept whole.

Inside a `tf.function` TensorFlow lowers every `cond` to a `Switch` per
input and a `Merge` per output, so that each input's consumers can run as
soon as it is ready. For a branch that only assigns state back (the
monitor's undo) that is one `Switch` per variable, run on every step,
taken or not. Kept as a single `If` op, the untaken branch costs one call.
"""

from __future__ import annotations

import keras
from keras import ops


def whole_cond(pred, true_fn, false_fn) -> None:
    """Runs `true_fn()` if `pred` else `false_fn()`, for their effects only.

    Under TensorFlow the `If` op the `cond` makes is marked not to be
    lowered (its inputs are ready before it runs, so nothing waits that
    would not wait anyway); other backends use `keras.ops.cond` as it is.

    Args:
        pred: scalar boolean tensor.
        true_fn: callable, no arguments; what it returns is dropped.
        false_fn: callable, no arguments; what it returns is dropped.
    """
    if keras.backend.backend() != "tensorflow":
        ops.cond(pred, true_fn, false_fn)
        return
    import tensorflow as tf
    from tensorflow.core.framework import attr_value_pb2

    if tf.executing_eagerly():  # (a step run eagerly: nothing to lower)
        ops.cond(pred, true_fn, false_fn)
        return
    graph = tf.compat.v1.get_default_graph()
    known = len(graph.get_operations())
    tf.cond(pred, lambda: _none(true_fn), lambda: _none(false_fn))
    for op in graph.get_operations()[known:]:
        if op.type in ("If", "StatelessIf"):
            try:  # what `cond_v2` itself sets; a TensorFlow without it lowers as before
                op._set_attr(  # noqa: SLF001
                    "_lower_using_switch_merge", attr_value_pb2.AttrValue(b=False)
                )
            except Exception:  # noqa: BLE001  (a speed-up, never a failed trace)
                pass


def _none(fn) -> None:
    fn()
