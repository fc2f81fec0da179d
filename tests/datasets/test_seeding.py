"""Every generator is a pure function of its seed: same seed, same arrays."""

import numpy as np
import pytest

from gradguard.datasets import adding_problem, poorly_scaled_regression

GENERATORS = {
    "adding_problem": lambda seed: adding_problem(20, 30, seed=seed),
    "poorly_scaled_regression": lambda seed: poorly_scaled_regression(30, 4, seed=seed),
}


@pytest.mark.parametrize("name", GENERATORS)
def test_same_seed_same_data_and_different_seed_different_data(name):
    make = GENERATORS[name]
    (xa, ya), (xb, yb), (xc, yc) = make(7), make(7), make(8)
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(xa, xc)
    assert not np.array_equal(ya, yc)


@pytest.mark.parametrize("name", GENERATORS)
def test_does_not_touch_global_random_state(name):
    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    GENERATORS[name](0)
    assert np.random.rand() == expected
