"""NaNGuard's judgment on small arrays: measures, suspects, cause rules, the event."""

import dataclasses
import json

import numpy as np
import pytest

from gradguard.callbacks import diagnosis as dg
from gradguard.callbacks.gradient_record import (
    APPLIED, NONFINITE, SKIPPED_SPIKE, GradientRecord,
)


def _record(norms, status=None, variable_norms=None, first_nonfinite=None,
            weights_finite=None, paths=("d/kernel", "d/bias")):
    norms = np.asarray(norms, dtype=np.float32)
    t = len(norms)
    steps = np.arange(1, t + 1)
    status = np.full(t, APPLIED) if status is None else np.asarray(status)
    if variable_norms is None:
        variable_norms = np.stack([norms / np.sqrt(2)] * len(paths), axis=1)
    return GradientRecord(
        count=t, index=steps, steps=steps, norm=norms, norm_clipped=norms,
        threshold=np.full(t, np.inf, np.float32),
        variable_norms=np.asarray(variable_norms, np.float32),
        first_nonfinite=np.full(t, -1) if first_nonfinite is None else np.asarray(first_nonfinite),
        weights_finite=np.ones(t, bool) if weights_finite is None else np.asarray(weights_finite),
        status=status, variable_paths=tuple(paths),
    )


def _diagnose(record, **kw):
    found = dg.find_event(record, record, window=50, loss_scaled=False)
    if found is None:
        found = kw.pop("found")
    defaults = dict(layers=["d"] * len(record.variable_paths), window=50,
                    min_history=5, start_step=0, learning_rate=0.1, epoch=0,
                    batch=found["step"] - 1)
    return dg.diagnose(found, record, **{**defaults, **kw})


# -- measures --------------------------------------------------------------


def test_running_median_matches_a_loop():
    rng = np.random.default_rng(0)
    values = rng.lognormal(size=(30, 2))
    values[7, 0] = np.nan
    values[12, 1] = np.inf
    ratio, median = dg.running_median(values, window=5)
    for t in range(30):
        for v in range(2):
            earlier = values[max(t - 5, 0):t, v]
            earlier = earlier[np.isfinite(earlier)]
            if len(earlier) < dg.MIN_PERIODS:
                assert np.isnan(median[t, v])
                continue
            assert median[t, v] == pytest.approx(np.median(earlier))
            if np.isfinite(values[t, v]):
                assert ratio[t, v] == pytest.approx(values[t, v] / np.median(earlier))
            else:
                assert np.isnan(ratio[t, v])


def test_running_median_of_no_rows_is_empty_and_a_held_spike_needs_rows():
    # A read before any row was recorded (a clipped fit's first batch under mixed precision).
    ratio, median = dg.running_median(np.zeros(0), window=50)
    assert ratio.shape == median.shape == (0,)
    ratio, median = dg.running_median(np.zeros((0, 3)), window=5)
    assert ratio.shape == median.shape == (0, 3)
    from gradguard.callbacks.blowup_rules import find_held_spike

    assert find_held_spike([], [], [], [], window=50, since_step=0) is None


def test_measure_growth_is_the_recent_max_over_the_earlier_median():
    norms = [1.0, 2.0, 1.0, 3.0, 1.0, 4.0, 9.0, 2.0]
    got = dg.measure_growth(norms, window=50)
    assert got["median"] == np.median(norms[:-3])
    assert got["growth"] == pytest.approx(9.0 / np.median(norms[:-3]))
    assert got["recent"] == [4.0, 9.0, 2.0]
    # Short histories keep at least one norm for the median.
    assert dg.measure_growth([1.0, 5.0], window=50)["growth"] == 5.0
    assert dg.measure_growth([1.0], window=50)["growth"] is None


def test_kernel_gains_are_std_times_sqrt_fan_in():
    rng = np.random.default_rng(0)
    dense = rng.normal(scale=3 / np.sqrt(64), size=(64, 32))
    conv = rng.normal(scale=1 / np.sqrt(3 * 8), size=(3, 8, 16))
    gains = dg.kernel_gains([dense, conv, np.ones(1)])
    assert gains == pytest.approx([np.std(dense) * 8, np.std(conv) * np.sqrt(24)])
    assert gains == pytest.approx([3.0, 1.0], rel=0.1)


