"""The doctor's cures: each one change to a set-up, applied to a fresh copy.

A `Patient` is what one trial trains: a fresh model (the seed's initial
weights), its optimizer, the data and the lines of code that make it. A
`Cure` turns one patient into another and says so in code; a cure that
cannot apply to this model (a subclassed model has no layer graph to
rebuild, a model without a ReLU has no ReLU to replace) raises
`NotApplicable` with the reason, and the doctor reports that instead of
training something else under its name.

Structural cures rebuild the model layer by layer (`keras.models.clone_model`
with a `clone_function`) and copy every weight the change leaves alone, so a
cure changes what it names and nothing else.

`search.py` ranks them (and `output_cures.py`'s) for one examination.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import keras
import numpy as np

DENSE_LIKE = ("Dense", "EinsumDense", "Conv1D", "Conv2D", "Conv3D")
RNN_CELLS = ("SimpleRNN", "GRU", "LSTM")
LSTM_KEEP = ("units", "return_sequences", "return_state", "go_backwards", "name", "dtype")


class NotApplicable(Exception):
    """The cure does not apply to this model; the message says why."""


@dataclasses.dataclass(frozen=True)
class Patient:
    """What one trial trains, and the code that makes it."""

    model: keras.Model  # a fresh copy holding the seed's initial weights
    optimizer: keras.optimizers.Optimizer  # unbuilt; the trial compiles with it
    data: tuple  # (x, y, x_val, y_val)
    code: tuple[str, ...] = ()  # lines to paste into the user's script, before compile
    loss: object = None  # a changed loss, or None: the user's


@dataclasses.dataclass(frozen=True)
class Context:
    """What the cures may read: the first trial's findings."""

    clip_norm: float | None  # global-norm threshold from the norms before the onset
    bad_rows: tuple[int, ...]  # training rows holding NaN/inf
    loss: object = None  # the user's compiled loss (the LR range test trains with it)
    batch_size: int = 32  # the trials' batch size (the LR range test's too)


@dataclasses.dataclass(frozen=True)
class Cure:
    """One change: `apply(patient, context) -> patient` (or `NotApplicable`)."""

    name: str  # the table's `change`
    apply: Callable[[Patient, Context], Patient]
    kind: str = "optimizer"  # "data", "model", "loss" or "optimizer": the order they stack in

# Stacked cures are applied (and their code printed) in this order: the data
# first (a Normalization is adapted on the rows that are kept), then the
# model's layers, its output and loss, what wraps the model (Normalization
# in front: the layer-by-layer cures need the user's own layer graph), and
# the optimizer last.
KINDS = ("data", "model", "loss", "wrap", "optimizer")


# -- optimizer cures ---------------------------------------------------------


def optimizer_code(optimizer: keras.optimizers.Optimizer) -> str:
    """`optimizer=keras.optimizers.SGD(learning_rate=0.03, ...)`: its non-default settings."""
    cls = type(optimizer)
    config, default = optimizer.get_config(), cls().get_config()
    args = [f"learning_rate={_num(float(_lr(optimizer)))}"]
    for key, value in config.items():
        if key in ("name", "learning_rate") or default.get(key) == value:
            continue
        args.append(f"{key}={_num(value) if isinstance(value, float) else repr(value)}")
    return f"optimizer = keras.optimizers.{cls.__name__}({', '.join(args)})"


def _num(value: float) -> str:
    return f"{value:.3g}"


def _lr(optimizer) -> float:
    rate = optimizer.get_config()["learning_rate"]
    if isinstance(rate, dict):
        raise NotApplicable("the learning rate is a schedule; scale the schedule instead")
    return float(rate)


def _with_optimizer(patient: Patient, optimizer) -> Patient:
    # No line of its own: the printed block ends with the final optimizer
    # and the compile call (`compile_code`), whatever changed it.
    return dataclasses.replace(patient, optimizer=optimizer)


def scale_lr(factor: float) -> Cure:
    """The same optimizer at `factor` times its learning rate."""
    def apply(patient: Patient, context: Context) -> Patient:
        opt = patient.optimizer
        config = {**opt.get_config(), "learning_rate": _lr(opt) * factor}
        return _with_optimizer(patient, type(opt).from_config(config))
    return Cure(f"learning rate x{factor:g}", apply)


