"""The skip variants `benchmarks.skip_variants` times skip exactly (or it times nothing useful)."""

import numpy as np
import pytest
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


def test_quick_run_of_part_one_prints_every_variant(capsys):
    times = sv.main(["--quick", "--fit-rounds", "0"])
    assert set(times) == set(sv.VARIANTS) and all(len(t) == 1 for t in times.values())
    out = capsys.readouterr().out
    assert all(f"\n{k} " in out for k in sv.VARIANTS)


@pytest.mark.slow  # ~50 s: seven 20-layer models traced and fitted
def test_quick_run_prints_every_variant(capsys):
    times = sv.main(["--quick"])
    assert set(times) == set(sv.VARIANTS) | set(sv.FIT_VARIANTS)
    assert all(len(t) == 1 for t in times.values())
    out = capsys.readouterr().out
    assert all(f"\n{k} " in out for k in sv.VARIANTS + sv.FIT_VARIANTS)


@pytest.mark.slow  # ~40 s: seven 20-layer models traced
def test_the_fit_variants_train_as_plain_adam_and_the_skips_skip():
    """Part 2 times what it says: on a finite batch every variant but the clip applies
    plain Adam's update; on a NaN batch every skip leaves the weights as they were."""
    from gradguard.benchmarks.overhead_models import MODELS, make_data

    x, _ = make_data(MODELS["MLP 20x64 (42 vars)"], 64, 0)
    y = x[:32, :1] * 0.5
    bad = x[32:64].copy()
    bad[3, 2] = np.nan
    after = {}
    for name in sv.FIT_VARIANTS:
        model = sv.make_fit_model(name, x)  # one train_on_batch on (x[:32], x[:32, :1])
        before = [v.numpy() for v in model.trainable_variables]
        model.train_on_batch(x[:32], y)
        after[name] = [v.numpy() for v in model.trainable_variables]
        assert not np.array_equal(after[name][0], before[0]), name  # it trained
        # (The cond on the loss is a timing reference, not a skip: on this CPU
        # a NaN input can give a finite loss and NaN gradients, oneDNN's ReLU
        # taking NaN to 0.)
        if name not in ("fit: plain", "fit: wait on the norm", "fit: Keras global_clipnorm",
                        "fit: cond on the loss"):
            model.train_on_batch(bad, y)
            for got, want in zip([v.numpy() for v in model.trainable_variables], after[name]):
                np.testing.assert_array_equal(got, want, err_msg=name)
    for name in sv.FIT_VARIANTS:
        if name != "fit: Keras global_clipnorm":
            for got, want in zip(after[name], after["fit: plain"]):
                np.testing.assert_array_equal(got, want, err_msg=name)
