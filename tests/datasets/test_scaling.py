import re

import numpy as np
import pytest

from gradguard.datasets import feature_scales, scale_features


def test_scale_features_multiplies_the_last_axis_and_copies():
    x = np.arange(24, dtype=np.float32).reshape(2, 4, 3)
    scaled = scale_features(x, [1.0, 10.0, 0.5])
    np.testing.assert_array_equal(scaled, x * np.array([1.0, 10.0, 0.5], np.float32))
    assert scaled.dtype == np.float32
    assert x[0, 0, 1] == 1.0  # input untouched


def test_scale_features_accepts_a_scalar():
    x = np.ones((3, 2))
    np.testing.assert_array_equal(scale_features(x, 4.0), np.full((3, 2), 4.0))


def test_feature_scales_pools_every_axis_but_the_last():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 20, 2)) * np.array([1.0, 100.0])
    expected = np.array([x[..., 0].std(), x[..., 1].std()])
    np.testing.assert_allclose(feature_scales(x), expected)


@pytest.mark.parametrize(
    "scales, message",
    [
        (
            [1.0, 2.0],
            "scale_features received 2 scales for x with 3 features (shape (4, 3)); "
            "expected a scalar or one scale per feature (3).",
        ),
        ([1.0, np.nan, 1.0], "scale_features received scales=[1.0, nan, 1.0]; expected finite numbers."),
    ],
)
def test_scale_features_bad_scales(scales, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        scale_features(np.ones((4, 3)), scales)


def test_feature_scales_rejects_empty_input():
    with pytest.raises(ValueError, match=re.escape("feature_scales received x with shape (0, 3)")):
        feature_scales(np.ones((0, 3)))
