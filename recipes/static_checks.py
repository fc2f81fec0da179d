"""The doctor's static checks: model vs loss vs data, judged before any training.

Seconds, no trial. What Keras itself warns about or silently accepts:

- the output activation against the loss: a linear or ReLU output into a
  cross-entropy that expects probabilities (`from_logits=False`), a
  softmax/sigmoid output into one that expects logits, a softmax on a
  single unit (its output is 1 whatever the input);
- the targets' range against the output activation: a sigmoid cannot
  reach 3.5, a ReLU cannot reach -2, a tanh cannot reach 10;
- the inputs' and targets' scale and finiteness: NaN/inf rows, features
  in the thousands, regression targets in the thousands;
- the targets' shape against the output's (Keras broadcasts a (n, 3)
  target against a (n, 1) output without a word).

`judge(...)` is the pure judgment (numpy in, findings out); `check_setup`
reads what it needs from a compiled model. Each `Finding` names the cure
(a `cures` name, or `None` where only the user can fix it: wrong labels).
File-level validation (a missing array, a wrong dtype) is
`doctor_inputs.py`'s, not this module's.
"""

from __future__ import annotations

import dataclasses

import numpy as np

PROBABILITY_LOSSES = ("categorical_crossentropy", "sparse_categorical_crossentropy",
                      "binary_crossentropy", "categorical_focal_crossentropy",
                      "binary_focal_crossentropy")
PROBABILITY_OUTPUTS = ("softmax", "sigmoid")
RANGES = {"sigmoid": (0.0, 1.0), "softmax": (0.0, 1.0), "tanh": (-1.0, 1.0),
          "relu": (0.0, np.inf), "softplus": (0.0, np.inf), "exponential": (0.0, np.inf)}
SCALE = 30.0  # inputs' or targets' root mean square above this: not "unit" (symptoms.INPUT_RMS)
SCALING_LAYERS = ("Normalization", "Rescaling", "BatchNormalization", "LayerNormalization")
OUT_OF_RANGE = 0.01  # fraction of targets the output activation cannot reach that counts

# The cures' names (recipes/cures.py, recipes/output_cures.py).
LOGITS = "the output as logits (from_logits=True)"
LINEAR_OUTPUT = "linear output layer"
TARGET_SCALE = "standardize the targets"
NORMALIZE = "Normalization in front of the inputs"
DROP_ROWS = "drop the non-finite rows"
FAN_IN = "fan-in initialization"


@dataclasses.dataclass(frozen=True)
class Finding:
    """One thing wrong with the set-up, found without training."""

    check: str  # "output_activation", "target_range", "target_shape", "input_scale", ...
    message: str  # the sentence, naming the values
    cure: str | None  # the cure's name, or None (only the user can fix it)