def _clip(patient: Patient, context: Context) -> Patient:
    if context.clip_norm is None:
        raise NotApplicable("no stable gradient norms before the onset to set a threshold")
    opt = patient.optimizer
    config = {**opt.get_config(), "clipnorm": None, "clipvalue": None,
              "global_clipnorm": float(f"{context.clip_norm:.3g}")}
    return _with_optimizer(patient, type(opt).from_config(config))


def _adam(patient: Patient, context: Context) -> Patient:
    default = keras.optimizers.Adam()
    if isinstance(patient.optimizer, keras.optimizers.Adam) and \
            _lr(patient.optimizer) == _lr(default) and not patient.optimizer.global_clipnorm:
        raise NotApplicable("the optimizer is Adam at its default learning rate already")
    return _with_optimizer(patient, default)


def _find_rate(patient: Patient, context: Context) -> Patient:
    """The learning rate a range test on this very patient suggests (callbacks/lr_finder.py)."""
    from gradguard.callbacks.lr_finder import find_learning_rate

    opt = patient.optimizer
    _lr(opt)  # a schedule: not applicable
    model = patient.model
    model.compile(optimizer=type(opt).from_config(opt.get_config()),
                  loss=patient.loss if patient.loss is not None else context.loss)
    x, y = patient.data[:2]
    keep = finite_rows(x, y)
    try:
        found = find_learning_rate(model, _take(x, keep), _take(y, keep),
                                   batch_size=context.batch_size, seed=0)
    except ValueError as error:  # the loss is not finite even at 1e-7
        raise NotApplicable(str(error)) from error
    config = {**opt.get_config(), "learning_rate": float(f"{found.suggestion:.2g}")}
    return _with_optimizer(patient, type(opt).from_config(config))


def _adam_found(patient: Patient, context: Context) -> Patient:
    """Adam at the rate a range test run under Adam suggests: a switch of optimizer
    brings its own scale of rates (an embedding model SGD needs at 1 wants Adam near 0.01)."""
    if isinstance(patient.optimizer, keras.optimizers.Adam):
        raise NotApplicable("the optimizer is Adam already: the range test alone tunes its rate")
    return _find_rate(_with_optimizer(patient, keras.optimizers.Adam()), context)


# -- data cures --------------------------------------------------------------


def _drop_rows(patient: Patient, context: Context) -> Patient:
    x, y, x_val, y_val = patient.data
    keep = finite_rows(x, y)
    if keep.all():
        raise NotApplicable("the training data hold no NaN/inf")
    keep_val = finite_rows(x_val, y_val)
    data = (_take(x, keep), _take(y, keep), _take(x_val, keep_val), _take(y_val, keep_val))
    rows = np.flatnonzero(~keep)
    shown = ", ".join(map(str, rows[:10])) + (", ..." if len(rows) > 10 else "")
    return dataclasses.replace(patient, data=data, code=patient.code + (
        f"# drop the {len(rows)} training rows holding NaN/inf (indices {shown}), before anything else:",
        "keep = np.isfinite(x).reshape(len(x), -1).all(1) & np.isfinite(y).reshape(len(y), -1).all(1)",
        "x, y = x[keep], y[keep]",
    ))


def finite_rows(x, y) -> np.ndarray:
    """A boolean per row: True where every input and target value is finite."""
    keep = np.ones(len(y), bool)
    for array in [*(x if isinstance(x, (list, tuple)) else [x]), y]:
        keep &= np.isfinite(np.asarray(array, np.float64).reshape(len(array), -1)).all(1)
    return keep


def _take(array, keep):
    return [a[keep] for a in array] if isinstance(array, (list, tuple)) else array[keep]


# -- model cures -------------------------------------------------------------


def rebuild(model: keras.Model, change: Callable[[keras.layers.Layer, dict], object],
            *, reinitialize: bool = False) -> keras.Model:
    """Clones `model` layer by layer, letting `change(layer, config)` edit each one.

    `change` returns `None` (keep the layer itself: `model` is a trial's
    own faithful copy, so the rebuilt model may share it, and a layer's
    state that is not a weight, such as an adapted vocabulary or
    Normalization's statistics, stays as it is), a config (the same class
    built from it: with the old weights, or fresh ones from its
    initializers when `reinitialize`) or a layer (used as it is; a
    `Sequential` whose first layer is the clone takes the old weights there).
    """
    if not isinstance(model, keras.Sequential) and not _is_functional(model):
        raise NotApplicable("a subclassed model has no layer graph to rebuild")
    copies = []

    def clone(layer):
        config = layer.get_config()
        new = change(layer, config)
        if new is None:
            return layer
        if isinstance(new, dict):
            new = layer.__class__.from_config(new)
            if not reinitialize:
                copies.append((layer, new))
        elif isinstance(new, keras.Sequential):
            copies.append((layer, new.layers[0]))
        return new

    copy = keras.models.clone_model(model, clone_function=clone)
    for old, new in copies:
        if [tuple(w.shape) for w in old.weights] == [tuple(w.shape) for w in new.weights]:
            new.set_weights(old.get_weights())
    return copy


