"""A learning-rate range test for any compiled Keras 3 model, on any backend.

Smith's range test (fastai's `lr_find`, Lightning's `Tuner.lr_find`): train
a copy of the model for a few steps while the learning rate grows
exponentially from `start_lr` to `end_lr`, one batch per rate; smooth the
per-batch loss (debiased, as fastai does); stop when it passes `stop_factor` x the best loss seen (the
rate where training diverges); suggest the rate where the smoothed loss
falls fastest against log(rate) before its minimum (`"steepest"`, as
Lightning does) or the minimum's rate / 10 (`"min/10"`, fastai's classic
rule).

The sweep trains a faithful copy (`model_copy.faithful_copy`) with a fresh
copy of the optimizer, so the user's model, its weights and its optimizer
state are never touched. It uses only backend-neutral Keras API
(`train_on_batch`, the optimizer's `learning_rate` variable), so it runs
under TensorFlow, JAX and PyTorch alike.
"""

from __future__ import annotations

import dataclasses
import math

import keras
import numpy as np

from .model_copy import faithful_copy

METHODS = ("steepest", "min/10")


@dataclasses.dataclass(frozen=True)
class LRFinderResult:
    """What one range test measured, and the rate it suggests."""

    learning_rates: np.ndarray  # the rate of each step trained
    losses: np.ndarray  # each step's training loss (before that step's update)
    smoothed: np.ndarray  # the losses, exponentially smoothed and debiased
    suggestion: float  # the suggested learning rate (by `method`)
    min_loss_lr: float  # the rate at the smoothed loss' minimum
    diverged_lr: float | None  # the rate the sweep stopped at; None if it never diverged
    method: str  # "steepest" or "min/10"

    def to_dataframe(self):
        """One row per step: learning_rate, loss, smoothed."""
        import pandas as pd

        return pd.DataFrame({"learning_rate": self.learning_rates, "loss": self.losses,
                             "smoothed": self.smoothed})


def find_learning_rate(model: keras.Model, x, y, *, start_lr: float = 1e-7,
                       end_lr: float = 10.0, num_steps: int = 100, batch_size: int = 32,
                       stop_factor: float = 4.0, smoothing: float = 0.9,
                       method: str = "steepest", seed: int = 0) -> LRFinderResult:
    """Sweeps the learning rate exponentially on a copy and suggests one.

    Args:
        model: a compiled Keras model with one loss and an optimizer whose
            learning rate is a number (not a schedule). Never changed.
        x: training inputs (an array or a list of arrays).
        y: training targets.
        start_lr: float > 0, the first rate. Defaults to 1e-7.
        end_lr: float > `start_lr`, the last rate. Defaults to 10.0.
        num_steps: int >= 5, the batches (rates) of the sweep. Defaults to 100.
        batch_size: int >= 1. Defaults to 32.
        stop_factor: float > 1; stop once the smoothed loss exceeds this x
            its best. Defaults to 4.0 (fastai, Lightning).
        smoothing: float in [0, 1), the exponential smoothing of the loss.
            Defaults to 0.9: a window of ~10 steps. (fastai's 0.98, a
            window of ~50, lagged the fall of the loss by half a 100-step
            sweep on the MLPs of the tests, and its minimum sat at step 0.)
        method: `"steepest"` (the steepest descent of the smoothed loss
            before its minimum) or `"min/10"`. Defaults to `"steepest"`.
        seed: the order of the batches. Defaults to 0.

    Returns:
        An `LRFinderResult`.

    Raises:
        ValueError: for a bad argument, an uncompiled model or a learning
            rate schedule.

    Example:

    ```python
    found = find_learning_rate(model, x, y)
    model.optimizer.learning_rate.assign(found.suggestion)
    found.to_dataframe().plot(x="learning_rate", y="smoothed", logx=True)
    ```

    References:
        - Smith, "Cyclical Learning Rates for Training Neural Networks",
          WACV 2017.
        - Howard & Gugger, "Fastai: A Layered API for Deep Learning",
          Information 2020 (`Learner.lr_find`).
    """
    _check(model, start_lr, end_lr, num_steps, batch_size, stop_factor, smoothing, method)
    copy = faithful_copy(model)
    inner = model.optimizer
    if isinstance(inner, keras.optimizers.LossScaleOptimizer):
        inner = inner.inner_optimizer  # compile wraps it again under mixed_float16
    config = {**inner.get_config(), "learning_rate": float(start_lr)}
    optimizer = type(inner).from_config(config)
    copy.compile(optimizer=optimizer, loss=model.loss)
    arrays = list(x) if isinstance(x, (list, tuple)) else [x]
    rows = _rows(len(y), num_steps * batch_size, seed)
    rates = start_lr * (end_lr / start_lr) ** (np.arange(num_steps) / (num_steps - 1))
    losses, smoothed, average, best, diverged = [], [], 0.0, math.inf, None
    for step, rate in enumerate(rates):
        optimizer.learning_rate.assign(float(rate))
        take = rows[step * batch_size:(step + 1) * batch_size]
        batch = [np.asarray(a)[take] for a in arrays]
        loss = float(np.asarray(copy.train_on_batch(
            batch if isinstance(x, (list, tuple)) else batch[0], np.asarray(y)[take])).ravel()[0])
        if not math.isfinite(loss):
            diverged = float(rate)
            break
        average = smoothing * average + (1 - smoothing) * loss
        value = average / (1 - smoothing ** (step + 1))
        losses.append(loss)
        smoothed.append(value)
        best = min(best, value)
        if step > 0 and value > stop_factor * best:
            diverged = float(rate)
            break
    rates, smoothed = rates[:len(losses)], np.asarray(smoothed)
    if len(losses) == 0:
        raise ValueError(f"find_learning_rate: the loss was not finite at start_lr={start_lr!r}; "
                         "check the data for NaN/inf or lower start_lr.")
    low = len(rates) // 10 + int(np.argmin(smoothed[len(rates) // 10:]))
    suggestion = suggest(rates, smoothed, method)
    return LRFinderResult(rates, np.asarray(losses), smoothed, suggestion,
                          float(rates[low]), diverged, method)


