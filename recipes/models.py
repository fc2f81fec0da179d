"""Model builders shared by the recipes: deep MLPs, RNNs and linear chains.

Every builder returns a plain functional `keras.Model` with stable, readable
layer names (`dense_0`, `bn_0`, `rnn`, `head`, ...), because gradient reports
name layers. Only Keras 3 APIs are used, so the models build under any
backend.
"""

from __future__ import annotations

import math
import numbers

import keras
import numpy as np

_CELLS = {
    "simple_rnn": keras.layers.SimpleRNN,
    "lstm": keras.layers.LSTM,
    "gru": keras.layers.GRU,
}


def standardizer(x_train: np.ndarray) -> keras.layers.Normalization:
    """Returns a `Normalization` layer adapted on the training split.

    Each feature (last axis) is shifted and scaled by the mean and standard
    deviation it has over every other axis: for sequences of shape
    `(n, seq_len, n_features)` the statistics pool the batch and time axes.
    Adapt on the training split only; statistics that saw the validation
    data leak it into the model.

    Args:
        x_train: Training inputs, shape `(n, ..., n_features)`, finite.

    Returns:
        An adapted `keras.layers.Normalization(axis=-1)` named `"standardize"`.

    Raises:
        ValueError: If `x_train` has fewer than 2 dimensions, no samples, or a
            non-finite value.

    Example:

    >>> x_train = np.array([[0.0, 10.0], [2.0, 30.0]], dtype="float32")
    >>> layer = standardizer(x_train)
    >>> keras.ops.convert_to_numpy(layer(x_train)).tolist()
    [[-1.0, -1.0], [1.0, 1.0]]

    References:
        - LeCun, Bottou, Orr & Müller, "Efficient BackProp", 1998 (section
          4.3: normalize the inputs).
    """
    x_train = np.asarray(x_train, dtype=np.float32)
    if x_train.ndim < 2 or x_train.shape[0] == 0:
        raise ValueError(
            f"standardizer received x_train with shape {x_train.shape}; "
            "expected a non-empty array of shape (n, ..., n_features)."
        )
    if not np.all(np.isfinite(x_train)):
        raise ValueError(
            "standardizer received x_train with non-finite values (NaN or inf); "
            "clean the training data before adapting."
        )
    layer = keras.layers.Normalization(axis=-1, name="standardize")
    layer.adapt(x_train)
    return layer