def _is_functional(model) -> bool:
    return type(model).__name__ == "Functional"


def _rebuilt(patient: Patient, change, new_layer: str | None = None,
             reinitialize: bool = False, comment: str = "") -> Patient:
    """`rebuild` with `change`, and the code that does the same to the user's model.

    The code clones the user's model with a `clone_function` that changes
    the same layers (by position in `model.layers`: names differ between
    sessions): with `changes[i]` merged into layer i's config where `change`
    returned configs, else with `new_layer` (an expression of `layer`).
    """
    layers, changed, changes = list(patient.model.layers), [], {}

    def record(layer, config):
        result = change(layer, config)
        if result is not None:
            index = next(i for i, other in enumerate(layers) if other is layer)
            changed.append((index, layer.name))
            if isinstance(result, dict):
                changes[index] = {k: v for k, v in result.items() if config.get(k) != v}
        return result

    model = rebuild(patient.model, record, reinitialize=reinitialize)
    if not changed:
        raise NotApplicable("no layer of this model has what the cure changes")
    positions = [i for i, _ in changed]
    names = ", ".join(name for _, name in changed)
    if new_layer is None:
        lines = (f"changes = {changes!r}",
                 "layers = list(model.layers)",
                 "def cure(layer):",
                 "    if layer not in layers or layers.index(layer) not in changes:",
                 "        return layer",
                 "    return layer.__class__.from_config({**layer.get_config(), "
                 "**changes[layers.index(layer)]})")
    else:
        lines = ("layers = list(model.layers)",
                 "def cure(layer):",
                 f"    if layer not in layers or layers.index(layer) not in {positions!r}:",
                 "        return layer",
                 f"    return {new_layer}")
    return dataclasses.replace(patient, model=model, code=patient.code + (
        f"# {comment or 'rebuild'}: layers {names} (model.layers{positions}), before compile",
        *lines, "model = keras.models.clone_model(model, clone_function=cure)"))


def swap_relu(activation: str) -> Cure:
    """`activation` (`"leaky_relu"` or `"elu"`) in place of every ReLU."""
    def change(layer, config):
        if config.get("activation") == "relu":
            return {**config, "activation": activation}
        return None

    def apply(patient: Patient, context: Context) -> Patient:
        return _rebuilt(patient, change, comment=f'activation="{activation}" instead of "relu"')
    return Cure(f"{activation} instead of relu", apply, "model")


def swap_saturating(activation: str) -> Cure:
    """`activation` (`"relu"` or `"selu"`) in place of every hidden sigmoid/tanh.

    The kernels are re-initialized for the new activation (He for ReLU,
    LeCun for SELU, as its self-normalization needs); the output layer
    keeps its activation.
    """
    init = "he_normal" if activation == "relu" else "lecun_normal"

    def apply(patient: Patient, context: Context) -> Patient:
        output = patient.model.layers[-1]

        def change(layer, config):
            if layer is output or config.get("activation") not in ("sigmoid", "tanh"):
                return None
            if type(layer).__name__ in RNN_CELLS:  # gated cells need their tanh
                return None
            return {**config, "activation": activation, "kernel_initializer": init}
        return _rebuilt(patient, change, reinitialize=True,
                        comment=f'activation="{activation}" instead of sigmoid/tanh')
    return Cure(f"{activation} instead of sigmoid/tanh", apply, "model")


def _fan_in(patient: Patient, context: Context) -> Patient:
    def change(layer, config):
        if type(layer).__name__ not in DENSE_LIKE:
            return None
        # he_normal, lecun_normal: VarianceScaling(2 or 1, "fan_in", "truncated_normal").
        init = "he_normal" if config.get("activation") == "relu" else "lecun_normal"
        return {**config, "kernel_initializer": init,
                **({"bias_initializer": "zeros"} if "bias_initializer" in config else {})}
    return _rebuilt(patient, change, reinitialize=True,
                    comment="fan-in initialization, zero biases")


