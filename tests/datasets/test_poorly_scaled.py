import re

import numpy as np
import pytest

from gradguard.datasets import poorly_scaled_regression


@pytest.mark.parametrize("n, n_features", [(1, 1), (10, 3), (100, 8)])
def test_shapes_and_dtypes(n, n_features):
    x, y = poorly_scaled_regression(n, n_features, seed=0)
    assert x.shape == (n, n_features)
    assert y.shape == (n, 1)
    assert x.dtype == np.float32 and y.dtype == np.float32
    assert np.all(np.isfinite(x)) and np.all(np.isfinite(y))


@pytest.mark.parametrize("scale_range", [(1e-3, 1e4), (1.0, 100.0), (0.5, 0.5)])
def test_feature_stds_span_the_scale_range(scale_range):
    x, _ = poorly_scaled_regression(20_000, 8, scale_range=scale_range, seed=1)
    stds = x.astype(np.float64).std(axis=0)
    # Each std is its scale times the sample std of N(0, 1) draws (within ~3%).
    np.testing.assert_allclose(stds[0], scale_range[0], rtol=0.03)
    np.testing.assert_allclose(stds[-1], scale_range[1], rtol=0.03)
    # Log-evenly spread: consecutive ratios are all the same.
    ratios = stds[1:] / stds[:-1]
    expected_ratio = (scale_range[1] / scale_range[0]) ** (1 / 7)
    np.testing.assert_allclose(ratios, expected_ratio, rtol=0.06)


def test_every_feature_matters_equally_once_standardized():
    x, y = poorly_scaled_regression(50_000, 6, noise_std=0.1, seed=2)
    z = (x - x.mean(axis=0)) / x.std(axis=0)
    w, *_ = np.linalg.lstsq(z.astype(np.float64), y[:, 0].astype(np.float64), rcond=None)
    np.testing.assert_allclose(np.abs(w), 1 / np.sqrt(6), rtol=0.03)
    residual = y[:, 0] - z @ w
    np.testing.assert_allclose(residual.std(), 0.1, rtol=0.05)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n=0, n_features=3), "poorly_scaled_regression received n=0; expected an int >= 1."),
        (
            dict(n=10, n_features=0),
            "poorly_scaled_regression received n_features=0; expected an int >= 1.",
        ),
        (
            dict(n=10, n_features=3, scale_range=(0.0, 1.0)),
            "poorly_scaled_regression received scale_range=(0.0, 1.0); expected two "
            "finite floats (smallest, largest) with 0 < smallest <= largest, e.g. (1e-3, 1e4).",
        ),
        (
            dict(n=10, n_features=3, scale_range=(10.0, 1.0)),
            "poorly_scaled_regression received scale_range=(10.0, 1.0); expected two",
        ),
        (
            dict(n=10, n_features=3, scale_range=(1.0,)),
            "poorly_scaled_regression received scale_range=(1.0,); expected two",
        ),
        (
            dict(n=10, n_features=3, noise_std=-0.1),
            "poorly_scaled_regression received noise_std=-0.1; expected a finite float >= 0.",
        ),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        poorly_scaled_regression(**kwargs, seed=0)
