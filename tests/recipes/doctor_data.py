"""Data the doctor's tests share: a linear regression any small net can learn."""

import numpy as np


def linear_data(n=320, d=8, *, seed=0, scale=1.0):
    """`(x * scale, y)`: `n` standard-normal rows of `d` features and `y = x @ w / sqrt(d)` (of the unscaled x)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype("float32")
    return x * np.float32(scale), (x @ rng.normal(size=(d, 1)) / np.sqrt(d)).astype("float32")