def test_ungated_recurrent_gain_is_the_largest_singular_value_of_the_square_kernels():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    simple = 1.5 * q  # a SimpleRNN's (units, units) kernel at orthogonal gain 1.5
    assert dg.ungated_recurrent_gain([simple]) == pytest.approx(
        np.linalg.svd(simple, compute_uv=False).max())
    assert dg.ungated_recurrent_gain([simple, 0.5 * q]) == pytest.approx(1.5)
    # A GRU's (units, 3 units) and an LSTM's (units, 4 units) gated kernels
    # are left out, whatever their gain.
    gated = 4.0 * np.linalg.qr(rng.normal(size=(24, 8)))[0].T  # (8, 24)
    assert np.linalg.norm(gated, 2) == pytest.approx(4.0)
    assert dg.ungated_recurrent_gain([gated]) is None
    assert dg.ungated_recurrent_gain([gated, simple]) == pytest.approx(1.5)
    assert dg.ungated_recurrent_gain([]) is None


def test_input_ratio_scales_with_the_inputs():
    # For x @ W + b with one output, dL/dW = x^T d and dL/db = sum(d): the
    # ratio is linear in the inputs' scale, and of the order of their rms.
    rng = np.random.default_rng(0)
    fan_in = 16
    x = rng.normal(size=(5, 64, fan_in))
    d = rng.normal(size=(5, 64, 1))

    def rows(scale):
        return np.array([[np.linalg.norm((scale * xi).T @ di), np.linalg.norm(di.sum(0))]
                         for xi, di in zip(x, d)])

    unit, big = dg.input_ratio(rows(1.0), 0, 1, fan_in), dg.input_ratio(rows(100.0), 0, 1, fan_in)
    assert big == pytest.approx(100 * unit, rel=1e-9)
    assert 0.3 < unit < 3 and big > dg.INPUT_SCALE
    assert dg.input_ratio(np.array([[np.inf, 1.0]]), 0, 1, 4) is None


def test_suspects_rank_who_left_the_median_first_not_who_is_largest():
    t = 12
    norms = np.ones((t, 3))
    norms[8:, 1] = [20, 40, 80, 160]  # left first, at step 9
    norms[10:, 2] = [1e3, 1e5]  # largest, but later
    suspects = dg.rank_suspects(np.arange(1, t + 1), norms, ["a", "b", "c"],
                                ["la", "lb", "lc"], window=5)
    assert [s["variable"] for s in suspects] == ["b", "c"]
    assert suspects[0]["first_step"] == 9 and suspects[1]["first_step"] == 11
    assert suspects[1]["ratio"] == pytest.approx(1e5)


@pytest.mark.parametrize("spike", [3e4, 1e3, 200.0])
def test_the_suggested_clip_comes_from_before_the_onset_and_stays_below_the_spike(spike):
    stable = np.array([100.0, 120.0, 150.0, 170.0, 190.0, 250.0])
    clip = dg.suggest_clip(stable, spike)
    assert clip < spike
    assert clip <= np.percentile(stable, dg.CLIP_PERCENTILE)
    assert dg.suggest_clip(stable, 101.0) is None  # even the median reaches it
    assert dg.suggest_clip([], 1.0) is None


# -- cause rules -----------------------------------------------------------


def _signs(**kw):
    base = dict(growth=1.0, short=False, earlier_suspects=[], spikes=0,
                weight_growth=1.0, gains=[1.0, 1.0], recurrent_gain=None,
                input_ratio=1.0)
    return {**base, **kw}


def _cause(trigger, repeated=False, **kw):
    return dg.name_cause(trigger, _signs(**kw), suspects=[], repeated=repeated,
                         clip=5.0, learning_rate=0.1, epoch=1, batch=3)[0]


def test_cause_rules_one_by_one():
    grown = {"growth": 10.0}
    assert _cause("nonfinite_gradient") == "bad_data"
    assert _cause("nonfinite_loss") == "bad_data"
    assert _cause("nonfinite_gradient", repeated=True, **grown) == "bad_data"
    assert _cause("nonfinite_gradient", **grown) == "learning_rate"
    assert _cause("nonfinite_weights") == "learning_rate"
    assert _cause("loss_growth") == "learning_rate"
    assert _cause("nonfinite_gradient", recurrent_gain=1.5, **grown) == "recurrence"
    assert _cause("nonfinite_gradient", gains=[3.0] * 8, **grown) == "depth"
    assert _cause("nonfinite_gradient", gains=[3.0] * 3, **grown) == "learning_rate"
    assert _cause("nonfinite_gradient", input_ratio=300.0, **grown) == "input_scale"