def suggest(rates: np.ndarray, smoothed: np.ndarray, method: str = "steepest") -> float:
    """The suggested rate from a sweep's rates and smoothed losses.

    The first tenth of the sweep is skipped, as Lightning skips its first
    10 steps: the smoothing is still warming up there and one lucky batch
    can be the minimum. `"steepest"`: the rate where the smoothed loss falls
    fastest against log(rate) (the slope taken across +-5% of the sweep, so
    one noisy step does not decide it), from there to the minimum.
    `"min/10"`: the minimum's rate / 10. `"steepest"` falls back to
    `"min/10"` where the loss never fell; neither goes below the first rate.
    """
    first = len(rates) // 10
    low = first + int(np.argmin(smoothed[first:]))
    if method == "steepest" and low - first >= 2:
        k = max(1, len(rates) // 20)
        logs = np.log(rates)
        steps = np.arange(first, low + 1)
        ahead, behind = np.minimum(steps + k, low), np.maximum(steps - k, first)
        slope = (smoothed[ahead] - smoothed[behind]) / (logs[ahead] - logs[behind])
        if slope.min() < 0:
            return float(rates[steps[int(np.argmin(slope))]])
    return float(max(rates[low] / 10, rates[0]))


def _rows(n: int, count: int, seed: int) -> np.ndarray:
    """`count` row indices: shuffled passes over the data, no row twice in a pass."""
    rng = np.random.default_rng(seed)
    passes = -(-count // n)
    return np.concatenate([rng.permutation(n) for _ in range(passes)])[:count]


def _check(model, start_lr, end_lr, num_steps, batch_size, stop_factor, smoothing, method):
    def bad(name, value, expected):
        raise ValueError(f"find_learning_rate received {name}={value!r}; expected {expected}.")

    if not (isinstance(start_lr, (int, float)) and start_lr > 0):
        bad("start_lr", start_lr, "a float > 0")
    if not (isinstance(end_lr, (int, float)) and end_lr > start_lr):
        bad("end_lr", end_lr, f"a float > start_lr={start_lr!r}")
    if not isinstance(num_steps, int) or num_steps < 5:
        bad("num_steps", num_steps, "an int >= 5")
    if not isinstance(batch_size, int) or batch_size < 1:
        bad("batch_size", batch_size, "an int >= 1")
    if not (isinstance(stop_factor, (int, float)) and stop_factor > 1):
        bad("stop_factor", stop_factor, "a float > 1")
    if not (isinstance(smoothing, (int, float)) and 0 <= smoothing < 1):
        bad("smoothing", smoothing, "a float in [0, 1)")
    if method not in METHODS:
        bad("method", method, f"one of {METHODS}")
    if getattr(model, "optimizer", None) is None or getattr(model, "loss", None) is None:
        raise ValueError("find_learning_rate received an uncompiled model; call "
                         "model.compile(optimizer=..., loss=...) first.")
    inner = getattr(model.optimizer, "inner_optimizer", model.optimizer)
    if isinstance(inner.get_config().get("learning_rate"), dict):
        raise ValueError("find_learning_rate received an optimizer with a learning rate schedule; "
                         "compile with a number (the sweep sets the rate itself).")
