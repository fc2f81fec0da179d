"""The blow-ups the running median cannot see, on small arrays."""

import numpy as np
import pytest

from gradguard.callbacks.blowup_rules import (
    EARLY_BOTH, EARLY_BOTH_HUGE, EARLY_LOSS_HUGE, EARLY_LOSS_JUMP, EARLY_NORM_JUMP, HELD_SPIKE,
    find_early_blowup, find_held_spike,
)


def test_a_step_two_explosion_is_found_at_step_two():
    # The convnet at lr x100: norm 0.74 -> 124, loss 2.31 -> 83.
    found = find_early_blowup([1, 2, 3], [0.74, 124.0, 0.0], [2.31, 83.0, 2.3])
    assert found.step == 2
    assert "0.74 (step 1) to 124 at step 2 (168x)" in found.detail
    assert "2.31 -> 83 (35.9x)" in found.detail


@pytest.mark.parametrize("norm_rise, loss_rise, fires", [
    (EARLY_NORM_JUMP * 1.01, 1.0, True),  # the norm alone
    (EARLY_NORM_JUMP * 0.99, 1.0, False),
    (EARLY_BOTH * 1.01, EARLY_LOSS_JUMP * 1.01, True),  # both
    (EARLY_BOTH * 0.99, EARLY_LOSS_HUGE * 0.99, False),  # an outlier batch: the loss alone
    (EARLY_BOTH_HUGE * 1.01, EARLY_LOSS_HUGE * 1.01, True),  # a huge loss with its norm
    (EARLY_BOTH_HUGE * 0.99, EARLY_LOSS_HUGE * 10, False),
    (1.0, 1e6, False),
])
def test_early_thresholds(norm_rise, loss_rise, fires):
    found = find_early_blowup([5, 6], [2.0, 2.0 * norm_rise], [0.5, 0.5 * loss_rise])
    assert (found is not None) == fires
    if fires:
        assert found.step == 6


def test_a_loss_100x_with_its_norm_7x_at_step_two_is_a_blowup():
    # keras-io's multi-label MLP at lr x100 (session 8): silent before, then at chance.
    found = find_early_blowup([1, 2, 3], [21.82, 159.64, 60.5], [1.7696, 194.68, 30.0])
    assert found is not None and found.step == 2
    assert "21.82 (step 1) to 159.6 at step 2 (7.32x)" in found.detail
    # The healthy run nearest to it (a SimpleRNN with dropout, SGD): 11.2x with 3.98x.
    assert find_early_blowup([1, 2, 3], [3.482, 5.0, 13.85], [0.3205, 0.4, 3.604]) is None


def test_early_rule_skips_nonfinite_and_noise():
    assert find_early_blowup([1, 2], [1.0, np.inf], [1.0, np.nan]) is None  # the NaN checks' job
    assert find_early_blowup([1, 2], [1e-9, 1.0], [1.0, 1.0]) is None  # below NORM_FLOOR
    assert find_early_blowup([1], [1.0], [1.0]) is None


def _held(norms, clipped, since=0):
    steps = np.arange(1, len(norms) + 1)
    return find_held_spike(steps, norms, clipped, np.ones(len(norms), bool), 50, since)


def test_a_clip_that_holds_a_100x_spike_is_found_with_the_raw_figure():
    norms = [1.0, 1.1, 0.9, 1.0, 672.0]
    found = _held(norms, np.minimum(norms, 1.0))
    assert found.step == 5
    assert "raw global gradient norm 672 is 672x its running median 1" in found.detail
    assert "held the update to 1" in found.detail


def test_held_spike_needs_the_clip_to_act_and_the_ratio():
    norms = [1.0, 1.1, 0.9, 1.0, HELD_SPIKE * 0.9]
    assert _held(norms, np.minimum(norms, 1.0)) is None  # under 100x
    spike = [1.0, 1.1, 0.9, 1.0, 672.0]
    assert _held(spike, spike) is None  # no clip held it (the spike gate's business)
    assert _held(spike, np.minimum(spike, 1.0), since=5) is None  # judged already
