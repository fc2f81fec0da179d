"""The doctor benchmark's population: kinds x variations, each broken one with its reference fix.

A set-up is a user's script with one fault (two for `two_faults`, none for
the `healthy_*` kinds), built for real from a `Variation`: the seed of the
data and the weights, the rows, the hidden width and the number of
features, and a per-kind knob (how high the learning rate, how large the
inputs or targets, which optimizer). Every broken kind also builds its
**reference fix**: the same set-up with the fault removed by hand (the
learning rate lowered, the inputs standardized, the NaN rows dropped, the
output and loss matched, ...). `benchmarks.doctor --check-references`
trains both with the doctor's own trial and bar and keeps the set-ups whose
fault is real (trial 0 does not learn, or NaNGuard steps in) and whose
reference learns; that check is run on demand, not before every run.

Keras is imported inside the functions, so `--help` answers at once.
"""

from __future__ import annotations

import dataclasses

import numpy as np

EPOCHS, BATCH, BUDGET = 3, 16, 8  # the doctor's defaults in its tests: epochs, batch size, max_trials
BROKEN_PER_KIND, HEALTHY_PER_KIND = 8, 5  # variations per kind: 22 x 8 = 176 broken, 8 x 5 = 40 healthy

ROWS_PER_FEATURE = 60  # training + validation rows at least, per input feature


