"""The cause by experiment: the replays' judgment on numbers, then on real models."""

import keras
import numpy as np
import pytest

from gradguard.callbacks import NaNGuard
from gradguard.callbacks.replay import (
    BLOWUP, LR_CUT, Replay, judge_replays, root_mean_square, scale_targets, standardize,
    step_failed,
)
from tests.callbacks.helpers import WeightsPerStep

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


def test_another_batch_that_trains_names_bad_data():
    verdict = judge_replays({"as_given": _r("as_given", NAN, NAN),
                             "other_batch": _r("other_batch", 0.5, 0.4),
                             "lr_x0.1": _r("lr_x0.1", NAN, NAN)}, 11)
    assert verdict.cause == "bad_data"
    assert verdict.evidence == ("replay from the weights after step 11: as given nan -> nan; "
                                "another batch 0.5 -> 0.4; lr x0.1 nan -> nan")


def test_the_first_change_that_removes_the_failure_names_the_cause():
    bad = _r("x", 1.0, 1e6)
    ok = _r("x", 1.0, 0.9)
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


def test_batch_statistics():
    x = np.array([[1.0, 1e4], [3.0, 3e4], [np.nan, 2e4]], dtype="float32")
    assert root_mean_square(x) == pytest.approx(np.sqrt((1e8 + 9e8) / 2), rel=1e-6)
    z = standardize(x, [])
    assert np.nanmean(z, axis=0) == pytest.approx([0.0, 0.0], abs=1e-6)
    assert np.nanstd(z[:, 1]) == pytest.approx(1.0, rel=1e-5)
    assert root_mean_square(scale_targets(x)) == pytest.approx(1.0)
    tokens = np.array([[3, 4]], dtype="int32")
    assert standardize(tokens, []) is tokens or (standardize(tokens, []) == tokens).all()
