"""The cause by experiment: the replays' judgment on numbers, then on real models."""

import json

import keras
import numpy as np
import pytest

from gradguard.callbacks import NaNGuard
from gradguard.callbacks.replay import (
    BLOWUP, LR_CUT, Replay, finite_rows, judge_replays, root_mean_square, scale_targets,
    standardize, step_failed,
)
from tests.callbacks.helpers import WeightsPerStep
from tests.callbacks.helpers import tanh_data

NAN = float("nan")


def _r(change, loss, after, finite=True):
    return Replay(change, loss, after, finite)


@pytest.mark.parametrize("loss, after, finite, failed", [
    (1.0, 0.9, True, False),
    (1.0, BLOWUP * 1.01, True, True),
    (1.0, BLOWUP * 0.99, True, False),
    (NAN, 1.0, True, True),
    (1.0, 1.0, False, True),
    (0.0, 1e-9, True, False),  # a converged net's rounding is no blow-up
])
def test_step_failed(loss, after, finite, failed):
    assert step_failed(loss, after, finite) is failed


def test_another_batch_that_trains_names_badtanh_data():
    verdict = judge_replays({"as_given": _r("as_given", NAN, NAN),
                             "other_batch": _r("other_batch", 0.5, 0.4),
                             "lr_x0.1": _r("lr_x0.1", NAN, NAN)}, 11)
    assert verdict.cause == "bad_data"
    assert verdict.evidence == ("replay from the weights after step 11: as given nan -> nan; "
                                "another batch 0.5 -> 0.4; lr x0.1 nan -> nan")


def test_the_first_change_that_removes_the_failure_names_the_cause():
    bad = _r("as_given", 1.0, 1e6)
    ok = _r("lr_x0.1", 1.0, 0.9)
    base = {"as_given": bad, "other_batch": bad}
    assert judge_replays({**base, "inputs_standardized": ok, "lr_x0.1": ok}, 1).cause \
        == "input_scale"
    assert judge_replays({**base, "targets_scaled": ok, "lr_x0.1": ok}, 1).cause \
        == "target_scale"
    assert judge_replays({**base, "lr_x0.1": ok}, 1).cause == "learning_rate"
    assert judge_replays({**base, "lr_x0.1": bad}, 1).cause is None
    # One step cannot test an initialization: a structural cause stands.
    assert judge_replays({**base, "lr_x0.1": ok}, 1, structural="depth").cause is None
    # A step that does not fail as given decides nothing.
    verdict = judge_replays({"as_given": ok}, 1)
    assert verdict.cause is None and "the step alone does not fail" in verdict.evidence


def test_a_finite_batch_that_blows_up_where_another_trains_is_not_badtanh_data():
    """SGD at 0.5 on a plain MLP: one update of a finite batch 2.4 -> 34.7, another's trains."""
    given = _r("as_given", 2.4, 34.7)
    other = _r("other_batch", 3.0, 2.1)
    assert judge_replays({"as_given": given, "other_batch": other,
                          "lr_x0.1": _r("lr_x0.1", 2.4, 1.9)}, 3).cause == "learning_rate"
    assert judge_replays({"as_given": given, "other_batch": other,
                          "lr_x0.1": _r("lr_x0.1", 2.4, 30.0)}, 3).cause is None


def test_a_batch_whose_finite_rows_train_is_bad_data_and_a_tenth_squared_counts():
    nan = _r("as_given", NAN, NAN)
    assert judge_replays({"as_given": nan, "finite_rows": _r("finite_rows", 0.3, 0.2)},
                         0).cause == "bad_data"
    bad = _r("as_given", 1.0, 1e6)
    assert judge_replays({"as_given": bad, "other_batch": bad, "lr_x0.1": bad,
                          "lr_x0.01": _r("lr_x0.01", 1.0, 0.9)}, 0).cause == "learning_rate"


def test_finite_rows():
    x = np.ones((4, 2), "float32")
    y = np.ones((4, 1), "float32")
    x[1, 0], y[3, 0] = np.nan, np.inf
    fx, fy, sw = finite_rows((x, y, None))
    assert fx.shape == (2, 2) and fy.shape == (2, 1) and sw is None
    assert finite_rows((np.ones((3, 2)), np.ones((3, 1)), None)) is None  # nothing to drop
    assert finite_rows((np.full((2, 2), np.nan), np.ones((2, 1)), None)) is None  # none left


def test_batch_statistics():
    x = np.array([[1.0, 1e4], [3.0, 3e4], [np.nan, 2e4]], dtype="float32")
    assert root_mean_square(x) == pytest.approx(np.sqrt((1e8 + 9e8 + 4e8) / 3), rel=1e-6)
    z = standardize(x, [])
    assert np.nanmean(z, axis=0) == pytest.approx([0.0, 0.0], abs=1e-6)
    assert np.nanstd(z[:, 1]) == pytest.approx(1.0, rel=1e-5)
    assert root_mean_square(scale_targets(x)) == pytest.approx(1.0)
    tokens = np.array([[3, 4]], dtype="int32")
    assert standardize(tokens, []) is tokens or (standardize(tokens, []) == tokens).all()