def deep_dense(
    input_dim: int,
    *,
    depth: int = 20,
    width: int = 64,
    activation: str = "relu",
    batch_norm: bool = False,
    kernel_initializer: str | keras.initializers.Initializer = "glorot_uniform",
    standardize: keras.layers.Normalization | np.ndarray | None = None,
    output_units: int = 1,
) -> keras.Model:
    """Builds a deep multilayer perceptron with a linear output layer.

    The hidden stack is `depth` blocks named `dense_{i}`. With
    `batch_norm=False` a block is `Dense(width, activation)`. With
    `batch_norm=True` it is `Dense(width, use_bias=False)` -> `bn_{i}` ->
    `act_{i}`, normalizing the pre-activations as Ioffe & Szegedy do (the
    normalization's offset replaces the Dense bias). The output layer is a
    linear `Dense(output_units)` named `head`.

    Args:
        input_dim: Number of input features, an int >= 1.
        depth: Number of hidden Dense layers, an int >= 0 (0 gives a linear
            model). Defaults to 20.
        width: Units per hidden layer, an int >= 1. Defaults to 64.
        activation: Hidden activation, any Keras activation name. Defaults
            to `"relu"`.
        batch_norm: Whether to add `BatchNormalization` after every hidden
            Dense. Defaults to `False`.
        kernel_initializer: Initializer of the hidden kernels. Defaults to
            `"glorot_uniform"` (Keras' default); `"he_normal"` suits ReLU.
        standardize: `None` (default) for raw inputs; an adapted
            `keras.layers.Normalization` to place first; or the training
            inputs, shape `(n, input_dim)`, to adapt one on (see
            `standardizer`).
        output_units: Units of the linear output layer, an int >= 1.
            Defaults to 1.

    Returns:
        An uncompiled `keras.Model` named `"deep_dense"` mapping
        `(batch, input_dim)` to `(batch, output_units)`.

    Raises:
        ValueError: If a size is out of range or `standardize` is not one of
            the accepted kinds.

    Example:

    >>> model = deep_dense(8, depth=3, width=16, batch_norm=True)
    >>> [layer.name for layer in model.layers][1:5]
    ['dense_0', 'bn_0', 'act_0', 'dense_1']
    >>> model.output_shape
    (None, 1)

    References:
        - Glorot & Bengio, "Understanding the difficulty of training deep
          feedforward neural networks", AISTATS 2010.
        - Ioffe & Szegedy, "Batch Normalization", ICML 2015,
          https://arxiv.org/abs/1502.03167.
    """
    func = "deep_dense"
    input_dim = _check_int(func, "input_dim", input_dim, 1)
    depth = _check_int(func, "depth", depth, 0)
    width = _check_int(func, "width", width, 1)
    output_units = _check_int(func, "output_units", output_units, 1)

    inputs = keras.Input(shape=(input_dim,), name="features")
    h = inputs
    norm = _standardize_layer(func, standardize, input_dim)
    if norm is not None:
        h = norm(h)
    for i in range(depth):
        # With BatchNormalization: Dense (no bias: BN's beta is one) -> BN -> activation.
        h = keras.layers.Dense(
            width,
            activation=None if batch_norm else activation,
            use_bias=not batch_norm,
            kernel_initializer=kernel_initializer,
            name=f"dense_{i}",
        )(h)
        if batch_norm:
            h = keras.layers.BatchNormalization(name=f"bn_{i}")(h)
            h = keras.layers.Activation(activation, name=f"act_{i}")(h)
    outputs = keras.layers.Dense(output_units, name="head")(h)
    return keras.Model(inputs, outputs, name="deep_dense")


def sequence_model(
    seq_len: int | None,
    n_features: int,
    *,
    cell: str = "simple_rnn",
    units: int = 32,
    batch_norm: bool = False,
    standardize: keras.layers.Normalization | np.ndarray | None = None,
) -> keras.Model:
    """Builds a one-layer recurrent regressor: RNN -> Dense(1).

    The layers are `standardize` (optional), `rnn` (the recurrent layer,
    returning its last output), `bn` (optional `BatchNormalization` of that
    output) and `head` (a linear `Dense(1)`). The LSTM and GRU keep the
    arguments that let TensorFlow run them with cuDNN on a GPU: `tanh`
    activation, `sigmoid` recurrent activation, no recurrent dropout,
    `unroll=False`, `use_bias=True`, and for the GRU `reset_after=True`.

    Args:
        seq_len: Number of time steps, an int >= 1, or `None` for
            variable-length sequences.
        n_features: Features per time step, an int >= 1.
        cell: One of `"simple_rnn"` (default, the one whose gradients explode
            on long sequences), `"lstm"` or `"gru"`.
        units: Size of the recurrent state, an int >= 1. Defaults to 32.
        batch_norm: Whether to put `BatchNormalization` between the RNN and
            the head. Defaults to `False`.
        standardize: `None` (default); an adapted `keras.layers.Normalization`
            to place first; or the training inputs, shape
            `(n, seq_len, n_features)`, to adapt one on, per feature across
            batch and time (see `standardizer`).

    Returns:
        An uncompiled `keras.Model` named `"sequence_<cell>"` mapping
        `(batch, seq_len, n_features)` to `(batch, 1)`.

    Raises:
        ValueError: If `cell` is unknown, a size is out of range, or
            `standardize` is not one of the accepted kinds.

    Example:

    >>> model = sequence_model(100, 2, cell="lstm", units=8)
    >>> [layer.name for layer in model.layers]
    ['sequence', 'rnn', 'head']
    >>> type(model.get_layer("rnn")).__name__
    'LSTM'

    References:
        - Pascanu, Mikolov & Bengio, "On the difficulty of training recurrent
          neural networks", ICML 2013, https://arxiv.org/abs/1211.5063.
        - Hochreiter & Schmidhuber, "Long Short-Term Memory", 1997.
        - Cho et al., "Learning Phrase Representations using RNN
          Encoder-Decoder", 2014, https://arxiv.org/abs/1406.1078.
    """
    func = "sequence_model"
    if cell not in _CELLS:
        raise ValueError(
            f"{func} received cell={cell!r}; expected one of {sorted(_CELLS)}."
        )
    inputs, h, units = _sequence_input(func, seq_len, n_features, units, standardize)
    if cell == "simple_rnn":
        rnn = keras.layers.SimpleRNN(units, activation="tanh", name="rnn")
    else:
        cudnn_args = dict(
            activation="tanh",
            recurrent_activation="sigmoid",
            recurrent_dropout=0.0,
            unroll=False,
            use_bias=True,
        )
        if cell == "gru":
            cudnn_args["reset_after"] = True
        rnn = _CELLS[cell](units, name="rnn", **cudnn_args)
    h = rnn(h)
    if batch_norm:
        h = keras.layers.BatchNormalization(name="bn")(h)
    outputs = keras.layers.Dense(1, name="head")(h)
    return keras.Model(inputs, outputs, name=f"sequence_{cell}")


