"""The doctor's cures for what the model predicts against what it is scored on.

Three families that `static_checks.py` finds without training:

- **the output as logits**: a cross-entropy fed a linear or ReLU output
  while it expects probabilities, or a softmax on one unit: the output
  layer becomes linear and the loss `from_logits=True` (a binary one for a
  single unit), the numerically stable form Keras recommends;
- **a linear output** for regression targets a sigmoid/tanh/ReLU/softmax
  output cannot reach;
- **standardized targets**: regression targets in the thousands, trained
  on as (y - mean) / std, with the inverse printed for predictions.

Each is a `cures.Cure`, stacked with the others by `search.py`.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from .cures import Context, Cure, NotApplicable, Patient, _rebuilt


def loss_code(loss) -> str:
    """The expression that builds `loss` in a script: `"mse"`, `keras.losses.X(...)`."""
    if isinstance(loss, str):
        return repr(loss)
    if isinstance(loss, keras.losses.Loss):
        cls = type(loss)
        config = loss.get_config()
        try:
            default = cls().get_config()
        except TypeError:  # a custom loss with required arguments
            default = {}
        args = [f"{k}={v!r}" for k, v in config.items()
                if k not in ("name", "reduction", "dtype") and default.get(k) != v]
        prefix = "keras.losses." if getattr(keras.losses, cls.__name__, None) is cls else ""
        return f"{prefix}{cls.__name__}({', '.join(args)})"
    name = getattr(loss, "__name__", repr(loss))
    return f"keras.losses.{name}" if getattr(keras.losses, name, None) is loss else name


def _output_linear(patient: Patient) -> Patient:
    output = patient.model.layers[-1]

    def change(layer, config):
        if layer is not output or config.get("activation") in (None, "linear"):
            return None
        return {**config, "activation": "linear"}
    return _rebuilt(patient, change, comment='activation="linear" in the output layer')


def _logits(patient: Patient, context: Context) -> Patient:
    loss = patient.loss if patient.loss is not None else context.loss
    loss = keras.losses.get(loss) if isinstance(loss, str) else loss
    if not isinstance(loss, keras.losses.Loss):
        loss = keras.losses.get(getattr(loss, "__name__", ""))
        loss = _as_class(loss)
    config = loss.get_config()
    if "from_logits" not in config:
        raise NotApplicable(f"the loss {type(loss).__name__} has no from_logits")
    units = int(patient.model.outputs[0].shape[-1]) if getattr(patient.model, "outputs", None) else 0
    if units == 1 and "Categorical" in type(loss).__name__:
        new = keras.losses.BinaryCrossentropy(from_logits=True)
    else:
        new = type(loss).from_config({**config, "from_logits": True})
    try:
        patient = _output_linear(patient)
    except NotApplicable:
        if config.get("from_logits"):
            raise NotApplicable("the output is linear and the loss takes logits already")
    return dataclasses.replace(patient, loss=new)


def _as_class(fn):
    """The Loss class of a loss function (`categorical_crossentropy` -> its class)."""
    names = {"categorical_crossentropy": keras.losses.CategoricalCrossentropy,
             "sparse_categorical_crossentropy": keras.losses.SparseCategoricalCrossentropy,
             "binary_crossentropy": keras.losses.BinaryCrossentropy}
    cls = names.get(getattr(fn, "__name__", ""))
    if cls is None:
        raise NotApplicable("the loss is not a cross-entropy")
    return cls()


def _linear_output(patient: Patient, context: Context) -> Patient:
    return _output_linear(patient)


def _standardize_targets(patient: Patient, context: Context) -> Patient:
    x, y, x_val, y_val = patient.data
    y = np.asarray(y, np.float64)
    if not np.issubdtype(np.asarray(patient.data[1]).dtype, np.floating):
        raise NotApplicable("the targets are not real numbers")
    mean, std = np.nanmean(y, axis=0), np.nanstd(y, axis=0)
    std = np.where(std > 0, std, 1.0)
    scale = lambda t: ((np.asarray(t, np.float64) - mean) / std).astype("float32")  # noqa: E731
    return dataclasses.replace(patient, data=(x, scale(y), x_val, scale(y_val)), code=patient.code + (
        "# standardize the targets, before anything else (train on these; the inverse below):",
        "y_mean, y_std = np.nanmean(y, axis=0), np.nanstd(y, axis=0)",
        "y = ((y - y_mean) / y_std).astype('float32')  # y_val the same way, if you validate",
        "# after training, predictions in your units: model.predict(x) * y_std + y_mean",
    ))


LOGITS = Cure("the output as logits (from_logits=True)", _logits, "loss")
LINEAR_OUTPUT = Cure("linear output layer", _linear_output, "loss")
TARGET_SCALE = Cure("standardize the targets", _standardize_targets, "data")
