"""Float16 overflow or bad data? The failing batch's loss again in float32.

Under a mixed-precision policy (`mixed_float16`) a batch whose float16
activations overflow gives a non-finite loss although every value in it is
finite: the same trace a NaN in the data leaves. One forward pass tells them
apart: the same batch, from the same weights, on a copy of the model whose
layers compute in float32. Finite there and not as given: the float16 range
is the cause (`loss_scale`); non-finite there too: the data or the state.

The copy is `keras.models.clone_model` with every layer rebuilt from its
config under the float32 policy (functional and Sequential models; a
subclassed model is not cloned and the rules decide), the weights set from
the user's (float32 already: mixed precision keeps float32 variables).
Where the model cannot be cloned (a custom layer without `get_config`, as
keras-io's traffic forecaster publishes its graph-convolution layer; a
subclassed model), `loss_in_float32` runs the forward pass on the model
itself with every layer's policy set to float32 for that one call and put
back after (`computing_in_float32`): the weights are not touched, and the
compiled train step, traced under the float16 policies, is not retraced.
Nothing here runs unless an event fires under a float16 policy.
"""

from __future__ import annotations

import contextlib
import math

import keras
import numpy as np


def computes_in_float16(model) -> bool:
    """Whether any layer of `model` computes in float16 or bfloat16."""
    layers = [model, *model._flatten_layers(include_self=False)]
    return any(getattr(getattr(l, "dtype_policy", None), "compute_dtype", None)
               in ("float16", "bfloat16") for l in layers)


def float32_copy(model):
    """A copy of `model` computing in float32 with its weights, or `None`."""
    def rebuild(layer):
        config = layer.get_config()
        config["dtype"] = "float32"
        return layer.__class__.from_config(config)

    policy = keras.config.dtype_policy()
    try:
        # The model itself casts its inputs to its compute dtype: made under float32 too.
        keras.config.set_dtype_policy("float32")
        try:
            copy = keras.models.clone_model(model, clone_function=rebuild)
        finally:
            keras.config.set_dtype_policy(policy)
        copy.set_weights([np.asarray(w, dtype="float32") if np.asarray(w).dtype.kind == "f"
                          else w for w in model.get_weights()])
        kwargs = {"loss": model.loss} if getattr(model, "loss", None) is not None else {}
        copy.compile(run_eagerly=True, **kwargs)
        return copy
    except Exception:  # noqa: BLE001  (no copy: the rules decide)
        return None


def batch_loss(model, data) -> float:
    """The loss of one batch `(x, y, sample_weight)` on `model` (no update)."""
    x, y, sw = data
    with np.errstate(all="ignore"):
        logs = model.test_on_batch(x, y, sample_weight=sw, return_dict=True)
    value = logs.get("loss", next(iter(logs.values()), float("nan")))
    return float(np.asarray(keras.ops.convert_to_numpy(value)))


@contextlib.contextmanager
def computing_in_float32(model):
    """Every float16/bfloat16 layer of `model` computes in float32 inside; put back after."""
    layers = [model, *model._flatten_layers(include_self=False)]
    saved = [(layer, layer._dtype_policy) for layer in layers
             if getattr(layer.dtype_policy, "compute_dtype", None) in ("float16", "bfloat16")]
    try:
        for layer, _ in saved:
            layer._dtype_policy = keras.dtype_policies.get("float32")
        yield
    finally:
        for layer, policy in saved:  # the very objects (a policy map stays a map)
            layer._dtype_policy = policy


def loss_in_float32(model, data) -> float | None:
    """One batch's loss with `model` computing in float32, on the model itself, or `None`.

    Only a single compiled loss (a `Loss`, a name or a function) on the
    outputs: the loss is computed from the outputs here, not by
    `compute_loss`, whose loss trackers the next step's logs would carry.
    Regularization penalties are left out (the question is only whether
    the loss is finite).
    """
    x, y, sw = data
    loss = getattr(model, "loss", None)
    if loss is None or isinstance(loss, (dict, list, tuple)) or y is None:
        return None
    loss = keras.losses.get(loss)
    with computing_in_float32(model), np.errstate(all="ignore"):
        y_pred = model(x, training=False)
        if isinstance(loss, keras.losses.Loss):
            value = loss(y, y_pred, sample_weight=sw)
        else:
            value = keras.ops.mean(loss(y, y_pred))
    return float(np.asarray(keras.ops.convert_to_numpy(value)))


def judge_float32(as_given: float, in_float32: float) -> bool:
    """Whether float32 removes the non-finite loss: a float16 overflow."""
    return not math.isfinite(as_given) and math.isfinite(in_float32)


# The cure for a float16 overflow (`loss_scale`), whichever replay found it.
FLOAT16_CURE = ("keep the values that reach float16 within its range (~6.5e4): "
                "standardize the inputs, keep embeddings and activations small "
                "(normalization layers), or compute the overflowing layers in float32 "
                "(dtype='float32' on them)")
