"""NaNGuard in a custom training loop, the Keras guide's pattern (GradientTape + CallbackList)."""

import keras
import numpy as np
import tensorflow as tf

from gradguard.callbacks import NaNGuard
from tests.callbacks.helpers import tanh_data


def _train(x, y, guard, epochs=2, lr=1e-2, observe=True):
    """The guide's loop: on_train_begin, per epoch and batch the callbacks, the loss per batch."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((x.shape[1],)), keras.layers.Dense(16, activation="tanh"),
                              keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="mse")
    loss_fn = keras.losses.MeanSquaredError()
    callbacks = keras.callbacks.CallbackList([guard], model=model)  # no params
    callbacks.on_train_begin()
    optimizer = model.optimizer  # the guard's monitor wraps it in on_train_begin
    losses = []
    for epoch in range(epochs):
        callbacks.on_epoch_begin(epoch)
        for step in range(len(x) // 32):
            xb, yb = x[step * 32:(step + 1) * 32], y[step * 32:(step + 1) * 32]
            callbacks.on_train_batch_begin(step)
            with tf.GradientTape() as tape:
                loss = loss_fn(yb, model(xb, training=True))
            grads = tape.gradient(loss, model.trainable_weights)
            optimizer.apply(grads, model.trainable_weights)
            if observe:
                guard.observe_batch(xb, yb)
            losses.append(float(loss))
            callbacks.on_train_batch_end(step, {"loss": float(loss)})  # per batch
            if model.stop_training:
                break
        callbacks.on_epoch_end(epoch, {})
        if model.stop_training:
            break
    callbacks.on_train_end()
    return model, losses


def test_a_healthy_custom_loop_gets_no_event():
    # The loss is per batch: read as Keras' running mean it would give false
    # "has not fallen" evidence; NaNGuard sees no params and takes it per batch.
    x, y = tanh_data()
    guard = NaNGuard(verbose=False)
    model, losses = _train(x, y, guard)
    assert guard.events == [] and guard._per_batch_loss
    assert losses[-1] < losses[0]


def test_a_nan_after_convergence_is_bad_data_by_replay_and_skipped():
    # The issue's custom loop: a NaN after convergence was "input_scale up to
    # 2.83e+08x" of a 4.5e-9 norm; one bad batch is bad data, skipped.
    x, y = tanh_data()
    x[32 * 5 + 3, 1] = np.nan  # batch 5, each epoch
    guard = NaNGuard(verbose=False)
    model, _ = _train(x, y, guard, epochs=2)
    first = guard.events[0]
    assert (first.step, first.cause, first.method, first.action) == (6, "bad_data", "replay", "skip")
    assert [e.action for e in guard.events] == ["skip", "skip"]
    assert all(np.isfinite(w).all() for w in model.get_weights())
    # No ratio over rounding noise is claimed (NORM_FLOOR).
    assert all(s["ratio"] < 1e6 for s in first.suspects)


def test_without_the_batch_the_rules_decide():
    x, y = tanh_data()
    x[32 * 5 + 3, 1] = np.nan
    guard = NaNGuard(verbose=False)
    _train(x, y, guard, epochs=1, observe=False)
    assert (guard.events[0].cause, guard.events[0].method) == ("bad_data", "rules")


def test_a_running_mean_that_carries_a_skipped_nan_is_no_new_event():
    # The keras-io guide's loop passes its own running keras.metrics.Mean,
    # which keeps a skipped batch's NaN for the rest of the epoch (fit resets
    # its own). That NaN is the bad batch already skipped, not a new event:
    # it was named input_scale and stopped training (issue 29).
    x, y = tanh_data()
    x[32 * 2 + 3, 1] = np.nan  # batch 2 of each epoch
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="tanh"),
                              keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    guard = NaNGuard(verbose=False)
    steps = len(x) // 32
    callbacks = keras.callbacks.CallbackList([guard], model=model, epochs=2, steps=steps)
    callbacks.on_train_begin()
    running, nan_logged = keras.metrics.Mean(), 0
    for epoch in range(2):
        callbacks.on_epoch_begin(epoch)
        running.reset_state()
        for step in range(steps):
            xb, yb = x[step * 32:(step + 1) * 32], y[step * 32:(step + 1) * 32]
            callbacks.on_train_batch_begin(step)
            guard.observe_batch(xb, yb)
            with tf.GradientTape() as tape:
                loss = keras.losses.MeanSquaredError()(yb, model(xb, training=True))
            grads = tape.gradient(loss, model.trainable_weights)
            model.optimizer.apply(grads, model.trainable_weights)
            running.update_state(loss)
            nan_logged += not np.isfinite(float(running.result()))
            callbacks.on_train_batch_end(step, {"loss": float(running.result())})
        callbacks.on_epoch_end(epoch, {})
    callbacks.on_train_end()
    assert not guard._per_batch_loss and nan_logged == 2 * (steps - 2)  # the carry happened
    assert [(e.cause, e.action) for e in guard.events] == [("bad_data", "skip")] * 2
    assert not model.stop_training
    assert all(np.isfinite(w).all() for w in model.get_weights())
