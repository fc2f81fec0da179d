"""Rollback correctness: the weights restored are from before the onset, checked per step."""

import keras
import numpy as np
import pytest

from gradguard.callbacks import NaNGuard
from gradguard.callbacks.attach import find_monitor
from tests.callbacks.helpers import WeightsPerStep
from tests.callbacks.test_nan_guard_causes import _setup


class AtEvent(keras.callbacks.Callback):
    """The model's weights right after each NaNGuard event (runs after the guard)."""

    def __init__(self, guard):
        super().__init__()
        self.guard, self.weights = guard, []

    def on_train_batch_end(self, batch, logs=None):
        if len(self.guard.events) > len(self.weights):
            self.weights.append(self.model.get_weights())


@pytest.mark.parametrize("keep_snapshots", [2, 8])
def test_rollback_restores_weights_from_before_the_onset(keep_snapshots):
    # SGD(1.0): the norm is 725x the first at step 5, onset step 1. With 2
    # copies kept (steps 3 and 4), both are after the onset: the fit's first
    # copy (step 0) is restored, never step 3 (issue 29: onset 40, restored 41).
    x, y, model, optimizer, batch_size = _setup("learning_rate")
    model.compile(optimizer=optimizer, loss="mse")
    guard = NaNGuard(action="rollback", max_retries=1, snapshot_every=1,
                     keep_snapshots=keep_snapshots, verbose=False)
    keep, at = WeightsPerStep(), AtEvent(guard)
    history = model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0,
                        callbacks=[keep, guard, at])
    event = guard.events[0]
    assert event.action == "rollback"
    assert event.restored_step is not None and event.restored_step < event.onset_step
    for a, b in zip(at.weights[0], keep.weights[event.restored_step]):
        np.testing.assert_array_equal(a, b)
    # The cut is visible where users read it: the optimizer, History and the guard.
    rate = 1.0 * 0.5 ** len([e for e in guard.events if e.action == "rollback"])  # SGD(1.0) cut
    assert float(model.optimizer.learning_rate) == pytest.approx(rate)
    assert find_monitor(model.optimizer).lr_multiplier == 1.0  # a number: set, not multiplied
    assert history.history["learning_rate"][-1] == pytest.approx(rate)
    assert guard.learning_rate == pytest.approx(rate)


class LazyNet(keras.Model):
    """Built at its first batch, as keras-io's RecommenderNet: no weights at `on_train_begin`."""

    def __init__(self):
        super().__init__()
        self.hidden = keras.layers.Dense(16, activation="relu")
        self.out = keras.layers.Dense(1)

    def call(self, x):
        return self.out(self.hidden(x))


def test_a_stop_on_a_model_built_at_its_first_batch_says_what_it_holds():
    """No copy exists before its first step (it has no weights at on_train_begin).

    The guard used to keep that empty copy and raise in `set_weights` on a
    stop (keras-io's collaborative filtering at lr x1000). Now it stops, says
    it restored nothing, and the model holds the step's weights as it says.
    """
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 4)).astype("float32")
    y = x.sum(axis=1, keepdims=True)
    model = LazyNet()
    model.compile(optimizer=keras.optimizers.SGD(50.0), loss="mse")
    per_step = WeightsPerStep()
    guard = NaNGuard()
    model.fit(x, y, epochs=2, batch_size=16, verbose=0, shuffle=False, callbacks=[per_step, guard])
    (event,) = guard.events
    assert event.action == "stop" and event.restored_step is None
    assert f"holds the weights after step {event.step} (including step {event.step}'s update)" in event.message
    for ours, theirs in zip(model.get_weights(), per_step.weights[event.step], strict=True):
        np.testing.assert_array_equal(ours, theirs)