def judge(*, activation: str, units: int, loss: str, from_logits: bool,
          x_arrays: list, y: np.ndarray, scales_inputs: bool = False,
          output_rms: float = 0.0) -> tuple[Finding, ...]:
    """Everything wrong with one output layer, one loss and the data.

    Args:
        activation: the output layer's activation name (`"linear"` if none).
        units: the output's last dimension.
        loss: the loss' snake_case name (`"mean_squared_error"`, ...).
        from_logits: the loss' `from_logits` (False where it has none).
        x_arrays: the input arrays (non-numeric ones are skipped).
        y: the targets.
        scales_inputs: the model's first layer rescales its inputs
            (`Normalization`, `Rescaling`, a normalization layer): their
            scale is not judged. Defaults to `False`.
        output_rms: the root mean square of the model's output at its
            initial weights on the (finite) inputs: with unit-scale inputs
            and targets, an output `SCALE` x larger than the targets comes
            from the initialization (a deep stack with large gains).
            Defaults to 0 (not judged).

    Returns:
        The findings, most fundamental first.
    """
    found = []
    y = np.asarray(y)
    numeric_y = np.issubdtype(y.dtype, np.number) or y.dtype == bool
    probabilistic = loss in PROBABILITY_LOSSES
    yf = y.astype(np.float64) if numeric_y else None
    finite_y = yf[np.isfinite(yf)] if yf is not None else None
    bad_rows = _nonfinite_rows(x_arrays, yf)
    if bad_rows:
        found.append(Finding("nonfinite", f"{bad_rows} rows of the inputs or targets hold NaN/inf; "
                             "every batch holding one makes the loss NaN", DROP_ROWS))
    if activation == "softmax" and units == 1:
        found.append(Finding("output_activation", "the output is softmax over 1 unit: it is 1.0 "
                             "for every input, so nothing can be learned; use a linear unit "
                             "with BinaryCrossentropy(from_logits=True)", LOGITS))
    elif probabilistic and not from_logits and activation not in PROBABILITY_OUTPUTS:
        found.append(Finding("output_activation", f"the output activation is {activation!r} but "
                             f"{loss}(from_logits=False) expects probabilities in [0, 1]; "
                             "pass from_logits=True with a linear output", LOGITS))
    elif probabilistic and from_logits and activation not in ("linear", None):
        found.append(Finding("output_activation", f"{loss}(from_logits=True) expects logits, but "
                             f"the output activation is {activation!r}; use a linear output",
                             LOGITS))
    elif not probabilistic and activation == "softmax":
        found.append(Finding("output_activation", f"a softmax output under {loss}: the outputs "
                             "are forced to sum to 1; use a linear output for regression",
                             LINEAR_OUTPUT))
    if finite_y is not None and finite_y.size:
        low, high = float(finite_y.min()), float(finite_y.max())
        if probabilistic and loss.startswith("binary") and (low < 0 or high > 1):
            found.append(Finding("target_range", f"binary cross-entropy needs targets in [0, 1]; "
                                 f"they span [{low:.3g}, {high:.3g}]: check the labels", None))
        if loss == "sparse_categorical_crossentropy" and units > 1 and high >= units:
            found.append(Finding("target_range", f"sparse labels reach {high:.0f} but the output "
                                 f"has {units} units (classes 0..{units - 1}): check the labels "
                                 "or the output size", None))
        if not probabilistic and activation in RANGES:
            lo, hi = RANGES[activation]
            outside = float(np.mean((finite_y < lo) | (finite_y > hi)))
            if outside > OUT_OF_RANGE:
                found.append(Finding("target_range", f"{outside:.0%} of the targets lie outside "
                                     f"[{lo:g}, {hi:g}], the range of the {activation!r} output "
                                     f"(targets span [{low:.3g}, {high:.3g}]); use a linear "
                                     "output", LINEAR_OUTPUT))
        if not probabilistic:
            rms = float(np.sqrt(np.mean(finite_y ** 2)))
            if rms > SCALE:
                found.append(Finding("target_scale", f"the targets' root mean square is {rms:.3g} "
                                     f"(mean {finite_y.mean():.3g}, std {finite_y.std():.3g}): "
                                     "a unit-scale model starts far off and its loss gradients "
                                     f"are ~{rms:.0f}x too large; standardize them", TARGET_SCALE))
    columns = y.shape[1] if y.ndim == 2 else 1 if y.ndim == 1 else None
    if not probabilistic and columns is not None and columns != units:
        found.append(Finding("target_shape", f"the targets have {columns} column(s) but the "
                             f"output has {units}: Keras broadcasts one against the other "
                             "without an error; make them match", None))
    rms = 0.0 if scales_inputs else _input_rms(x_arrays)
    if rms > SCALE:
        found.append(Finding("input_scale", f"the inputs' root mean square is {rms:.3g}, not ~1: "
                             "the first layer's pre-activations and gradients are that many "
                             "times too large", NORMALIZE))
    y_rms = float(np.sqrt(np.mean(finite_y ** 2))) if finite_y is not None and finite_y.size else 1.0
    if rms <= SCALE and output_rms > SCALE * max(1.0, y_rms) and not probabilistic:
        found.append(Finding("initial_output", f"at its initial weights the model's output has a root "
                             f"mean square of {output_rms:.3g}, against {y_rms:.3g} for the targets, "
                             "on unit-scale inputs: the initialization multiplies the signal at each "
                             "layer; use fan-in initialization", FAN_IN))
    return tuple(found)


