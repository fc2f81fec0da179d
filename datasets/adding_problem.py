"""The adding problem: a long-memory regression task for recurrent networks.

Each sequence has two channels. Channel 0 holds random numbers drawn from
U(0, 1); channel 1 is a marker that is 1.0 at exactly one position in the first
half of the sequence, 1.0 at exactly one position in the second half, and 0.0
everywhere else. The target is the sum of the two marked numbers. To solve it
a network must carry the first marked value across about `seq_len / 2` steps,
which is what makes plain RNNs' gradients vanish or explode on long sequences.
"""

from __future__ import annotations

import math

import numpy as np

from ._checks import check_int, check_seed
from .scaling import scale_features

# Mean squared error of always predicting 1.0, the target's mean. The target
# is the sum of two independent U(0, 1) values: its mean is 1/2 + 1/2 = 1 and
# its variance is 1/12 + 1/12 = 1/6, and the MSE of predicting the mean is the
# variance. A model must get below this line to have learned anything.
ADDING_PROBLEM_BASELINE_MSE: float = 1.0 / 6.0


def adding_problem(
    n: int,
    seq_len: int,
    *,
    seed: int,
    input_scale: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Generates the adding problem of Hochreiter & Schmidhuber (1997).

    The variant is the one of Arjovsky et al. (2016): one marker is placed
    uniformly at random in the first `seq_len // 2` steps and the other in the
    remaining steps. Predicting the constant 1.0 scores an MSE of
    `ADDING_PROBLEM_BASELINE_MSE` (1/6) whatever `seq_len` is.

    `input_scale` multiplies channel 0 only, to show the "poorly scaled
    inputs" cause of exploding gradients. The target is always the sum of the
    *unscaled* marked values, so it stays in [0, 2) and the 1/6 baseline holds
    at every `input_scale`: the task is the same, only the units of the input
    changed (as if it were recorded in millimetres instead of metres). This
    keeps losses comparable across scales, and it means that standardizing the
    inputs (e.g. with `keras.layers.Normalization`) recovers the well-scaled
    problem exactly; a target that scaled with the input would instead mix in
    a second cause, a poorly scaled loss.

    Args:
        n: Number of sequences, an int >= 1.
        seq_len: Length of every sequence, an int >= 2 (each half needs one
            marker).
        seed: Seed for `numpy.random.default_rng`; the same seed gives the
            same data. No global random state is used.
        input_scale: Factor applied to channel 0 (the random values), a finite
            float > 0. Defaults to 1.0. The marker channel and the target are
            not scaled.

    Returns:
        A tuple `(x, y)`: `x` is a float32 array of shape `(n, seq_len, 2)` and
        `y` a float32 array of shape `(n, 1)` with values in [0, 2).

    Raises:
        ValueError: If `n < 1`, `seq_len < 2`, `seed` is not an int >= 0, or
            `input_scale` is not a finite float > 0.

    Example:

    >>> x, y = adding_problem(4, 100, seed=0)
    >>> x.shape, y.shape
    ((4, 100, 2), (4, 1))
    >>> bool(np.all(x[:, :, 1].sum(axis=1) == 2.0))
    True

    References:
        - Hochreiter & Schmidhuber, "Long Short-Term Memory", Neural
          Computation 9(8), 1997 (experiment 4, the adding problem).
        - Arjovsky, Shah & Bengio, "Unitary Evolution Recurrent Neural
          Networks", ICML 2016, https://arxiv.org/abs/1511.06464.
    """
    func = "adding_problem"
    n = check_int(func, "n", n, 1)
    seq_len = check_int(func, "seq_len", seq_len, 2)
    seed = check_seed(func, seed)
    try:
        scale_ok = math.isfinite(input_scale) and input_scale > 0
    except TypeError:
        scale_ok = False
    if not scale_ok:
        raise ValueError(
            f"{func} received input_scale={input_scale!r}; expected a finite "
            "float > 0 (1.0 leaves the inputs in [0, 1))."
        )

    rng = np.random.default_rng(seed)
    values = rng.uniform(0.0, 1.0, size=(n, seq_len))
    half = seq_len // 2
    first = rng.integers(0, half, size=n)
    second = rng.integers(half, seq_len, size=n)

    markers = np.zeros((n, seq_len))
    rows = np.arange(n)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0

    # Float32 first, so the target is exactly the sum of the values the model
    # sees (before scaling).
    values = values.astype(np.float32)
    y = (values[rows, first] + values[rows, second]).reshape(n, 1)
    x = np.stack([values, markers.astype(np.float32)], axis=-1)
    if input_scale != 1.0:
        x = scale_features(x, [input_scale, 1.0])
    return x, y.astype(np.float32)
