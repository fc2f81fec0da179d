"""NaNGuard's moment reset and batch skip, on a real divergence (a SimpleRNN under SGD)."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from gradguard.callbacks import NaNGuard
from gradguard.callbacks.attach import find_monitor
from gradguard.callbacks.gradient_record import DISCARDED
from gradguard.callbacks.guard_actions import moment_slots, reset_moments
from tests.callbacks.helpers import WeightsPerStep, adding_data


class Moments(keras.callbacks.Callback):
    """The optimizer's moment slots after every batch (put it after the guard)."""

    def on_train_begin(self, logs=None):
        self.after = []

    def on_train_batch_end(self, batch, logs=None):
        self.after.append([np.array(v) for v in moment_slots(self.model.optimizer)])


def test_rollback_resets_moments_and_skips_the_next_batches(tmp_path):
    # SGD with momentum at lr 0.1 on the adding problem: the recurrent
    # kernel's norm spikes ~2700x its median at step 9.
    x, y = adding_data(1024, 100)
    model = keras.Sequential([
        keras.Input((100, 2)), keras.layers.SimpleRNN(32, name="rnn"),
        keras.layers.Dense(1, name="head"),
    ])
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.5), loss="mse")
    keep, moments = WeightsPerStep(), Moments()
    # min_history=2: the spike gate judges from step 3 (the early rule's
    # absolute evidence, steps 1-2 only, would otherwise catch the growth
    # before step 9's spike).
    guard = NaNGuard(action="rollback", reset_moments=True, skip_batches=3,
                     max_retries=1, snapshot_every=1, verbose=False, min_history=2,
                     report_path=tmp_path / "report.json")
    model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0,
              callbacks=[guard, keep, moments])  # keep and moments see what the guard left
    assert all(np.isfinite(w).all() for w in model.get_weights())
    event = guard.events[0]
    assert event["trigger"] == "gradient_spike" and event["action"] == "rollback"
    step = event["step"]  # 1-based step = batch + 1 in the first epoch
    # Moments: zero right after the rollback, and each slot was reset.
    assert sorted(event["moments_reset"]) == sorted(v.path for v in moment_slots(model.optimizer))
    assert all(not m.any() for m in moments.after[step - 1])
    assert any(m.any() for m in moments.after[step - 2])  # they were not zero before
    # The next three batches were consumed but not learned from.
    skipped = [(s["epoch"], s["batch"]) for s in event["skipped_batches"]]
    assert skipped == [(0, step), (0, step + 1), (0, step + 2)]
    assert [s["steps"] for s in event["skipped_batches"]] == [[step + 1], [step + 2], [step + 3]]
    assert guard.skipped_batches == event["skipped_batches"]
    for k in (step + 1, step + 2, step + 3):
        for a, b in zip(keep.weights[k], keep.weights[step]):
            np.testing.assert_array_equal(a, b)
        assert all(not m.any() for m in moments.after[k - 1])  # nothing learned
    assert any(m.any() for m in moments.after[step + 3])  # training went on after them
    record = find_monitor(model.optimizer).read()
    marked = record.status[np.isin(record.steps, [step + 1, step + 2, step + 3])]
    assert (marked == DISCARDED).all()
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["events"][0]["skipped_batches"] == event["skipped_batches"]


@pytest.mark.parametrize("make", [
    lambda: keras.optimizers.Adam(1e-2), lambda: keras.optimizers.AdamW(1e-2),
    lambda: keras.optimizers.RMSprop(1e-2), lambda: keras.optimizers.Adagrad(1e-2),
])
def test_reset_moments_sets_every_slot_back_and_keeps_the_step(make):
    rng = np.random.default_rng(0)
    weights = [keras.Variable(rng.normal(size=(4, 3)).astype("float32")),
               keras.Variable(np.zeros(3, "float32"))]
    optimizer = make()
    for _ in range(4):
        optimizer.apply([rng.normal(size=w.shape).astype("float32") for w in weights], weights)
    start = getattr(optimizer, "initial_accumulator_value", 0.0) \
        if isinstance(optimizer, keras.optimizers.Adagrad) else 0.0
    assert any(np.any(np.array(v) != start) for v in moment_slots(optimizer))
    paths = reset_moments(optimizer)
    assert len(paths) >= len(weights)
    for v in moment_slots(optimizer):
        np.testing.assert_array_equal(np.array(v), np.full(v.shape, start, "float32"))
    assert int(optimizer.iterations.numpy()) == 4


def test_skip_batches_needs_rollback():
    with pytest.raises(ValueError, match=r"NaNGuard received skip_batches=5 with "
                       r"action='stop'; batches are skipped after a rollback only"):
        NaNGuard(skip_batches=5)
    with pytest.raises(ValueError, match=r"NaNGuard received skip_batches=-1; expected an int >= 0\."):
        NaNGuard(action="rollback", skip_batches=-1)