def check_setup(model, x, y) -> tuple[Finding, ...]:
    """`judge` on a compiled Keras model's output layer and loss, and the data."""
    activation, units = output_activation(model)
    loss, from_logits = loss_name(model.loss)
    arrays = list(x) if isinstance(x, (list, tuple)) else [x]
    first = [type(layer).__name__ for layer in getattr(model, "layers", [])[:1]]
    return judge(activation=activation, units=units, loss=loss, from_logits=from_logits,
                 x_arrays=arrays, y=np.asarray(y),
                 scales_inputs=bool(set(first) & set(SCALING_LAYERS)),
                 output_rms=initial_output_rms(model, arrays))


def initial_output_rms(model, arrays, rows: int = 256) -> float:
    """The root mean square of the model's output on its first `rows` finite input rows (0 if none)."""
    from .trials import predict

    if not all(np.issubdtype(np.asarray(a).dtype, np.number) for a in arrays):
        return 0.0
    sample = [np.asarray(a[:rows]) for a in arrays]
    keep = np.ones(len(sample[0]), bool)
    for a in sample:
        keep &= np.isfinite(a.astype(np.float64).reshape(len(a), -1)).all(1)
    if not keep.any():
        return 0.0
    sample = [a[keep] for a in sample]
    out = predict(model, sample if len(sample) > 1 else sample[0])
    out = np.asarray(out[0] if isinstance(out, list) else out, np.float64)
    out = out[np.isfinite(out)]
    return float(np.sqrt(np.mean(out ** 2))) if out.size else float("inf")


def output_activation(model) -> tuple[str, int]:
    """The model's last layer's activation name and the output's last dimension."""
    layers = getattr(model, "layers", [])
    layer = layers[-1] if layers else None
    config = layer.get_config() if layer is not None else {}
    activation = config.get("activation", "linear")
    if type(layer).__name__ == "Softmax":
        activation = "softmax"
    if isinstance(activation, dict):  # a serialized function
        activation = activation.get("config", activation.get("class_name", "linear"))
    units = int(model.outputs[0].shape[-1]) if getattr(model, "outputs", None) else 1
    return str(activation or "linear"), units


def loss_name(loss) -> tuple[str, bool]:
    """A loss' snake_case name and its `from_logits`."""
    import keras

    if isinstance(loss, str):
        loss = keras.losses.get(loss)
    config = loss.get_config() if hasattr(loss, "get_config") else {}
    fn = getattr(loss, "fn", loss)
    name = getattr(fn, "__name__", "") or config.get("name", "")
    aliases = {"mse": "mean_squared_error", "mae": "mean_absolute_error"}
    return aliases.get(name, name), bool(config.get("from_logits", False))


def _nonfinite_rows(x_arrays, yf) -> int:
    keep = np.ones(len(x_arrays[0]), bool)
    for array in x_arrays:
        array = np.asarray(array)
        if np.issubdtype(array.dtype, np.number):
            keep &= np.isfinite(array.astype(np.float64).reshape(len(array), -1)).all(1)
    if yf is not None:
        keep &= np.isfinite(yf.reshape(len(yf), -1)).all(1)
    return int((~keep).sum())


def _input_rms(x_arrays) -> float:
    values = [np.asarray(a, np.float64).ravel() for a in x_arrays
              if np.issubdtype(np.asarray(a).dtype, np.floating)]
    if not values:
        return 0.0
    values = np.concatenate(values)
    values = values[np.isfinite(values)]
    return float(np.sqrt(np.mean(values ** 2))) if values.size else 0.0
