"""The monitor's step decision (step_decision.py) and what its compiled step holds.

`decide_step` is checked on arrays of many steps at once against a numpy
reading of the rules. The traced step is checked by the variables it reads
and the ops it holds: a feature that is off adds nothing to it.
"""

import itertools

import keras
import numpy as np
import pytest
from keras import ops

from gradguard.callbacks import GradientMonitor
from gradguard.callbacks.gradient_record import (
    APPLIED, CLIPPED_SPIKE, NONFINITE, SKIPPED_SPIKE,
)
from gradguard.callbacks.ring import first_nonfinite
from gradguard.callbacks.step_decision import SPREAD, SPREAD_HISTORY, SpikeGate, decide_step

INF = np.inf


def _numpy_decision(norm, skip_nonfinite, loss_scaled, gate, norm_clipped=None):
    """The rules of `decide_step`, step by step in numpy."""
    rows = []
    for i, g in enumerate(norm):
        finite = bool(np.isfinite(g))
        if norm_clipped is not None:  # the gate judges the clipped update
            g = norm_clipped[i]
        spike = clipped = False
        if gate is not None:
            factor, median, n, min_history, clip, spread, peak = (
                np.asarray(a)[i] for a in gate)
            # where the recent norms range wider than SPREAD, a spike must
            # also be factor x the largest of them
            spike = (finite and factor > 0 and n >= min_history and median > 0
                     and g > factor * median
                     and (spread <= SPREAD or n < SPREAD_HISTORY or g > factor * peak))
            clipped = spike and clip > 0
        if not finite:
            status = NONFINITE
        elif spike:
            status = CLIPPED_SPIKE if clipped else SKIPPED_SPIKE
        else:
            status = APPLIED
        skipped = (skip_nonfinite and not loss_scaled and not finite) or (spike and not clipped)
        limit = float(np.asarray(gate[1])[i]) if clipped else INF
        rows.append((not skipped, loss_scaled and not finite, status, limit))
    return rows


def _cases(size=64, seed=0):
    rng = np.random.default_rng(seed)
    median = rng.choice([0.0, 0.5, 1.0, 2.0], size).astype("float32")
    norm = (median * rng.choice([0.5, 1.0, 9.9, 10.0, 10.1, 50.0], size)
            + rng.choice([0.0, 1.0], size)).astype("float32")
    norm[rng.random(size) < 0.15] = np.nan
    norm[rng.random(size) < 0.1] = np.inf
    gate = SpikeGate(
        factor=rng.choice([0.0, 3.0, 10.0], size).astype("float32"),
        median=median,
        n=rng.choice([0, 3, 7, SPREAD_HISTORY - 1, SPREAD_HISTORY, 50], size).astype("int32"),
        min_history=rng.choice([1.0, 5.0], size).astype("float32"),
        clip=rng.choice([0.0, 1.0], size).astype("float32"),
        spread=rng.choice([1.0, SPREAD, SPREAD * 1.01, INF], size).astype("float32"),
        peak=(median * rng.choice([1.0, 0.2, 0.1], size)).astype("float32"),
    )
    return norm, gate


@pytest.mark.parametrize(
    "skip_nonfinite,loss_scaled,with_gate,with_clip",
    list(itertools.product([True, False], [False, True], [False, True], [False, True])),
)
def test_decide_step_matches_numpy(skip_nonfinite, loss_scaled, with_gate, with_clip):
    norm, gate = _cases()
    gate = gate if with_gate else None
    clipped = None
    if with_clip:  # a clip at a threshold per step: min(norm, threshold)
        threshold = np.random.default_rng(1).choice([0.5, 5.0, INF], len(norm))
        clipped = np.minimum(norm, threshold).astype("float32")
    decision = decide_step(
        ops.convert_to_tensor(norm), skip_nonfinite=skip_nonfinite,
        loss_scaled=loss_scaled,
        gate=None if gate is None else SpikeGate(*map(ops.convert_to_tensor, gate)),
        norm_clipped=None if clipped is None else ops.convert_to_tensor(clipped),
    )
    expected = _numpy_decision(norm, skip_nonfinite, loss_scaled, gate, clipped)
    update, count_skip, status, limit = (np.array(c) for c in zip(*expected))
    # No condition is traced when nothing can be skipped / recounted.
    if decision.update is None:
        assert update.all() and not (skip_nonfinite and not loss_scaled) and gate is None
    else:
        np.testing.assert_array_equal(ops.convert_to_numpy(decision.update), update)
    if decision.count_skip is None:
        assert not loss_scaled and not count_skip.any()
    else:
        np.testing.assert_array_equal(ops.convert_to_numpy(decision.count_skip), count_skip)
    np.testing.assert_array_equal(ops.convert_to_numpy(decision.status), status)
    if gate is None:
        assert decision.limit is None
    else:
        np.testing.assert_array_equal(ops.convert_to_numpy(decision.limit), limit)


