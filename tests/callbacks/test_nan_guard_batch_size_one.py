"""NaNGuard at batch size 1: per-example norms range over orders of magnitude.

The set-up is AUTOTRAINER's Oscillating_Loss_Case (Zhang et al., ICSE 2021):
make_blobs' three classes at their raw scale (about +-15), Dense(50, relu) +
Dense(3, softmax), SGD with momentum 0.9, one example per step. At lr 0.001
it learns; at its published 0.01 its loss oscillates (AUTOTRAINER's label).
"""

import keras
import numpy as np
import pytest

from gradguard.benchmarks.autotrainer_demos import make_blobs
from gradguard.callbacks import NaNGuard
from tests.callbacks.helpers import WeightsPerStep


def _blobs_model(lr):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(50, activation="relu"),
                              keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer=keras.optimizers.SGD(lr, momentum=0.9),
                  loss="categorical_crossentropy")
    return model


def _fit(lr, callbacks, epochs):
    x, y = make_blobs(seed=0)
    model = _blobs_model(lr)
    history = model.fit(x[:700], y[:700], batch_size=1, epochs=epochs, shuffle=False,
                        validation_data=(x[700:], y[700:]), verbose=0, callbacks=callbacks)
    return model, history


def test_per_example_steps_that_learn_draw_no_event():
    # Before: its norms reached 82x their running median of 50 at step 82
    # (most examples already classified: norms near 0), the spike gate skipped
    # the step, and the guard stopped the fit with the weights of step 0
    # (validation loss 2.22; the plain fit's 0.02).
    plain, plain_history = _fit(1e-3, [], epochs=2)
    guard = NaNGuard(verbose=False)
    guarded, history = _fit(1e-3, [guard], epochs=2)
    assert guard.events == []
    assert plain_history.history["val_loss"][-1] < 0.1  # it learns
    for a, b in zip(plain.get_weights(), guarded.get_weights()):
        np.testing.assert_array_equal(a, b)  # nothing skipped, nothing changed


@pytest.mark.slow
def test_an_oscillating_loss_keeps_what_it_learned():
    # At lr 0.01 a misclassified example's norm (21) is 50x every norm of
    # the 50 steps before it (classified examples: 1e-14 to 0.4), and such
    # spikes repeat: an event, cause learning_rate. Its onset was the first
    # variable to cross 10x its median, at step 16, and the guard rolled
    # back to step 0 (validation loss 2.22); per-example norms cross 10x
    # their median all the time, so the onset is now the spike itself and
    # the model keeps what it learned.
    keep, guard = WeightsPerStep(), NaNGuard(verbose=False)
    model, history = _fit(1e-2, [keep, guard], epochs=3)
    event = guard.events[-1]
    assert (event.cause, event.action) == ("learning_rate", "stop")
    assert event.step - guard.window <= event.onset_step <= event.step
    held = event.weights["step"]
    assert held >= event.onset_step - 1 - guard._every  # at most one snapshot back
    for a, b in zip(model.get_weights(), keep.weights[held]):
        np.testing.assert_array_equal(a, b)
    assert history.history["val_loss"][-1] < 0.1
    assert "e-07" not in event.cure  # no clip at the norms of classified examples