# -- on real models ----------------------------------------------------------


def _mlp(d=8, act="tanh"):
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((d,)), keras.layers.Dense(16, activation=act),
                             keras.layers.Dense(16, activation=act), keras.layers.Dense(1)])


def _fit(x, y, optimizer, guard, epochs=1, act="tanh"):
    model = _mlp(x.shape[1], act)
    model.compile(optimizer=optimizer, loss="mse")
    keep = WeightsPerStep()
    history = model.fit(x, y, batch_size=32, epochs=epochs, shuffle=False, verbose=0,
                        callbacks=[keep, guard])
    return model, keep, history


def test_one_nan_input_is_bad_data_by_replay_skipped_and_training_goes_on():
    x, y = tanh_data()
    x[70, 3] = np.nan  # batch 2 of 8, each epoch
    guard = NaNGuard(verbose=False)
    model, keep, history = _fit(x, y, keras.optimizers.Adam(1e-2), guard, epochs=2)
    first, again = guard.events
    assert (first.step, first.cause, first.method, first.action) == (3, "bad_data", "replay", "skip")
    # The replays: as given non-finite; the batch before, from the same weights, trains.
    replays = {r["change"]: r for r in first.replays}
    assert not np.isfinite(replays["as_given"]["loss"])
    assert np.isfinite(replays["other_batch"]["loss_after"])
    assert replays["other_batch"]["loss_after"] < replays["other_batch"]["loss"] * 10
    assert "another batch" in first.evidence and "found by replay" in first.message
    # The in-run message names the cause on its first line; no line over 120.
    assert first.message.splitlines()[0].startswith(
        "Step 3: NaNGuard caught nonfinite gradient: cause bad_data, action skipped")
    assert max(len(line) for line in first.message.splitlines()) <= 120
    # The repeat is named from the first (no second replay) and skipped too.
    assert (again.epoch, again.cause, again.action) == (1, "bad_data", "skip")
    assert guard.replays_run == 1
    # The skipped step changed nothing, the replay touched nothing: the
    # weights after step 3 are those after step 2; training went on.
    for a, b in zip(keep.weights[3], keep.weights[2]):
        np.testing.assert_array_equal(a, b)
    assert keep.step == 16 and np.isfinite(history.history["loss"]).all()
    assert all(np.isfinite(w).all() for w in model.get_weights())


def test_bad_batches_in_a_row_stop_at_the_stated_cap():
    x, y = tanh_data()
    x[64:160, 0] = np.nan  # batches 2, 3 and 4
    guard = NaNGuard(verbose=False, max_consecutive_bad_batches=2)
    _fit(x, y, keras.optimizers.Adam(1e-2), guard)
    assert [(e.step, e.cause, e.action) for e in guard.events] == [
        (3, "bad_data", "skip"), (4, "bad_data", "skip"), (5, "bad_data", "stop")]
    assert "3 bad batches in a row, over max_consecutive_bad_batches=2" in guard.events[-1].detail


def test_features_far_from_unit_scale_are_input_scale_by_replay():
    x, y = tanh_data()
    x[:, 2] *= 1e4  # one feature x1e4
    guard = NaNGuard(verbose=False)
    _fit(x, y, keras.optimizers.SGD(1e-2), guard, act="relu")
    # Warned at the first step from the batch and a forward pass
    # (off_scale_inputs.py), then the divergence is named by the replay.
    warning = guard.events[0]
    assert (warning.trigger, warning.cause, warning.action, warning.method) == (
        "off_scale_inputs", "input_scale", "warn", "replay")
    event = next(e for e in guard.events if e.action != "warn")
    assert (event.cause, event.method) == ("input_scale", "replay")
    replays = {r["change"]: r for r in event.replays}
    assert not replays["inputs_standardized"]["loss_after"] > 10 * replays["inputs_standardized"]["loss"]


def test_targets_far_from_unit_scale_are_target_scale_by_replay():
    x, y = tanh_data()
    guard = NaNGuard(verbose=False)
    _fit(x, y * 1e5, keras.optimizers.SGD(1e-2), guard, act="relu")
    # Warned at the first step from the batch (target_scale.py), then the
    # divergence it leads to is named by the replay: the two agree.
    warning = guard.events[0]
    assert (warning.trigger, warning.cause, warning.action) == (
        "off_scale_targets", "target_scale", "warn")
    event = next(e for e in guard.events if e.action != "warn")
    assert (event.cause, event.method) == ("target_scale", "replay")
    assert "targets scaled" in event.evidence