def test_decide_step_hand_cases():
    # norm 100 over a median of 5 (factor 10, 6 norms): a spike; 40 is not.
    gate = lambda clip: SpikeGate(10.0, 5.0, 6, 5.0, clip)  # noqa: E731
    skipped = decide_step(100.0, skip_nonfinite=True, loss_scaled=False, gate=gate(0.0))
    assert not bool(skipped.update) and float(skipped.status) == SKIPPED_SPIKE
    clipped = decide_step(100.0, skip_nonfinite=True, loss_scaled=False, gate=gate(1.0))
    assert bool(clipped.update) and float(clipped.status) == CLIPPED_SPIKE
    assert float(clipped.limit) == 5.0
    calm = decide_step(40.0, skip_nonfinite=True, loss_scaled=False, gate=gate(0.0))
    assert bool(calm.update) and float(calm.status) == APPLIED and float(calm.limit) == INF
    # A clip that holds the update at 40 (< 10 x 5) makes it no spike; at 60 it is one.
    held = decide_step(100.0, skip_nonfinite=True, loss_scaled=False, gate=gate(0.0),
                       norm_clipped=40.0)
    assert bool(held.update) and float(held.status) == APPLIED
    loose = decide_step(100.0, skip_nonfinite=True, loss_scaled=False, gate=gate(0.0),
                        norm_clipped=60.0)
    assert not bool(loose.update) and float(loose.status) == SKIPPED_SPIKE
    too_few = decide_step(100.0, skip_nonfinite=True, loss_scaled=False,
                          gate=SpikeGate(10.0, 5.0, 4, 5.0, 0.0))
    assert bool(too_few.update)  # 4 norms < min_history 5
    nan = decide_step(float("nan"), skip_nonfinite=True, loss_scaled=False)
    assert not bool(nan.update) and float(nan.status) == NONFINITE
    scaled = decide_step(float("inf"), skip_nonfinite=True, loss_scaled=True)
    assert scaled.update is None and bool(scaled.count_skip)  # the loss scaler skips


def test_first_nonfinite_from_the_variable_norms():
    rows = np.array([[1.0, 2.0, 3.0], [1.0, np.nan, np.inf], [np.inf, 0.0, 1.0]])
    assert first_nonfinite(rows).tolist() == [-1, 1, 0]
    assert first_nonfinite(np.zeros((2, 0))).tolist() == [-1, -1]


# -- the traced step: a feature that is off adds nothing ------------------

def _traced_step(setup=None):
    """Traces `monitor.apply` on a small model; returns (op count, variables read)."""
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), keras.layers.Dense(1)])
    monitor = GradientMonitor(keras.optimizers.Adam())
    variables = model.trainable_variables
    monitor.build(variables)
    if setup is not None:
        setup(monitor)
    specs = [tf.TensorSpec(v.shape, v.dtype) for v in variables]
    step = tf.function(lambda *grads: monitor.apply(list(grads), variables))
    concrete = step.get_concrete_function(*specs)
    graph = concrete.graph.as_graph_def()
    ops_count = len(graph.node) + sum(len(f.node_def) for f in graph.library.function)
    names = [v.name.split("/")[-1].split(":")[0] for v in concrete.variables]
    read = {name for name in names if name.startswith("gg_")}
    return ops_count, read


FEATURES = {
    "AutoClip": (lambda m: m.set_autoclip(10.0), {"gg_autoclip_percentile", "gg_autoclip_window"}),
    "spike gate": (lambda m: m.set_spike_gate(10.0), {"gg_spike_factor", "gg_spike_window"}),
    "lr multiplier": (lambda m: m.set_lr_multiplier(0.5), {"gg_lr_multiplier"}),
    "AGC": (lambda m: m.set_agc(0.01), {"gg_agc_ratio", "gg_agc_eps"}),
    "ZClip": (lambda m: m.set_zclip(2.5), {"gg_zclip_z", "gg_zclip_mean"}),
}


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="counts TF graph ops")
def test_disabled_features_add_no_ops():
    base_ops, base_read = _traced_step()
    # Off: the step reads the ring, its count and the tally, nothing else of
    # the monitor's.
    assert base_read == {"gg_count", "gg_ring", "gg_tally"}
    for name, (setup, variables) in FEATURES.items():
        n_ops, read = _traced_step(setup)
        assert n_ops > base_ops, name
        assert variables <= read, name
