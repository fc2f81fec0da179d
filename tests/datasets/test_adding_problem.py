import re

import numpy as np
import pytest

from gradguard.datasets import ADDING_PROBLEM_BASELINE_MSE, adding_problem


@pytest.mark.parametrize("n, seq_len", [(1, 2), (5, 3), (64, 100), (7, 11)])
def test_shapes_dtypes_and_ranges(n, seq_len):
    x, y = adding_problem(n, seq_len, seed=0)
    assert x.shape == (n, seq_len, 2)
    assert y.shape == (n, 1)
    assert x.dtype == np.float32 and y.dtype == np.float32
    assert np.all((x[..., 0] >= 0) & (x[..., 0] < 1))
    assert set(np.unique(x[..., 1])) <= {0.0, 1.0}
    assert np.all((y >= 0) & (y < 2))


@pytest.mark.parametrize("seq_len", [2, 3, 10, 51])
def test_exactly_one_marker_per_half(seq_len):
    x, _ = adding_problem(500, seq_len, seed=1)
    half = seq_len // 2
    np.testing.assert_array_equal(x[:, :half, 1].sum(axis=1), np.ones(500))
    np.testing.assert_array_equal(x[:, half:, 1].sum(axis=1), np.ones(500))


def test_markers_cover_every_position_of_each_half():
    # Uniform placement: with 2000 sequences every position gets a marker.
    x, _ = adding_problem(2000, 10, seed=2)
    assert np.all(x[:, :, 1].sum(axis=0) > 0)


def test_target_is_the_sum_of_the_two_marked_values():
    x, y = adding_problem(300, 40, seed=3)
    for i in range(300):
        marked = np.flatnonzero(x[i, :, 1] == 1.0)
        assert len(marked) == 2
        assert y[i, 0] == np.float32(x[i, marked[0], 0] + x[i, marked[1], 0])


def test_baseline_mse_is_one_sixth_empirically():
    assert ADDING_PROBLEM_BASELINE_MSE == pytest.approx(1 / 6, abs=0)
    _, y = adding_problem(200_000, 2, seed=4)
    mse_of_predicting_one = np.mean((y.astype(np.float64) - 1.0) ** 2)
    # The estimate's standard error is about 4e-4.
    assert abs(mse_of_predicting_one - 1 / 6) < 0.005
    assert abs(y.mean() - 1.0) < 0.005


def test_input_scale_scales_channel_0_only_and_keeps_the_target():
    x1, y1 = adding_problem(50, 20, seed=5)
    x1000, y1000 = adding_problem(50, 20, seed=5, input_scale=1000.0)
    np.testing.assert_allclose(x1000[..., 0], 1000.0 * x1[..., 0], rtol=1e-6)
    np.testing.assert_array_equal(x1000[..., 1], x1[..., 1])
    np.testing.assert_array_equal(y1000, y1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n=0, seq_len=10, seed=0), "adding_problem received n=0; expected an int >= 1."),
        (dict(n=2.5, seq_len=10, seed=0), "adding_problem received n=2.5; expected an int >= 1."),
        (dict(n=4, seq_len=1, seed=0), "adding_problem received seq_len=1; expected an int >= 2."),
        (dict(n=4, seq_len=True, seed=0), "adding_problem received seq_len=True; expected an int >= 2."),
        (
            dict(n=4, seq_len=10, seed=-1),
            "adding_problem received seed=-1; expected an int >= 0 "
            "(pass the same seed to get the same data).",
        ),
        (
            dict(n=4, seq_len=10, seed=0, input_scale=0.0),
            "adding_problem received input_scale=0.0; expected a finite float > 0 "
            "(1.0 leaves the inputs in [0, 1)).",
        ),
        (
            dict(n=4, seq_len=10, seed=0, input_scale=float("inf")),
            "adding_problem received input_scale=inf; expected a finite float > 0",
        ),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        adding_problem(**kwargs)


def test_seed_is_required():
    with pytest.raises(TypeError, match="seed"):
        adding_problem(4, 10)

