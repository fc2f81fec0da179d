"""The skip variants `benchmarks.skip_variants` times skip exactly (or it times nothing useful)."""

import numpy as np
import tensorflow as tf

from gradguard.benchmarks import skip_variants as sv


def _run(kind, *steps):
    """The weights and Adam's moments after each update of `steps` (lists of gradients)."""
    variables = sv.make_variables()
    update, optimizer = sv.make_update(kind, variables)
    after = []
    for grads in steps:
        update([tf.constant(g) for g in grads])
        moments = [v.numpy() for v in optimizer.variables
                   if v is not optimizer.iterations and v is not optimizer._learning_rate]
        after.append([v.numpy() for v in variables] + moments)
    return after


def test_cond_and_select_apply_what_plain_applies_and_skip_a_nan_gradient():
    rng = np.random.default_rng(0)
    shapes = [v.shape for v in sv.make_variables()]
    first = [rng.normal(size=s).astype("float32") for s in shapes]
    bad = [rng.normal(size=s).astype("float32") for s in shapes]
    bad[3][0, 0] = np.nan
    [plain] = _run("plain", first)
    start = [v.numpy() for v in sv.make_variables()]
    assert not np.array_equal(plain[0], start[0])  # the update moved the weights
    assert np.abs(plain[-1]).max() > 0  # and Adam's moments
    for kind in ("cond", "select"):
        once, twice = _run(kind, first, bad)
        for got, want in zip(once, plain):  # a finite gradient: plain's update
            np.testing.assert_array_equal(got, want)
        for got, want in zip(twice, once):  # a NaN one: nothing moves
            np.testing.assert_array_equal(got, want)


def test_quick_run_prints_every_variant(capsys):
    times = sv.main(["--quick"])
    assert set(times) == set(sv.VARIANTS) and all(len(t) == 1 for t in times.values())
    out = capsys.readouterr().out
    assert all(f"\n{k} " in out for k in sv.VARIANTS)