RELU_RNN_INITS = ("identity", "orthogonal")


def _sequence_input(func: str, seq_len, n_features, units, standardize):
    """`(inputs, h, units)`: the checked sizes, the sequence `Input`, and `h` standardized if asked."""
    if seq_len is not None:
        seq_len = _check_int(func, "seq_len", seq_len, 1)
    n_features = _check_int(func, "n_features", n_features, 1)
    units = _check_int(func, "units", units, 1)
    inputs = keras.Input(shape=(seq_len, n_features), name="sequence")
    norm = _standardize_layer(func, standardize, n_features)
    return inputs, (inputs if norm is None else norm(inputs)), units


def relu_rnn(
    seq_len: int | None,
    n_features: int,
    *,
    recurrent_init: str = "identity",
    units: int = 32,
    input_std: float = 0.001,
    standardize: keras.layers.Normalization | np.ndarray | None = None,
) -> keras.Model:
    """Builds a ReLU SimpleRNN -> Dense(1) with a norm-preserving recurrent init.

    The IRNN of Le, Jaitly & Hinton (2015): `SimpleRNN(activation="relu")`
    whose recurrent kernel starts as the identity, biases at zero and input
    weights drawn from N(0, `input_std`**2), so that at the start the state
    carries each input forward unchanged and the backward signal neither
    grows nor shrinks through time. `recurrent_init="orthogonal"` starts
    the recurrent kernel from a random orthogonal matrix instead (also
    norm-preserving; Keras' SimpleRNN default, there with tanh). Layers are
    named as in `sequence_model`: `standardize` (optional), `rnn`, `head`.
    Train it with gradient clipping, as the paper does.

    Args:
        seq_len: Number of time steps, an int >= 1, or `None`.
        n_features: Features per time step, an int >= 1.
        recurrent_init: `"identity"` (default, the IRNN) or `"orthogonal"`.
        units: Size of the recurrent state, an int >= 1. Defaults to 32.
        input_std: Standard deviation of the input weights. Defaults to
            0.001, the paper's.
        standardize: As in `sequence_model`. Defaults to `None`.

    Returns:
        An uncompiled `keras.Model` named `"relu_rnn_<recurrent_init>"`.

    Raises:
        ValueError: If `recurrent_init` is unknown or a size is out of range.

    Example:

    >>> model = relu_rnn(100, 2, units=4)
    >>> keras.ops.convert_to_numpy(model.get_layer("rnn").cell.recurrent_kernel).tolist()[0]
    [1.0, 0.0, 0.0, 0.0]

    References:
        - Le, Jaitly & Hinton, "A Simple Way to Initialize Recurrent
          Networks of Rectified Linear Units", 2015,
          https://arxiv.org/abs/1504.00941.
        - Saxe, McClelland & Ganguli, "Exact solutions to the nonlinear
          dynamics of learning in deep linear neural networks", ICLR 2014.
    """
    func = "relu_rnn"
    if recurrent_init not in RELU_RNN_INITS:
        raise ValueError(
            f"{func} received recurrent_init={recurrent_init!r}; expected one of "
            f"{', '.join(repr(i) for i in RELU_RNN_INITS)}."
        )
    inputs, h, units = _sequence_input(func, seq_len, n_features, units, standardize)
    recurrent = (keras.initializers.Identity() if recurrent_init == "identity"
                 else keras.initializers.Orthogonal(gain=1.0))
    h = keras.layers.SimpleRNN(
        units, activation="relu", recurrent_initializer=recurrent,
        kernel_initializer=keras.initializers.RandomNormal(stddev=input_std),
        bias_initializer="zeros", name="rnn",
    )(h)
    outputs = keras.layers.Dense(1, name="head")(h)
    return keras.Model(inputs, outputs, name=f"relu_rnn_{recurrent_init}")