def test_orthogonal_recurrent_kernels_are_not_blamed():
    # Keras' orthogonal GRU kernel measures 1.0000001 in float32.
    grown = {"growth": 10.0}
    assert _cause("nonfinite_gradient", recurrent_gain=1.0000001, **grown) == "learning_rate"
    assert _cause("nonfinite_gradient", recurrent_gain=dg.RECURRENT_GAIN * 1.01,
                  **grown) == "recurrence"


def test_early_overflows_are_named_from_what_was_known_before_step_1():
    early = {"growth": None, "short": True}
    assert _cause("nonfinite_gradient", recurrent_gain=2.0, **early) == "recurrence"
    assert _cause("nonfinite_gradient", gains=[3.0] * 8, **early) == "depth"
    assert _cause("nonfinite_gradient", input_ratio=1e3, **early) == "input_scale"
    # The weights grew in the few steps before: the rate.
    assert _cause("nonfinite_gradient", weight_growth=50.0, **early) == "learning_rate"
    # Nothing structural and nothing grew: the batch itself.
    assert _cause("nonfinite_gradient", **early) == "bad_data"
    # Late in a run, a structural sign alone does not make bad data a divergence.
    assert _cause("nonfinite_gradient", recurrent_gain=2.0) == "bad_data"


def test_an_isolated_spike_is_transient_and_repeated_ones_are_not():
    assert _cause("gradient_spike", spikes=1) == "transient_spike"
    assert _cause("gradient_spike", spikes=2) == "learning_rate"
    assert _cause("gradient_spike", spikes=1, growth=5.0) == "learning_rate"


# -- the event -------------------------------------------------------------