def _batch_norm(patient: Patient, context: Context) -> Patient:
    output = patient.model.layers[-1].name

    def change(layer, config):
        if type(layer).__name__ not in DENSE_LIKE or layer.name == output:
            return None
        inner = layer.__class__.from_config(config)
        # momentum 0.9: the moving statistics the model predicts with settle
        # within a short run (Keras' 0.99 needs ~500 steps).
        return keras.Sequential([inner, keras.layers.BatchNormalization(momentum=0.9)],
                                name=f"{layer.name}_bn")
    return _rebuilt(patient, change, "keras.Sequential([layer.__class__.from_config("
                    "layer.get_config()), keras.layers.BatchNormalization(momentum=0.9)])",
                    comment="BatchNormalization(momentum=0.9) after each Dense/Conv but the output")


def _orthogonal(patient: Patient, context: Context) -> Patient:
    def change(layer, config):
        if type(layer).__name__ not in RNN_CELLS:
            return None
        return {**config, "recurrent_initializer": "orthogonal"}
    return _rebuilt(patient, change, reinitialize=True, comment="orthogonal recurrent kernels")


def _lstm(patient: Patient, context: Context) -> Patient:
    def change(layer, config):
        if type(layer).__name__ != "SimpleRNN":
            return None
        return keras.layers.LSTM(**{k: config[k] for k in LSTM_KEEP if k in config})
    return _rebuilt(patient, change, "keras.layers.LSTM(**{k: v for k, v in layer.get_config()"
                    f".items() if k in {LSTM_KEEP!r}}})", comment="LSTM instead of SimpleRNN")


def _float32_output(patient: Patient, context: Context) -> Patient:
    output = patient.model.layers[-1].name

    def change(layer, config):
        if layer.name != output:
            return None
        return {**config, "dtype": "float32"}
    return _rebuilt(patient, change, comment='dtype="float32" in the output layer')


def _normalize_inputs(patient: Patient, context: Context) -> Patient:
    """A `Normalization` adapted on the training inputs in front of each input."""
    model = patient.model
    x = patient.data[0]
    arrays = list(x) if isinstance(x, (list, tuple)) else [x]
    inputs, normalized = [], []
    for array in arrays:  # the data's shapes: a subclassed model has no `inputs`
        array = np.asarray(array, np.float32)
        # float32 under mixed_float16 too: the variance of inputs in the
        # thousands (~1e7) overflows float16 (max 65504) and zeroes the output.
        layer = keras.layers.Normalization(axis=-1, dtype="float32")
        layer.adapt(array)
        inputs.append(keras.Input(shape=array.shape[1:]))
        normalized.append(layer(inputs[-1]))
    outputs = model(normalized if len(normalized) > 1 else normalized[0])
    repaired = keras.Model(inputs if len(inputs) > 1 else inputs[0], outputs)
    return dataclasses.replace(patient, model=repaired, code=patient.code + (
        "# Normalization in front of the model, adapted on the training inputs, before compile:",
        "normalize = keras.layers.Normalization(axis=-1, dtype='float32')",
        "normalize.adapt(x)  # the training inputs",
        "model = keras.Sequential([keras.Input(x.shape[1:]), normalize, model])",
    ))


LR_10, LR_100 = scale_lr(0.1), scale_lr(0.01)
LR_FINDER = Cure("learning rate from a range test", _find_rate)
CLIP = Cure("clip the global norm", _clip)
ADAM = Cure("Adam at its default learning rate", _adam)
ADAM_FOUND = Cure("Adam at a range test's learning rate", _adam_found)
DROP_ROWS = Cure("drop the non-finite rows", _drop_rows, "data")
NORMALIZE = Cure("Normalization in front of the inputs", _normalize_inputs, "wrap")
FAN_IN = Cure("fan-in initialization", _fan_in, "model")
BATCH_NORM = Cure("BatchNormalization after Dense/Conv", _batch_norm, "model")
ORTHOGONAL = Cure("orthogonal recurrent initializer", _orthogonal, "model")
LSTM = Cure("LSTM instead of SimpleRNN", _lstm, "model")
FLOAT32_OUTPUT = Cure("output layer in float32", _float32_output, "model")
LEAKY, ELU = swap_relu("leaky_relu"), swap_relu("elu")
RELU, SELU = swap_saturating("relu"), swap_saturating("selu")
