"""`tf.distribute` support: reduce first, then measure, clip and skip once.

Keras clips each replica's gradients before it all-reduces them
(`BaseOptimizer._backend_apply_gradients` clips, then the TensorFlow
optimizer's `_backend_update_step` sums over replicas), so under
`MirroredStrategy` a `global_clipnorm=c` bounds each replica's share, not
the update: R replicas can apply up to R x c, in a direction that changes
whenever replicas are clipped by different factors. And a `cond` around the
inner optimizer's all-reduce raises a `merge_call` error in replica context.

The monitor therefore, in replica context with more than one replica:

1. all-reduces the gradients itself (a sum, as Keras does: each replica's
   loss is already divided by the global batch size);
2. measures the norms, decides the skip and clips once, on the reduced
   gradients, identical on every replica and worker;
3. hands each replica `reduced / R` with the inner optimizer's clipping
   switched off, inside a `merge_call` where the conditional update is
   legal; the inner optimizer's own all-reduce sums the shares back to the
   reduced gradient.

JAX's `keras.distribution.DataParallel` needs none of this: the step is one
`jit` over the global batch, so the gradients the monitor sees are already
global.
"""

from __future__ import annotations

import contextlib

import keras
from keras import ops

from . import norms
from .optimizer_chain import accumulation_steps, innermost_optimizer, step_counter

SUPPORTED = ("_DefaultDistributionStrategy", "OneDeviceStrategy",
             "MirroredStrategy", "MultiWorkerMirroredStrategy",
             "CollectiveAllReduceStrategy")


def replica_context():
    """The TensorFlow replica context when there is more than one replica."""
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    if not tf.distribute.has_strategy() or tf.distribute.in_cross_replica_context():
        return None
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync < 2:
        return None
    return context


def apply(monitor, context, grads: list, trainable_variables: list) -> None:
    """`GradientMonitor.apply` in a replica context of several replicas.

    Reduce, then measure, clip and decide the skip once (the same values on
    every replica), then let each replica's inner optimizer apply its share
    `reduced / R` without clipping; its own all-reduce sums the shares back.
    """
    inner = monitor.inner_optimizer
    grads = all_reduce_sum(context, grads)
    # The reduced gradient is clipped here, once: bound the densified update.
    decision, grads, row = monitor.measure(grads, trainable_variables, combine_sparse=True)
    # Under gradient accumulation Keras clips the averaged update, later:
    # leave it to the inner optimizer.
    accumulating = bool(accumulation_steps(inner))
    if not monitor.autoclip_compiled and not accumulating:
        # clip once, the reduced gradients
        grads = innermost_optimizer(inner)._clip_gradients(grads)
    # The same decision as on one device (step_decision.py); a step the
    # loss scaler skips is not counted again here.
    ok = decision.update
    if ok is None:
        ok = ops.convert_to_tensor(True)
    replicas = context.num_replicas_in_sync
    shares = [norms.map_values(g, lambda v: v / replicas) for g in grads]

    def apply_share(shares):
        with contextlib.nullcontext() if accumulating else clipping_off(inner):
            monitor.scaled_update(
                lambda: inner.apply(shares, trainable_variables),
                trainable_variables,
            )

    def update(strategy, shares, ok):
        def run():
            strategy.extended.call_for_each_replica(apply_share, args=(shares,))

        def count_skipped():
            monitor.count_skipped(trainable_variables)

        # A cond around the inner optimizer's all-reduce is legal only here,
        # in cross-replica context.
        ops.cond(first_replica(strategy, ok), run, count_skipped)

    context.merge_call(update, args=(shares, ok))
    monitor.record(row, trainable_variables, step_counter(inner).value)


def all_reduce_sum(context, grads: list) -> list:
    """Sums the gradients over replicas (None entries stay None)."""
    import tensorflow as tf

    present = [g for g in grads if g is not None]
    reduced = iter(context.all_reduce(tf.distribute.ReduceOp.SUM, present))
    return [None if g is None else next(reduced) for g in grads]


def first_replica(strategy, value):
    """A value computed identically on every replica, read in cross-replica context."""
    return strategy.experimental_local_results(value)[0]


@contextlib.contextmanager
def clipping_off(optimizer):
    """Switches the updating optimizer's clipping off while a step is traced."""
    inner = innermost_optimizer(optimizer)
    saved = {a: getattr(inner, a) for a in ("clipnorm", "clipvalue", "global_clipnorm")}
    for name in saved:
        setattr(inner, name, None)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(inner, name, value)


def num_replicas(model) -> int:
    """Replicas in sync under the model's `tf.distribute` strategy (1 otherwise)."""
    if keras.backend.backend() != "tensorflow":
        return 1
    strategy = getattr(model, "distribute_strategy", None)
    return int(getattr(strategy, "num_replicas_in_sync", 1) or 1)


def check_strategy(model, caller: str) -> None:
    """Raises a clear error for a `tf.distribute` strategy gradguard can't serve."""
    if keras.backend.backend() != "tensorflow":
        return
    strategy = getattr(model, "distribute_strategy", None)
    name = type(strategy).__name__ if strategy is not None else None
    if name is None or name in SUPPORTED:
        return
    raise ValueError(
        f"{caller} does not support the distribution strategy {name}; "
        "gradguard supports no strategy, OneDeviceStrategy, MirroredStrategy "
        "and MultiWorkerMirroredStrategy (and keras.distribution.DataParallel "
        "under JAX). Train without gradguard's callbacks under this strategy."
    )


@contextlib.contextmanager
def strategy_scope(model):
    """The model's `tf.distribute` scope, so new optimizer variables are mirrored."""
    strategy = getattr(model, "distribute_strategy", None)
    if keras.backend.backend() != "tensorflow" or strategy is None:
        yield
        return
    with strategy.scope():
        yield
