"""`gradient_accumulation_steps` on the inner optimizer: one row per micro-batch.

The monitor records each micro-batch's gradient (the norm the tape gives
for that batch), numbers steps by micro-batch, and leaves the update to
Keras: every n-th micro-batch the average of the n gradients is clipped by
the optimizer's `clipnorm`/`clipvalue`/`global_clipnorm` and applied. A
non-finite micro-batch is skipped: it adds nothing to the average, and the
update still falls on the n-th micro-batch. Checked against a replay with
GradientTape and numpy.
"""

import keras
import numpy as np
import pytest

from gradguard.callbacks import AutoClip, GradientMonitor, GradientNormLogger, NaNGuard
from gradguard.callbacks.attach import find_monitor
from tests.callbacks.dense_tape import clip, dense_gradients, global_norm
from tests.callbacks.helpers import dense_model, regression_data

LR = 0.1
BATCH = 8
ACCUMULATE = 4


def _replay(weights, x, y, steps, mode=None, value=None, skip=()):
    """Micro-batch norms, then the weights after `steps` micro-batches."""
    model = dense_model()
    model.set_weights(weights)
    loss_fn = keras.losses.MeanSquaredError()
    norms, total = [], None
    for step in range(steps):
        xb, yb = x[step * BATCH:(step + 1) * BATCH], y[step * BATCH:(step + 1) * BATCH]
        grads = dense_gradients(model, loss_fn, xb, yb)
        norms.append(global_norm(grads))
        if step + 1 in skip:
            grads = [np.zeros_like(g) for g in grads]
        total = grads if total is None else [t + g for t, g in zip(total, grads)]
        if (step + 1) % ACCUMULATE == 0:
            update = clip([t / ACCUMULATE for t in total], mode, value)
            for v, g in zip(model.trainable_variables, update):
                v.assign(v.numpy() - LR * g)
            total = None
    return np.array(norms), model.get_weights()


def _fit(callbacks, x, y, compiled_monitor=False, **sgd_kwargs):
    model = dense_model()
    optimizer = keras.optimizers.SGD(
        LR, gradient_accumulation_steps=ACCUMULATE, **sgd_kwargs
    )
    if compiled_monitor:
        optimizer = GradientMonitor(optimizer)
    model.compile(optimizer=optimizer, loss="mse")
    weights = model.get_weights()
    model.fit(x, y, batch_size=BATCH, shuffle=False, verbose=0, callbacks=callbacks)
    return model, weights


@pytest.mark.parametrize("variant", [
    "logger", "global_clipnorm",
    pytest.param("nan_guard", marks=pytest.mark.slow),
    pytest.param("compiled", marks=pytest.mark.slow),
])
def test_micro_batch_norms_and_weights_match_the_tape(variant):
    x, y = regression_data((8,), n=8 * BATCH)
    y = y * 5
    logger = GradientNormLogger()
    callbacks = [logger] + ([NaNGuard(verbose=False)] if variant == "nan_guard" else [])
    kwargs = {"global_clipnorm": 0.5} if variant == "global_clipnorm" else {}
    model, weights = _fit(callbacks, x, y, compiled_monitor=variant == "compiled", **kwargs)
    norms, replayed = _replay(weights, x, y, 8, *(("global_clipnorm", 0.5) if kwargs else ()))
    table = logger.to_dataframe("global")
    assert table["step"].tolist() == list(range(1, 9))  # one row per micro-batch
    np.testing.assert_allclose(table["grad_norm"], norms, rtol=1e-5)
    for got, want in zip(model.get_weights(), replayed):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert int(model.optimizer.iterations.numpy()) == 2  # Keras' count: updates
    for callback in callbacks[1:]:
        assert callback.events == []


def test_a_nonfinite_micro_batch_adds_nothing_and_the_update_still_falls_on_time():
    x, y = regression_data((8,), n=8 * BATCH)
    y[2 * BATCH] = np.nan  # micro-batch 3 of the first update
    guard = NaNGuard(action="rollback", verbose=False)
    model, weights = _fit([guard], x, y)
    _, replayed = _replay(weights, x, y, 8, skip=(3,))
    for got, want in zip(model.get_weights(), replayed):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    record = find_monitor(model.optimizer).read()
    assert record.status.tolist() == [0, 0, 1, 0, 0, 0, 0, 0]
    assert guard.events[0]["step"] == 3 and guard.events[0]["cause"] == "bad_data"


@pytest.mark.slow
def test_autoclip_clips_each_micro_batch_before_it_is_accumulated():
    x, y = regression_data((8,), n=8 * BATCH)
    last = {}

    class Record(keras.callbacks.Callback):
        def on_train_end(self, logs=None):
            last["record"] = find_monitor(self.model.optimizer).read()

    model, weights = _fit([Record(), AutoClip(percentile=50.0)], x, y)
    record = last["record"]
    norms, _ = _replay(weights, x, y, 8)
    np.testing.assert_allclose(record.norm, norms, rtol=1e-5)
    thresholds = [np.percentile(norms[:i + 1], 50) for i in range(8)]
    np.testing.assert_allclose(record.threshold, thresholds, rtol=1e-5)
    np.testing.assert_allclose(record.norm_clipped, np.minimum(norms, thresholds), rtol=1e-5)