def test_a_rate_far_too_high_is_learning_rate_by_replay():
    x, y = tanh_data()
    guard = NaNGuard(verbose=False, snapshot_every=1)
    _fit(x, y, keras.optimizers.SGD(3.0), guard)
    event = guard.events[0]
    assert (event.cause, event.method) == ("learning_rate", "replay")
    replays = {r["change"]: r for r in event.replays}
    cut = replays["lr_x0.1"]
    assert cut["loss_after"] <= 10 * cut["loss"]
    assert f"lr x{LR_CUT:g}" in event.evidence


def test_no_replay_runs_when_nothing_fires():
    x, y = tanh_data()
    guard = NaNGuard(verbose=False)
    _fit(x, y, keras.optimizers.Adam(1e-3), guard, epochs=2)
    assert guard.events == [] and guard.replays_run == 0


def test_a_guard_after_a_replay_deep_copies_and_pickles():
    import copy
    import pickle

    x, y = tanh_data()
    x[70, 3] = np.nan
    guard = NaNGuard(verbose=False)
    _fit(x, y, keras.optimizers.Adam(1e-2), guard)
    for clone in (copy.deepcopy(guard), pickle.loads(pickle.dumps(guard))):
        assert (json.dumps([e.to_dict() for e in clone.events])  # NaN != NaN: as text
                == json.dumps([e.to_dict() for e in guard.events]))
        assert clone.replays_run == 1 and clone.skip_bad_data


def test_the_batch_tap_changes_no_number():
    # The guard draws each batch from Keras' iterator and hands it to Keras'
    # own step: the weights equal those of a guard without the tap, bit for bit.
    x, y = tanh_data()
    tapped, plain = NaNGuard(verbose=False), NaNGuard(verbose=False, replay=False)
    a, _, _ = _fit(x, y, keras.optimizers.Adam(1e-2), tapped, epochs=2)
    b, _, _ = _fit(x, y, keras.optimizers.Adam(1e-2), plain, epochs=2)
    assert tapped._tapped and not plain._tapped
    for u, v in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(u, v)


def test_a_fit_that_raised_leaves_no_tap_behind():
    x, y = tanh_data()
    x[70, 3] = np.nan
    model = _mlp()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    with pytest.raises(FloatingPointError):
        model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0,
                  callbacks=[NaNGuard(action="raise", skip_bad_data=False, verbose=False)])
    assert not getattr(model.train_function, "_gradguard_tap", False)
    guard = NaNGuard(verbose=False)  # a fresh guard taps Keras' function and replays
    model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0, callbacks=[guard])
    assert guard._tapped and guard.events[0].method == "replay"


@pytest.mark.parametrize("x_rms, cut_fails, cause", [
    (420.0, False, "learning_rate"),  # a tenth of the rate is the smaller change
    (420.0, True, "learning_rate"),   # a hundredth (100x) is still smaller than 420x
    (30.5, True, "input_scale"),      # 30.5x inputs against a 100x rate cut
    (10.0, False, "input_scale"),     # a tie goes to the inputs
])
def test_the_smallest_change_that_cures_names_the_cause(x_rms, cut_fails, cause):
    replays = {"as_given": _r("as_given", 1.0, NAN),
               "inputs_standardized": Replay("inputs_standardized", 1.0, 0.5, True, x_rms),
               "lr_x0.1": Replay("lr_x0.1", 1.0, NAN if cut_fails else 0.5, True, 1 / LR_CUT)}
    if cut_fails:
        replays["lr_x0.01"] = Replay("lr_x0.01", 1.0, 0.5, True, LR_CUT ** -2)
    assert judge_replays(replays, 3).cause == cause
    # a structural cause the rules found stands against a rate cut, not against inputs
    assert judge_replays(replays, 3, structural="depth").cause == (
        None if cause == "learning_rate" else cause)


def test_a_change_whose_step_trains_beats_a_smaller_one_that_only_does_not_blow_up():
    # A generated conv2d on features at rms 820 under SGD: standardized, its
    # batch loss falls; a hundredth of the rate lets it rise 3.7x (not 10x).
    replays = {"as_given": _r("as_given", 109.4, 4.4e8),
               "inputs_standardized": Replay("inputs_standardized", 0.383, 0.382, True, 820.0),
               "lr_x0.1": Replay("lr_x0.1", 109.4, 99431.0, True, 10.0),
               "lr_x0.01": Replay("lr_x0.01", 109.4, 400.0, True, 100.0)}
    assert judge_replays(replays, 1).cause == "input_scale"
    # where neither trains (both rise under 10x), the smaller change names it
    replays["inputs_standardized"] = Replay("inputs_standardized", 2.72, 20.5, True, 82.9)
    replays["lr_x0.1"] = Replay("lr_x0.1", 65.9, 227.9, True, 10.0)
    del replays["lr_x0.01"]
    assert judge_replays(replays, 1).cause == "learning_rate"