def test_diagnose_a_divergence_on_a_record():
    norms = [1.0, 1.1, 0.9, 1.0, 1.2, 1.0, 1.1, 4.0, 16.0, np.inf]
    status = [APPLIED] * 9 + [NONFINITE]
    # Only the kernel's gradient is non-finite at step 10: it is named.
    variable_norms = np.stack([np.asarray(norms) / np.sqrt(2)] * 2, axis=1)
    variable_norms[-1, 1] = 1.0
    record = _record(norms, status=status, first_nonfinite=[-1] * 9 + [0],
                     variable_norms=variable_norms)
    event = _diagnose(record)
    assert isinstance(event, dg.NaNEvent)
    assert (event.trigger, event.step, event.cause) == ("nonfinite_gradient", 10, "learning_rate")
    assert event.onset_step == 8  # the first recent norm 3x above the median
    assert event.growth == pytest.approx(16.0 / np.median(norms[:6]))
    assert event.first_nonfinite_variable == "d/kernel"
    # The clip comes from the norms before step 8, below the norm at onset.
    assert "global_clipnorm=" in event.cure
    clip = float(event.cure.split("global_clipnorm=")[1].split()[0].rstrip(","))
    assert clip == pytest.approx(np.percentile(norms[:7], 90), rel=1e-3) and clip < 4.0
    # Readable as a mapping, frozen, and JSON-ready.
    assert event["cause"] == event.cause and event.get("missing") is None
    with pytest.raises(KeyError):
        event["missing"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.cause = "depth"
    assert json.loads(json.dumps(event.to_dict()))["step"] == 10


def test_every_gradient_nonfinite_names_no_variable():
    # A NaN label makes every gradient NaN: the first in list order (often
    # the embedding) is no origin, so none is named.
    norms = [1.0, 1.1, 0.9, 1.0, 1.2, 1.0, np.nan]
    record = _record(norms, status=[APPLIED] * 6 + [NONFINITE],
                     first_nonfinite=[-1] * 6 + [0])
    event = _diagnose(record)
    assert event.first_nonfinite_variable is None and event.nonfinite_variables == 2


def test_a_repeated_bad_batch_names_the_earlier_epoch():
    norms = [1.0, 1.1, 0.9, 1.0, 1.2, 1.0, np.nan]
    record = _record(norms, status=[APPLIED] * 6 + [NONFINITE],
                     first_nonfinite=[-1] * 6 + [0])
    event = _diagnose(record, epoch=3, batch=4, repeated=True, earlier_epoch=1)
    assert event.cause == "bad_data"
    assert "batch 4 failed in epoch 1 too (now epoch 3, batch 4 (0-based))" in event.evidence


def test_ratio_rules_take_no_ratio_over_rounding_noise():
    # A converged net's norms of 4.5e-9, then 1e-3: no "2e5x" rise is claimed.
    tiny = [4.5e-9] * 8 + [1e-3]
    ratio, _ = dg.running_median(np.asarray(tiny), window=50)
    assert np.isnan(ratio).all()
    assert dg.measure_growth(np.asarray(tiny), window=50)["growth"] is None
    k = np.full((5, 1), 1e-3)
    assert dg.input_ratio(np.hstack([k, np.full((5, 1), 4.5e-9)]), 0, 1, 4) is None
    assert dg.input_ratio(np.hstack([k, np.full((5, 1), 1e-3)]), 0, 1, 4) == pytest.approx(0.5)


def test_diagnose_bad_data_on_a_flat_record():
    norms = [1.0, 1.1, 0.9, 1.0, 1.2, np.nan]
    record = _record(norms, status=[APPLIED] * 5 + [NONFINITE],
                     first_nonfinite=[-1] * 5 + [0])
    event = _diagnose(record)
    assert event.cause == "bad_data" and event.onset_step == event.step == 6
    assert "batch 5" in event.evidence


def test_diagnose_a_lone_spike_as_transient():
    norms = [1.0, 1.1, 0.9, 1.0, 1.2, 1.0, 100.0]
    record = _record(norms, status=[APPLIED] * 6 + [SKIPPED_SPIKE])
    event = _diagnose(record)
    assert (event.trigger, event.cause) == ("gradient_spike", "transient_spike")
    assert event.onset_step == event.step


# -- absolute evidence: broken from the first step, but finite --------------


def test_structural_sign_in_its_order():
    assert dg.structural_sign([1.0] * 3, None, 1.0) is None
    # Keras' orthogonal kernel (1.0000001) and Glorot gains are no sign.
    assert dg.structural_sign([1.0] * 8, 1.0000001, 2.0) is None
    assert dg.structural_sign([1.0] * 3, 1.5, 1e3) == "recurrence"
    assert dg.structural_sign([3.0] * 8, None, 1e3) == "depth"  # 3**8 = 6561
    assert dg.structural_sign([3.0] * 3, None, 1e3) == "input_scale"  # too few kernels
    assert dg.structural_sign([], None, dg.INPUT_SCALE) is None  # at the limit: not above


@pytest.mark.parametrize("losses, risen", [
    ([0.5, 0.4, 0.45, 0.42, 0.4], False),  # healthy: never rises
    ([0.5, 0.4, 5.0, 6.0, 7.0], True),  # 11x..16x the early level 0.45, 3 steps in a row
    ([0.5, 0.4, 5.0, 6.0], False),  # too short
    ([0.5, 0.4, 5.0, 0.5, 6.0, 7.0], False),  # interrupted
    ([0.4, 0.4, 4.1, 4.2, 4.3], True),  # just past 10x
    ([1.0, 9.0, 9.0, 9.0, 9.0], False),  # 9x: below LOSS_RISE
    ([0.5, 44.0, 174.0, 179.0, 151.0], True),  # Adam far too fast: 300x its first
    ([1e4, 5e3, 2e3, 1e3, 500.0], False),  # a large initial loss that falls
    ([0.5, 0.4, 5.0, 6.0, np.nan], False),  # non-finite: another trigger's
    # Batch size 2: an epoch's first running loss is one batch's (0.05); the
    # epoch's mean goes back to ~0.49, 10x that one batch but not a rise.
    ([0.27, 0.87, 0.68, 0.57, 0.5, 0.53, 0.63, 0.63, 0.05, 0.65, 0.49, 0.49], False),
])
def test_loss_has_risen_matches_its_definition(losses, risen):
    assert dg.loss_has_risen(losses) is risen
    finite = np.isfinite(losses).all() and len(losses) > dg.RECENT
    first = losses[:max(min(dg.STALL_STEPS, len(losses) - dg.RECENT), 1)]
    early = min(first[0], np.median(first))
    by_hand = finite and all(v > dg.LOSS_RISE * early for v in losses[-dg.RECENT:])
    assert by_hand == risen


def test_find_stall_needs_a_structural_sign_and_a_loss_that_did_not_fall():
    flat = np.full(dg.STALL_STEPS, 4e7) * np.linspace(1.0, 0.95, dg.STALL_STEPS)
    learning = np.full(dg.STALL_STEPS, 0.5) * np.linspace(1.0, 0.6, dg.STALL_STEPS)
    assert dg.find_stall(flat, "depth")
    assert not dg.find_stall(flat, None)  # a healthy net's loss may stay flat too
    assert not dg.find_stall(learning, "depth")
    assert not dg.find_stall(flat[:-1], "depth")  # too few steps
    # At the limit: a loss at exactly STALL_LOSS x its first has not fallen below it.
    at = np.r_[1.0, np.full(dg.STALL_STEPS - 1, dg.STALL_LOSS)]
    assert dg.find_stall(at, "input_scale")
    assert not dg.find_stall(at * np.r_[1.0, np.full(dg.STALL_STEPS - 1, 0.99)], "input_scale")


def test_absolute_triggers_are_named_by_the_structure_or_the_rate():
    assert _cause("stalled", gains=[3.0] * 8) == "depth"
    assert _cause("stalled", recurrent_gain=2.0) == "recurrence"
    assert _cause("stalled", input_ratio=100.0) == "input_scale"
    assert _cause("loss_rise") == "learning_rate"
    assert _cause("loss_rise", recurrent_gain=1.5) == "recurrence"


def test_diagnose_a_stall_starts_at_the_first_step():
    norms = [1e4, 1.1e4, 0.9e4, 1e4, 1.2e4, 1e4, 1.1e4, 1e4]
    record = _record(norms)
    event = _diagnose(record, found={"trigger": "stalled", "step": 8, "detail": "flat"},
                      gains=(3.0,) * 8)
    assert (event.trigger, event.cause, event.onset_step) == ("stalled", "depth", 1)
    assert "has not fallen since the first step" in event.evidence


def test_a_stall_is_warned_about_and_a_loss_rise_acts():
    from gradguard.callbacks.nan_guard import choose_action

    for action in ("stop", "raise", "rollback"):
        assert choose_action(action, "depth", 0, 3, 0, 10, trigger="stalled") == ("warn", "")
        assert choose_action(action, "learning_rate", 0, 3, 0, 10,
                             trigger="loss_rise") == (action, "")


def test_first_step_sensitivity_does_not_depend_on_the_targets_scale():
    # x @ w with a squared error: the gradient and sqrt(loss) both scale
    # with the residual, so scaling the targets leaves the ratio alone.
    rng = np.random.default_rng(0)
    x, w = rng.normal(size=(32, 8)), rng.normal(size=8) / np.sqrt(8)

    def ratio(y, gain=1.0):
        residual = x @ (gain * w) - y
        loss = np.mean(residual**2)
        grad = 2 * x.T @ residual / len(x) * gain  # d loss / d w through gain * w
        return dg.first_step_sensitivity(np.linalg.norm(grad), loss)

    y = rng.normal(size=32)
    assert ratio(1e3 * y) == pytest.approx(ratio(1e4 * y), rel=1e-2)
    assert ratio(y) < dg.SENSITIVITY and ratio(30 * y + 100) < dg.SENSITIVITY
    # A weight path amplified 1e3x (a deep stack's gains) reads 1e3x higher.
    assert ratio(y, gain=1e3) > dg.SENSITIVITY
    assert dg.first_step_sensitivity(np.inf, 1.0) is None
    assert dg.first_step_sensitivity(1.0, 0.0) is None


def test_a_falling_astronomical_loss_stalls_by_its_sensitivity():
    falling = 2.7e8 * np.linspace(1.0, 0.47, dg.STALL_STEPS)  # Adam halves it
    assert not dg.find_stall(falling, "depth")
    assert dg.find_stall(falling, "depth", sensitivity=1.4e5)
    assert not dg.find_stall(falling, "depth", sensitivity=7.7)  # the healthy runs' most
    assert not dg.find_stall(falling, None, sensitivity=1.4e5)  # no structural sign


def test_a_loss_that_halves_from_a_sane_level_is_learning_whatever_its_sensitivity():
    # Boston's raw features as published: sensitivity 730, 633 -> 290 in 8 steps.
    first = 633.0
    learning = first * np.linspace(1.0, 0.46, dg.STALL_STEPS)
    assert learning.min() < dg.SENSITIVITY_FALL * first < dg.STALL_LOSS * first
    assert not dg.find_stall(learning, "input_scale", sensitivity=730.0)
    slower = first * np.linspace(1.0, 0.55, dg.STALL_STEPS)  # the broken conv nets: >= 0.51
    assert dg.find_stall(slower, "input_scale", sensitivity=337.0) == "sensitivity"
    astronomical = 2.2e6 * np.linspace(1.0, 0.39, dg.STALL_STEPS)  # deep attention at gain 3
    assert dg.find_stall(astronomical, "depth", sensitivity=1.7e4) == "sensitivity"


def _batch_losses_by_hand(batches, runnings):
    """Batch losses from running means, by summing (numpy-free reference)."""
    out, prev_sum, prev_b = [], 0.0, -1
    for b, m in zip(batches, runnings):
        if b <= prev_b:  # a new epoch
            prev_sum, prev_b = 0.0, -1
        total = (b + 1) * m
        out.append((total - prev_sum) / (b - prev_b))
        prev_sum, prev_b = total, b
    return out


def test_batch_loss_undoes_the_running_mean():
    rng = np.random.default_rng(0)
    true = rng.uniform(0.1, 50.0, size=12)  # 2 epochs of 6 equal batches
    runnings = [float(np.mean(true[e * 6:e * 6 + b + 1])) for e in (0, 1) for b in range(6)]
    batches = [b for _ in (0, 1) for b in range(6)]
    got, prev = [], (-1, 0.0)
    for b, m in zip(batches, runnings):
        prev = prev if b > prev[0] else (-1, 0.0)
        got.append(dg.batch_loss(b, m, *prev))
        prev = (b, m)
    np.testing.assert_allclose(got, true, rtol=1e-9)
    np.testing.assert_allclose(got, _batch_losses_by_hand(batches, runnings), rtol=1e-12)
    # Steps logged every 3 batches (steps_per_execution=3): their mean.
    assert dg.batch_loss(5, runnings[5], 2, runnings[2]) == pytest.approx(true[3:6].mean())


def test_a_transient_loss_spike_held_in_the_running_mean_is_no_rise():
    # A tiny GPT-2 under SGD (the zoo's, AutoClip at the median): one batch of
    # 35.9 after 0.96, then 8.4 and 4.8 as it recovers. Keras' running mean
    # reads 18.4, 14.4, 12.0: above 10x the early level for 3 steps, which
    # stopped this healthy run. The batches' own losses are not.
    runnings = [0.964, 18.429, 14.437, 12.032]
    batch = _batch_losses_by_hand(range(4), runnings)
    assert dg.loss_has_risen(runnings) is True  # the running mean alone
    assert dg.loss_has_risen(runnings, batch) is False
    # Adam far too fast on a GRU (the population's): the batches stay high.
    runnings = [0.497, 43.864, 174.322, 178.589, 150.776]
    assert dg.loss_has_risen(runnings, _batch_losses_by_hand(range(5), runnings)) is True


def test_windows_flat_compares_the_second_window_of_batch_losses_with_the_first():
    # One epoch of 8 batches repeated (a net that learns nothing), its first
    # batch the hardest: the running loss falls to 0.75x its first at step
    # 2, so the first-loss rule never stalls; the windows' means match.
    epoch = np.array([1.29, 0.64, 1.23, 1.02, 1.02, 0.66, 1.11, 1.31])
    batches = np.tile(epoch, 2)
    running = np.cumsum(epoch) / np.arange(1, 9)  # Keras' running mean, one epoch
    assert running.min() < dg.STALL_LOSS * running[0]
    assert not dg.find_stall(running, "recurrence")
    assert dg.windows_flat(batches)
    assert dg.find_stall(running, "recurrence", batch_losses=batches)
    assert not dg.find_stall(running, None, batch_losses=batches)  # no structural sign
    # The second window's mean at STALL_LOSS x the first's is flat; below it, learning.
    at = np.r_[epoch, epoch * dg.STALL_LOSS]
    assert at[8:].mean() == pytest.approx(dg.STALL_LOSS * at[:8].mean())
    assert dg.windows_flat(np.r_[epoch, epoch * (dg.STALL_LOSS + 1e-6)])
    assert not dg.windows_flat(np.r_[epoch, epoch * (dg.STALL_LOSS - 1e-6)])
    assert not dg.windows_flat(batches[:-1])  # too few steps
    assert not dg.windows_flat(np.r_[batches[:-1], np.nan])
    # Only the fit's first 2 * STALL_STEPS count: later losses change nothing.
    assert dg.windows_flat(np.r_[batches, np.full(8, 1e-3)])


def test_loss_has_grown_needs_recent_batch_losses_far_above_the_best():
    best, first = 0.4, 1.0
    # One outlier batch (1e5), then batches back at 0.5: the running mean
    # stays high for the rest of the epoch, the batches' own losses do not.
    batches = np.r_[np.full(9, 0.5), 1e5, np.full(5, 0.5)]
    running = np.cumsum(batches) / np.arange(1, len(batches) + 1)
    assert (running[9:] > dg.LOSS_GROWTH * best).all()  # the old running-loss rule fired
    assert not any(dg.loss_has_grown(batches[: i + 1], best, first) for i in range(len(batches)))
    # A divergence keeps every batch high: the third in a row decides.
    diverging = np.r_[np.full(9, 0.5), 1e4, 3e4, 1e5]
    assert [dg.loss_has_grown(diverging[: i + 1], best, first)
            for i in range(9, 12)] == [False, False, True]
    # At the limit, and the other conditions.
    at = np.full(dg.RECENT, dg.LOSS_GROWTH * best)
    assert not dg.loss_has_grown(at, best, first)  # not above
    assert dg.loss_has_grown(at * 1.001, best, first)
    assert not dg.loss_has_grown(at * 1.001, best, first=1e6)  # not above the first
    assert not dg.loss_has_grown(at[1:] * 1.001, best, first)  # too few
    assert not dg.loss_has_grown(at * 1.001, None, first)  # no best yet
    assert not dg.loss_has_grown(np.r_[at[:-1], np.inf], best, first)  # non-finite: its own rule


def test_a_loss_scale_event_diverged_in_float32_is_named_by_the_divergence_rules():
    def cause(found, **kw):
        return dg.name_cause("loss_scale", _signs(**kw), suspects=[], repeated=False, clip=5.0,
                             learning_rate=0.1, epoch=0, batch=3, loss_scale=found)

    skips = {"skipped": 3, "scale_before": 32768.0, "scales": [16384.0, 8192.0, 4096.0],
             "rule": "max_skips", "settled": True}
    # No replay: the scale history alone.
    assert cause(skips)[0] == "loss_scale"
    # In float32 the batch's loss is near the fit's first: float16's range.
    named, evidence, _ = cause({**skips, "float32_loss": 0.9, "early_loss": 0.5})
    assert named == "loss_scale" and "float16's range, not the state" in evidence
    # 10x the first or more, or non-finite, in float32 too: the weights diverged.
    for loss in (5.01, float("inf"), float("nan")):
        named, evidence, cure = cause({**skips, "float32_loss": loss, "early_loss": 0.5})
        assert named == "learning_rate", loss
        assert "float16 only overflowed first" in evidence and "~0.01" in cure
    assert cause({**skips, "float32_loss": 5.0, "early_loss": 0.5})[0] == "loss_scale"
    # The structure still decides among divergences.
    assert cause({**skips, "float32_loss": 1e9, "early_loss": 0.5},
                 gains=[3.0] * 8)[0] == "depth"


def test_a_stall_with_no_sign_is_unknown_not_a_learning_rate():
    # A classifier flat far above chance with no structural sign
    # (`find_stall`'s chance evidence): nothing says the rate.
    assert _cause("stalled") == "unknown"
    # ...unless the weights grew (keras-io's FCN at lr x1000: 18 -> 902): the rate.
    assert _cause("stalled", weight_growth=2.5) == "learning_rate"
    assert _cause("stalled", gains=[3.0] * 8) == "depth"
    assert _cause("stalled", input_ratio=300.0) == "input_scale"
