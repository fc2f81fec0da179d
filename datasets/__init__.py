"""Data generators and loaders: plain numpy functions, numpy in, numpy out.

Every generator takes a required keyword `seed` and uses its own
`numpy.random.default_rng(seed)`, never the global random state. Nothing here
imports Keras, TensorFlow or the rest of gradguard.
"""

from .adding_problem import ADDING_PROBLEM_BASELINE_MSE, adding_problem
from .csv_windows import load_csv_windows
from .poorly_scaled import poorly_scaled_regression
from .scaling import feature_scales, scale_features

__all__ = [
    "ADDING_PROBLEM_BASELINE_MSE",
    "adding_problem",
    "feature_scales",
    "load_csv_windows",
    "poorly_scaled_regression",
    "scale_features",
]