def attention_regressor(
    seq_len: int,
    n_features: int,
    *,
    d_model: int = 32,
    heads: int = 2,
    blocks: int = 2,
) -> keras.Model:
    """Builds a small post-LayerNorm Transformer encoder -> mean pool -> Dense(1).

    `embed` (a `Dense(d_model)` of each step) plus a fixed position code
    `positions` (`PositionCode`: drawn once as an `Embedding`'s table is,
    and not trained, as the cures race's published table ran), then `blocks` blocks of self-attention
    (`attention_{i}`, `heads` heads) and a ReLU feed-forward layer
    (`ffn_{i}`), each with a residual connection followed by
    `LayerNormalization` (the original Transformer's post-LN, the variant
    that needs a learning-rate warm-up: without one, a high learning rate
    makes its gradients spike), then `GlobalAveragePooling1D` and a linear
    `head`.

    Args:
        seq_len: Number of time steps, an int >= 1.
        n_features: Features per step, an int >= 1.
        d_model: Width of the model, an int >= 1. Defaults to 32.
        heads: Attention heads, an int >= 1. Defaults to 2.
        blocks: Encoder blocks, an int >= 1. Defaults to 2.

    Returns:
        An uncompiled `keras.Model` named `"attention"` mapping
        `(batch, seq_len, n_features)` to `(batch, 1)`.

    References:
        - Vaswani et al., "Attention Is All You Need", NeurIPS 2017.
        - Xiong et al., "On Layer Normalization in the Transformer
          Architecture", ICML 2020, https://arxiv.org/abs/2002.04745.
    """
    func = "attention_regressor"
    seq_len = _check_int(func, "seq_len", seq_len, 1)
    n_features = _check_int(func, "n_features", n_features, 1)
    d_model = _check_int(func, "d_model", d_model, 1)
    heads = _check_int(func, "heads", heads, 1)
    blocks = _check_int(func, "blocks", blocks, 1)
    inputs = keras.Input(shape=(seq_len, n_features), name="sequence")
    h = keras.layers.Dense(d_model, name="embed")(inputs)
    h = PositionCode(seq_len, d_model, name="positions")(h)
    for i in range(blocks):
        a = keras.layers.MultiHeadAttention(heads, d_model // heads, name=f"attention_{i}")(h, h)
        h = keras.layers.LayerNormalization(name=f"ln_attention_{i}")(h + a)
        f = keras.layers.Dense(2 * d_model, activation="relu", name=f"ffn_{i}")(h)
        f = keras.layers.Dense(d_model, name=f"ffn_out_{i}")(f)
        h = keras.layers.LayerNormalization(name=f"ln_ffn_{i}")(h + f)
    h = keras.layers.GlobalAveragePooling1D(name="pool")(h)
    outputs = keras.layers.Dense(1, name="head")(h)
    return keras.Model(inputs, outputs, name="attention")


@keras.saving.register_keras_serializable(package="gradguard")
class PositionCode(keras.layers.Layer):
    """Adds a fixed code per position: `x + table`, `table` of shape `(seq_len, d_model)`.

    The table is drawn as an `Embedding`'s is (uniform in [-0.05, 0.05]) and
    is not trained. It is a layer, not an `Embedding` called on a constant
    `arange` in the functional graph: that constant is computed once, when
    the model is built, and under PyTorch it carries the autograd graph of
    that one call, so the second training step fails with "Trying to
    backward through the graph a second time".

    Args:
        seq_len: Positions, an int >= 1.
        d_model: Width of each position's code, an int >= 1.
    """

    def __init__(self, seq_len: int, d_model: int, **kwargs):
        super().__init__(**kwargs)
        self.seq_len, self.d_model = seq_len, d_model

    def build(self, input_shape):
        self.table = self.add_weight(shape=(self.seq_len, self.d_model), name="embeddings",
                                     initializer=keras.initializers.RandomUniform(-0.05, 0.05), trainable=False)

    def call(self, inputs):
        return inputs + keras.ops.cast(self.table, inputs.dtype)

    def get_config(self):
        return {**super().get_config(), "seq_len": self.seq_len, "d_model": self.d_model}


def linear_chain(a: float, depth: int, *, units: int = 2) -> keras.Model:
    """Builds `depth` bias-free linear layers whose kernels are all `a * I`.

    The model computes `y = W^L x` with `W = a * I` (size `units`), so its
    output is exactly `a**depth * x`: the smallest model in which a per-layer
    gain `a < 1` makes signals and gradients vanish and `a > 1` makes them
    explode geometrically with depth. The layers are named `linear_0`, ...,
    `linear_{depth - 1}`; their kernels are trainable so gradients with
    respect to them can be taken.

    Args:
        a: The per-layer gain, a finite float.
        depth: Number of layers `L`, an int >= 1.
        units: Width of every layer (and of the input), an int >= 1.
            Defaults to 2.

    Returns:
        An uncompiled `keras.Model` named `"linear_chain"` mapping
        `(batch, units)` to `(batch, units)`.

    Raises:
        ValueError: If `a` is not finite or a size is out of range.

    Example:

    >>> model = linear_chain(1.5, 10)
    >>> keras.ops.convert_to_numpy(model(np.ones((1, 2), "float32"))).tolist()
    [[57.6650390625, 57.6650390625]]

    References:
        - Saxe, McClelland & Ganguli, "Exact solutions to the nonlinear
          dynamics of learning in deep linear neural networks", ICLR 2014,
          https://arxiv.org/abs/1312.6120.
    """
    func = "linear_chain"
    try:
        a_ok = not isinstance(a, bool) and math.isfinite(a)
    except TypeError:
        a_ok = False
    if not a_ok:
        raise ValueError(
            f"{func} received a={a!r}; expected a finite float (the gain of "
            "every layer, e.g. 0.5, 1.0 or 1.5)."
        )
    depth = _check_int(func, "depth", depth, 1)
    units = _check_int(func, "units", units, 1)

    inputs = keras.Input(shape=(units,), name="x")
    h = inputs
    for i in range(depth):
        h = keras.layers.Dense(
            units,
            use_bias=False,
            kernel_initializer=keras.initializers.Identity(gain=float(a)),
            name=f"linear_{i}",
        )(h)
    return keras.Model(inputs, h, name="linear_chain")


def _check_int(func: str, name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{func} received {name}={value!r}; expected an int >= {minimum}.")
    return int(value)


def _standardize_layer(
    func: str, standardize: object, n_features: int
) -> keras.layers.Normalization | None:
    """Resolves the `standardize` argument of the builders to a layer or None."""
    if standardize is None:
        return None
    if isinstance(standardize, keras.layers.Normalization):
        if standardize.input_mean is None and not standardize.built:
            raise ValueError(
                f"{func} received a Normalization layer that was never adapted; "
                "call layer.adapt(x_train) first, or pass standardize=x_train."
            )
        return standardize
    if isinstance(standardize, keras.layers.Layer):
        raise ValueError(
            f"{func} received standardize={standardize.__class__.__name__} layer "
            f"{standardize.name!r}; expected None, an adapted "
            "keras.layers.Normalization, or the training inputs as an array."
        )
    x_train = np.asarray(standardize)
    if x_train.ndim < 2 or x_train.shape[-1] != n_features:
        raise ValueError(
            f"{func} received standardize= an array of shape {x_train.shape}; "
            f"expected the training inputs, with {n_features} features on the "
            "last axis."
        )
    return standardizer(x_train)