@dataclasses.dataclass(frozen=True)
class Variation:
    """What changes between two set-ups of one kind."""

    index: int  # 0, 1, ...: the knob's position in each kind's own list
    seed: int  # data and initial weights
    rows: int  # training + validation rows (the last 20% are held out)
    width: int  # hidden units
    features: int  # input features of the tabular kinds

    @classmethod
    def number(cls, index: int) -> "Variation":
        features = (8, 6, 12)[(index // 2) % 3]
        # rows grow with the features (ROWS_PER_FEATURE at least): with 320 rows,
        # 12 features and 24 units, the reference fixes did not learn in 3 epochs
        return cls(index, seed=index, rows=max((320, 384, 448, 352)[index % 4], ROWS_PER_FEATURE * features),
                   width=(32, 24, 48)[index % 3], features=features)

    def pick(self, *choices):
        """The kind's own knob for this variation."""
        return choices[self.index % len(choices)]


# -- data ---------------------------------------------------------------------


def linear(v: Variation, scale: float = 1.0):
    rng = np.random.default_rng(v.seed)
    x = rng.normal(size=(v.rows, v.features)).astype("float32")
    y = (x @ rng.normal(size=(v.features, 1)) / np.sqrt(v.features)).astype("float32")
    return x * np.float32(scale), y


def three_classes(v: Variation, noise: float = 0.0):
    rng = np.random.default_rng(v.seed)
    x = rng.normal(size=(v.rows, v.features)).astype("float32")
    y = ((x[:, 0] + x[:, 1] > 0).astype("int32") + (x[:, 2] > 1)).astype("int32")
    flip = rng.random(v.rows) < noise
    y[flip] = rng.integers(0, 3, size=flip.sum())
    return x, y


def binary(v: Variation):
    x, y = three_classes(v)
    return x, (y > 0).astype("float32")


def sequences(v: Variation, steps: int = 12):
    rng = np.random.default_rng(v.seed)
    x = rng.normal(size=(v.rows, steps, 2)).astype("float32")
    return x, (x[:, -3:, :1].sum(1) - 0.5 * x[:, -1:, 1]).astype("float32")


def tokens(v: Variation, vocab: int = 40, length: int = 10):
    """Token ids; the target is the mean of a random value per token."""
    rng = np.random.default_rng(v.seed)
    x = rng.integers(0, vocab, size=(v.rows, length)).astype("int32")
    value = rng.normal(size=vocab).astype("float32")
    return x, (value[x].mean(1, keepdims=True) * 2).astype("float32")


def pixels(v: Variation):
    """8x8 grey images in 0..255; the label: is the left half brighter than the right?"""
    rng = np.random.default_rng(v.seed)
    x = rng.uniform(0, 255, size=(v.rows, 8, 8, 1)).astype("float32")
    x[:, :, :4] *= rng.uniform(0.6, 1.4, size=(v.rows, 1, 1, 1)).astype("float32")
    return x, (x[:, :, :4].mean((1, 2, 3)) > x[:, :, 4:].mean((1, 2, 3))).astype("int32")


def nan_rows(x, y, v: Variation, where: str):
    x, y = x.copy(), y.copy()
    rows = np.random.default_rng(v.seed + 100).choice(int(len(y) * 0.8), size=4, replace=False)
    (x if where == "x" else y)[rows] = np.nan
    return x, y


def drop_nonfinite(x, y):
    keep = np.isfinite(x.reshape(len(x), -1)).all(1) & np.isfinite(y.reshape(len(y), -1)).all(1)
    return x[keep], y[keep]


def standardize(a):
    return ((a - a.mean(0)) / a.std(0)).astype("float32")


# -- models as users write them -------------------------------------------------


def model(layers, optimizer, shape, loss="mse", seed=0):
    import keras

    keras.utils.set_random_seed(seed)
    built = keras.Sequential([keras.Input(shape), *layers])
    built.compile(optimizer=optimizer, loss=loss)
    return built


def mlp(optimizer, v: Variation, hidden="relu", output=None, units=1, loss="mse", depth=1, **dense):
    import keras

    return model([*[keras.layers.Dense(v.width, activation=hidden, **dense) for _ in range(depth)],
                  keras.layers.Dense(units, activation=output)], optimizer, (v.features,), loss, v.seed)


def opt(name: str, rate: float):
    import keras

    return {"sgd": keras.optimizers.SGD, "adam": keras.optimizers.Adam,
            "rmsprop": keras.optimizers.RMSprop}[name](rate)


_REGISTERED = {}


def custom_objects() -> dict:
    """The custom loss and layer, registered once (the doctor's copy saves and loads them)."""
    if _REGISTERED:
        return _REGISTERED
    import keras

    @keras.saving.register_keras_serializable(package="gradguard_benchmarks")
    def log_loss_no_epsilon(y_true, y_pred):
        """Binary cross-entropy written by hand, without an epsilon: log(0) = -inf."""
        y_true = keras.ops.cast(y_true, y_pred.dtype)
        return -keras.ops.mean(y_true * keras.ops.log(y_pred) + (1 - y_true) * keras.ops.log(1 - y_pred),
                               axis=-1)

    @keras.saving.register_keras_serializable(package="gradguard_benchmarks")
    def log_loss_epsilon(y_true, y_pred):
        """The same, with the predictions clipped into [1e-7, 1 - 1e-7]: the reference fix."""
        return log_loss_no_epsilon(y_true, keras.ops.clip(y_pred, 1e-7, 1 - 1e-7))

    @keras.saving.register_keras_serializable(package="gradguard_benchmarks")
    class ResidualDense(keras.layers.Layer):
        """A keras-io style custom layer: x + Dense(relu)(x), with its own config."""

        def __init__(self, units, **kwargs):
            super().__init__(**kwargs)
            self.units = units
            self.dense = keras.layers.Dense(units, activation="relu")

        def build(self, shape):
            self.dense.build(shape)
            self.project = self.add_weight(shape=(self.units, shape[-1]),
                                           initializer="glorot_uniform", name="project")

        def call(self, x):
            return x + keras.ops.matmul(self.dense(x), self.project)

        def get_config(self):
            return {**super().get_config(), "units": self.units}

    _REGISTERED.update(log_loss_no_epsilon=log_loss_no_epsilon, log_loss_epsilon=log_loss_epsilon,
                       ResidualDense=ResidualDense)
    return _REGISTERED


def attention(optimizer, v: Variation, steps: int = 8):
    import keras

    keras.utils.set_random_seed(v.seed)
    inputs = keras.Input((steps, 2))
    hidden = keras.layers.Dense(v.width // 2)(inputs)
    hidden = hidden + keras.layers.MultiHeadAttention(2, 8)(hidden, hidden)
    outputs = keras.layers.Dense(1)(keras.layers.Flatten()(hidden))
    built = keras.Model(inputs, outputs)
    built.compile(optimizer=optimizer, loss="mse")
    return built


def embedding(optimizer, v: Variation, vocab: int = 40):
    import keras

    return model([keras.layers.Embedding(vocab, 8), keras.layers.GlobalAveragePooling1D(),
                  keras.layers.Dense(v.width, activation="relu"), keras.layers.Dense(1)],
                 optimizer, (10,), seed=v.seed)


def conv(optimizer, v: Variation, front=()):
    import keras

    return model([*front, keras.layers.Conv2D(8, 3, activation="relu"), keras.layers.Flatten(),
                  keras.layers.Dense(2)], optimizer, (8, 8, 1),
                 keras.losses.SparseCategoricalCrossentropy(from_logits=True), v.seed)


def recurrent(optimizer, v: Variation, cell="LSTM"):
    import keras

    return model([getattr(keras.layers, cell)(v.width // 2), keras.layers.Dense(1)], optimizer, (12, 2),
                 seed=v.seed)


# -- the kinds: (broken, reference) builders ---------------------------------------------
#
# Each kind maps a Variation to two thunks returning (model, x, y, options):
# the set-up as the user wrote it and its reference fix (None for healthy
# kinds). options: "batch_size", "policy" (the dtype policy to build under).


def _scaled(v, x_scale=1.0, y_scale=1.0):
    x, y = linear(v, x_scale)
    return x, (y * y_scale + 3 * y_scale).astype("float32")


def _lr_sgd(v):
    rate = v.pick(0.6, 1.0, 2.0, 0.8)
    return (lambda: (mlp(opt("sgd", rate), v), *linear(v), {}),
            lambda: (mlp(opt("sgd", rate / 20), v), *linear(v), {}))


def _lr_adam(v):
    name, rate = v.pick(("adam", 1.0), ("adam", 3.0), ("rmsprop", 1.0), ("adam", 0.5))
    return (lambda: (mlp(opt(name, rate), v, depth=2), *linear(v), {}),
            lambda: (mlp(opt(name, 0.01), v, depth=2), *linear(v), {}))


def _input_scale(v):
    scale = v.pick(1000.0, 300.0, 3000.0)
    return (lambda: (mlp(opt("sgd", 0.05), v), *linear(v, scale), {}),
            lambda: (mlp(opt("sgd", 0.05), v), *linear(v), {}))


def _target_scale(v):
    scale = v.pick(100.0, 300.0, 1000.0)
    return (lambda: (mlp(opt("sgd", 0.05), v), *_scaled(v, 1.0, scale), {}),
            lambda: (mlp(opt("sgd", 0.05), v), linear(v)[0], standardize(_scaled(v, 1.0, scale)[1]), {}))


def _input_and_target_scale(v):
    xs, ys = v.pick((1000.0, 100.0), (300.0, 1000.0), (3000.0, 300.0))
    return (lambda: (mlp(opt("sgd", 0.05), v), *_scaled(v, xs, ys), {}),
            lambda: (mlp(opt("sgd", 0.05), v), linear(v)[0], standardize(_scaled(v, xs, ys)[1]), {}))


def _deep(v):
    # deep stacks need more steps in 3 epochs (twice the rows), and width: 24
    # units learn too slowly
    return dataclasses.replace(v, rows=2 * v.rows, width=max(v.width, 32))


def _depth_init(v):
    import keras

    depth, gain = v.pick((6, 4.0), (5, 3.0), (5, 5.0))
    init = keras.initializers.RandomNormal(stddev=gain / np.sqrt(v.width))
    v = _deep(v)
    return (lambda: (mlp(opt("sgd", 0.05), v, depth=depth, kernel_initializer=init), *linear(v), {}),
            lambda: (mlp(opt("adam", 0.003), v, depth=depth, kernel_initializer="he_normal"),
                     *linear(v), {}))


def _saturating(v):
    hidden, depth = v.pick(("sigmoid", 8), ("sigmoid", 6), ("tanh", 10))
    init = "glorot_uniform" if hidden == "sigmoid" else "random_normal"  # tanh: stddev 0.05 vanishes
    v = _deep(v)
    return (lambda: (mlp(opt("sgd", 0.05), v, hidden=hidden, depth=depth, kernel_initializer=init),
                     *linear(v), {}),
            lambda: (mlp(opt("adam", 0.003), v, hidden="relu", depth=depth, kernel_initializer="he_normal"),
                     *linear(v), {}))


def _dying_relu(v):
    import keras

    bias = v.pick(-10.0, -5.0, -20.0)
    return (lambda: (mlp(opt("sgd", 0.05), v, bias_initializer=keras.initializers.Constant(bias)),
                     *linear(v), {}),
            lambda: (mlp(opt("sgd", 0.05), v), *linear(v), {}))


def _recurrence(v):
    import keras

    gain, rate = v.pick((3.0, 0.01), (2.5, 0.01), (4.0, 0.01))

    def build(gain, activation):
        return model([keras.layers.SimpleRNN(16, activation=activation, recurrent_initializer=
                                             keras.initializers.Orthogonal(gain=gain)),
                      keras.layers.Dense(1)], opt("sgd", rate), (12, 2), seed=v.seed)
    return (lambda: (build(gain, "relu"), *sequences(v), {}),
            lambda: (build(1.0, "tanh"), *sequences(v), {}))


def _nan_rows(where):
    def kind(v):
        return (lambda: (mlp(opt("sgd", 0.05), v), *nan_rows(*linear(v), v, where), {}),
                lambda: (mlp(opt("sgd", 0.05), v), *drop_nonfinite(*nan_rows(*linear(v), v, where)), {}))
    return kind


def _custom_loss_nan(v):
    rate = v.pick(2.0, 3.0, 2.5)
    objects = custom_objects()
    return (lambda: (mlp(opt("sgd", rate), v, output="sigmoid", loss=objects["log_loss_no_epsilon"]),
                     *binary(v), {}),
            lambda: (mlp(opt("sgd", rate), v, output="sigmoid", loss=objects["log_loss_epsilon"]),
                     *binary(v), {}))


def _float16_overflow(v):
    scale = v.pick(3000.0, 5000.0, 2000.0)
    policy = {"policy": "mixed_float16"}
    return (lambda: (mlp(opt("sgd", 0.05), v), *linear(v, scale), policy),
            lambda: (mlp(opt("sgd", 0.05), v), *linear(v), policy))


def _mismatch_linear_cce(v):
    import keras

    return (lambda: (mlp(opt("sgd", 0.1), v, units=3, loss=keras.losses.SparseCategoricalCrossentropy()),
                     *three_classes(v), {}),
            lambda: (mlp(opt("sgd", 0.1), v, units=3, loss=keras.losses.SparseCategoricalCrossentropy(
                from_logits=True)), *three_classes(v), {}))


def _mismatch_softmax_one_unit(v):
    return (lambda: (mlp(opt("sgd", 0.1), v, output="softmax", loss="binary_crossentropy"), *binary(v), {}),
            lambda: (mlp(opt("sgd", 0.1), v, output="sigmoid", loss="binary_crossentropy"), *binary(v), {}))


def _mismatch_relu_cce(v):
    import keras

    def build(output):
        x, y = three_classes(v)
        return (mlp(opt("sgd", 0.1), v, output=output, units=3, loss=keras.losses.CategoricalCrossentropy()),
                x, np.eye(3, dtype="float32")[y], {})
    return lambda: build("relu"), lambda: build("softmax")


def _batch1_oscillation(v):
    rate = v.pick(0.3, 0.5, 0.4)
    return (lambda: (mlp(opt("sgd", rate), v), *linear(v), {"batch_size": 1}),
            lambda: (mlp(opt("sgd", rate / 30), v), *linear(v), {"batch_size": 1}))


def _two_faults(v):
    if v.index % 2 == 0:  # inputs in the thousands and a learning rate 20x too high
        return (lambda: (mlp(opt("sgd", 1.0), v), *linear(v, 1000.0), {}),
                lambda: (mlp(opt("sgd", 0.05), v), *linear(v), {}))
    # NaN rows in x and targets in the hundreds
    return (lambda: (mlp(opt("sgd", 0.05), v), *nan_rows(*_scaled(v, 1.0, 100.0), v, "x"), {}),
            lambda: (mlp(opt("sgd", 0.05), v), *_nan_free_standard(v), {}))


def _nan_free_standard(v):
    x, y = drop_nonfinite(*nan_rows(*_scaled(v, 1.0, 100.0), v, "x"))
    return x, standardize(y)


def _embedding_lr(v):
    name, rate = v.pick(("sgd", 50.0), ("adam", 3.0), ("sgd", 100.0))
    return (lambda: (embedding(opt(name, rate), v), *tokens(v), {}),
            lambda: (embedding(opt("adam", 0.01), v), *tokens(v), {}))


def _conv_pixels(v):
    import keras

    rate = v.pick(0.05, 0.03, 0.1)  # at 0.01 the reference learns too slowly for 3 epochs
    return (lambda: (conv(opt("sgd", rate), v), *pixels(v), {}),
            lambda: (conv(opt("sgd", rate), v, front=[keras.layers.Rescaling(1 / 255)]), *pixels(v), {}))


def _lstm_target_scale(v):
    cell, scale = v.pick(("LSTM", 100.0), ("GRU", 300.0), ("LSTM", 1000.0))
    x, y = sequences(v)
    return (lambda: (recurrent(opt("adam", 0.01), v, cell), x, y * scale + 2 * scale, {}),
            lambda: (recurrent(opt("adam", 0.01), v, cell), x, standardize(y * scale), {}))


def _attention_lr(v):
    rate = v.pick(0.5, 1.0, 0.3)
    x, y = sequences(v, steps=8)
    return (lambda: (attention(opt("sgd", rate), v), x, y, {}),
            lambda: (attention(opt("sgd", 0.01), v), x, y, {}))


# -- healthy kinds: (set-up, None) -------------------------------------------------------


def _healthy_mlp(v):
    name, rate = v.pick(("sgd", 0.05), ("adam", 0.01), ("rmsprop", 0.003))
    return lambda: (mlp(opt(name, rate), v), *linear(v), {}), None


def _healthy_normalization(v):
    import keras

    def build():
        x, y = linear(v, v.pick(1000.0, 1.0, 50.0))
        normalize = keras.layers.Normalization()
        normalize.adapt(x[: int(len(x) * 0.8)])
        return model([normalize, keras.layers.Dense(v.width, activation="relu"), keras.layers.Dense(1)],
                     opt("sgd", 0.05), (v.features,), seed=v.seed), x, y, {}
    return build, None


def _healthy_classifier(v):
    import keras

    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return lambda: (mlp(opt("sgd", 0.1), v, units=3, loss=loss), *three_classes(v), {}), None


def _healthy_data_limited(v):
    import keras

    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    noise = v.pick(0.25, 0.35, 0.3)
    return lambda: (mlp(opt("sgd", 0.1), v, units=3, loss=loss), *three_classes(v, noise), {}), None


def _healthy_custom_layer(v):
    import keras

    def build():
        layer = custom_objects()["ResidualDense"]
        return model([keras.layers.Dense(v.width), layer(v.width), keras.layers.Dense(1)],
                     opt("adam", 0.01), (v.features,), seed=v.seed), *linear(v), {}
    return build, None


def _healthy_rescaling(v):
    import keras

    return lambda: (conv(opt("adam", 0.01), v, front=[keras.layers.Rescaling(1 / 255)]), *pixels(v), {}), None


def _healthy_embedding(v):
    return lambda: (embedding(opt("adam", 0.01), v), *tokens(v), {}), None


def _healthy_recurrent(v):
    return lambda: (recurrent(opt("adam", 0.01), v, v.pick("LSTM", "GRU")), *sequences(v), {}), None


KINDS = {  # name -> Variation -> (broken, reference); healthy kinds start with "healthy"
    "lr_sgd": _lr_sgd, "lr_adam": _lr_adam, "input_scale": _input_scale, "target_scale": _target_scale,
    "input_and_target_scale": _input_and_target_scale, "depth_init": _depth_init,
    "saturating": _saturating, "dying_relu": _dying_relu, "recurrence": _recurrence,
    "nan_rows_x": _nan_rows("x"), "nan_rows_y": _nan_rows("y"), "custom_loss_nan": _custom_loss_nan,
    "float16_overflow": _float16_overflow, "mismatch_linear_cce": _mismatch_linear_cce,
    "mismatch_softmax_one_unit": _mismatch_softmax_one_unit, "mismatch_relu_cce": _mismatch_relu_cce,
    "batch1_oscillation": _batch1_oscillation, "two_faults": _two_faults, "embedding_lr": _embedding_lr,
    "conv_pixels": _conv_pixels, "lstm_target_scale": _lstm_target_scale, "attention_lr": _attention_lr,
    "healthy_mlp": _healthy_mlp, "healthy_normalization": _healthy_normalization,
    "healthy_classifier": _healthy_classifier, "healthy_data_limited": _healthy_data_limited,
    "healthy_custom_layer": _healthy_custom_layer, "healthy_rescaling": _healthy_rescaling,
    "healthy_embedding": _healthy_embedding, "healthy_recurrent": _healthy_recurrent,
}


def population(kinds=None, *, every: int = 1, limit: int | None = None) -> list[tuple[str, int]]:
    """(kind, variation index) pairs: each kind's variations, every `every`-th, `limit` in all."""
    pairs = []
    for kind in kinds or KINDS:
        count = HEALTHY_PER_KIND if kind.startswith("healthy") else BROKEN_PER_KIND
        pairs += [(kind, index) for index in range(0, count, every)]
    return pairs[:limit]


def build(kind: str, index: int, *, reference: bool = False):
    """(model, x, y, options) of one set-up, or its reference fix, built under its dtype policy."""
    import keras

    keras.config.set_dtype_policy("float32")
    broken, fixed = KINDS[kind](Variation.number(index))
    thunk = fixed if reference else broken
    if thunk is None:
        raise ValueError(f"{kind} is healthy: it has no reference fix.")
    made = thunk()
    if "policy" in made[3]:  # built under the policy, as the user's script would be
        keras.config.set_dtype_policy(made[3]["policy"])
        made = thunk()
    return made
