"""What a model's structure says before its first step: gains, recurrence, input scale.

Pure numpy (unit-tested in tests/callbacks/test_diagnosis.py); NaNGuard
measures the numbers on the model (`model_evidence.py`).
"""

from __future__ import annotations

import numpy as np

from .norm_history import NORM_FLOOR

WEIGHT_GROWTH = 2.0  # weights' global norm this many times its start: grown (short history)
INPUT_SCALE = 30.0  # inputs' estimated root mean square that is not unit scale
DEPTH_GAIN = 1e3  # product of the kernels' gains through the stack that amplifies
MIN_DEPTH = 4  # kernels needed to call a failure `depth`
# An ungated recurrent kernel's largest singular value (`ungated_recurrent_gain`)
# above which the recurrence amplifies. Keras' orthogonal initializer reads
# 1.0000001 in float32, so `> 1.0` would blame every default SimpleRNN; 5%
# is far above rounding and far below the gains that explode within a
# sequence of tens of steps (a ReLU SimpleRNN at 1.3: 190x its gain-1
# state after 40 steps).
RECURRENT_GAIN = 1.05


def kernel_gains(kernels: list[np.ndarray]) -> list[float]:
    """Each kernel's gain: weight std times sqrt(fan-in).

    The fan-in is every axis but the last (a Dense kernel's rows, a
    convolution's window times its input channels). About 1 for Glorot and
    fan-in variance scaling (sqrt(2) for He); the product through a stack is
    how much the stack amplifies a signal at initialization.
    """
    return [float(np.std(k) * np.sqrt(np.prod(k.shape[:-1])))
            for k in kernels if k.ndim >= 2 and k.size > 1]


def ungated_recurrent_gain(kernels: list[np.ndarray]) -> float | None:
    """The largest singular value among the ungated recurrent kernels.

    A SimpleRNN's recurrent kernel is square, `(units, units)`: above 1 its
    loop amplifies (the `recurrence` sign, `RECURRENT_GAIN`). A GRU's
    `(units, 3 units)` and an LSTM's `(units, 4 units)` concatenate their
    gates' blocks, and at initialization the update or forget gate (about
    0.5) damps the loop: on the population's 40-step sequences a GRU's or
    LSTM's state after 40 steps at recurrent gain 2 is within 10% (tanh)
    or 20% (ReLU cells) of its gain-1 twin's, and so is its loss after 24
    steps, where a ReLU SimpleRNN's state at gain 1.3 is 190x its twin's
    (`python -m benchmarks.recurrent_gain_twins`). Gated kernels are left
    out.

    Returns:
        The largest singular value of the square kernels, `None` if none.
    """
    gains = [float(np.linalg.norm(np.asarray(k, dtype=np.float64), 2))
             for k in kernels if np.ndim(k) == 2 and k.shape[0] == k.shape[1]]
    return max(gains, default=None)


def input_ratio(variable_norms: np.ndarray, kernel: int, bias: int,
                fan_in: int) -> float | None:
    """First layer's kernel gradient norm over its bias's, per sqrt(fan-in).

    For a first layer `x @ W + b` this estimates the inputs' root mean
    square: about 1 for standardized inputs. Rows where either norm is
    non-finite or the bias norm is 0 are left out; the median of the rest.
    """
    norms = np.asarray(variable_norms, dtype=np.float64)
    if len(norms) == 0:
        return None
    k, b = norms[:, kernel], norms[:, bias]
    ok = np.isfinite(k) & np.isfinite(b) & (b > NORM_FLOOR)
    if not ok.any():
        return None
    return float(np.median(k[ok] / b[ok]) / np.sqrt(fan_in))


def first_layer_dead(variable_norms: np.ndarray, kernel: int, bias: int,
                     fan_in: int = 1) -> bool:
    """Whether the first layer's kernel and bias gradients were 0 at every step.

    Only finite rows count, and there must be one: a net saturated from its
    first step (every unit's gradient rounded to 0), not a non-finite batch.
    `fan_in` is unused (the `input_columns` triple passes through).
    """
    norms = np.asarray(variable_norms, dtype=np.float64)
    if len(norms) == 0:
        return False
    k, b = norms[:, kernel], norms[:, bias]
    ok = np.isfinite(k) & np.isfinite(b)
    return bool(ok.any() and (k[ok] <= NORM_FLOOR).all() and (b[ok] <= NORM_FLOOR).all())


def first_layer_unapplied(variable_norms: np.ndarray, kernel: int, bias: int) -> bool:
    """Whether no row gives the first layer a finite kernel and bias gradient.

    No step applied one yet (a loss scaler that skipped every step so far),
    so `input_ratio` has nothing to divide and `first_layer_dead` nothing to
    call dead.
    """
    norms = np.asarray(variable_norms, dtype=np.float64)
    if len(norms) == 0:
        return True
    return not (np.isfinite(norms[:, kernel]) & np.isfinite(norms[:, bias])).any()


def input_scale_of(ratio: float | None, dead: bool,
                   measured_rms: float | None) -> tuple[float | None, bool]:
    """The inputs' scale as the first layer sees it: `(scale, measured)`.

    The gradient estimate (`input_ratio`) where it exists. Where the first
    layer's gradients were 0 at every step (`dead`, `first_layer_dead`: a
    net saturated from its first step) there is nothing to divide, and the
    fit's first batch's measured root mean square of its float inputs
    (`measured_rms`) stands in (`measured` is then `True`). A first kernel
    that feeds only normalization has no columns and is never `dead`:
    there the inputs' scale does not reach the loss.
    """
    if ratio is not None or not dead or not measured_rms:
        return ratio, False
    return float(measured_rms), True


def input_scale(variable_norms: np.ndarray, columns: tuple | None,
                measured_rms: float | None) -> tuple[float | None, bool]:
    """`input_scale_of` from the per-variable norms: `(scale, measured)`.

    `columns` is `model_evidence.input_columns`' `(kernel, bias, fan_in)`, or
    `None` (no first kernel to read: no scale).
    """
    if columns is None:
        return None, False
    return input_scale_of(input_ratio(variable_norms, *columns),
                          first_layer_dead(variable_norms, *columns), measured_rms)


def structural_sign(gains, recurrent_gain: float | None,
                    input_ratio: float | None) -> str | None:
    """The structural cause a model shows before its first step, or `None`.

    `recurrence` (a recurrent gain above `RECURRENT_GAIN`), `depth`
    (`MIN_DEPTH` kernels or more whose gains multiply past `DEPTH_GAIN`) or
    `input_scale` (an `input_ratio` above `INPUT_SCALE`), in that order.
    """
    gains = list(gains)
    if recurrent_gain is not None and recurrent_gain > RECURRENT_GAIN:
        return "recurrence"
    if len(gains) >= MIN_DEPTH and float(np.prod(gains)) > DEPTH_GAIN:
        return "depth"
    if input_ratio is not None and input_ratio > INPUT_SCALE:
        return "input_scale"
    return None
