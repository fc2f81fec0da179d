import re

import keras
import numpy as np
import pytest

from gradguard.recipes.models import deep_dense, linear_chain, sequence_model, standardizer


def _names(model):
    return [layer.name for layer in model.layers]


@pytest.mark.parametrize("depth, output_units", [(0, 1), (1, 3), (4, 1)])
def test_deep_dense_shapes_and_layer_names(depth, output_units):
    model = deep_dense(5, depth=depth, width=7, output_units=output_units)
    assert model.output_shape == (None, output_units)
    assert _names(model) == ["features"] + [f"dense_{i}" for i in range(depth)] + ["head"]
    out = model(np.zeros((2, 5), "float32"))
    assert tuple(out.shape) == (2, output_units)


def test_deep_dense_matches_a_numpy_forward_pass():
    model = deep_dense(3, depth=2, width=4, activation="relu", kernel_initializer="he_normal")
    x = np.random.default_rng(0).standard_normal((6, 3)).astype("float32")
    h = x
    for i in range(2):
        kernel, bias = model.get_layer(f"dense_{i}").get_weights()
        h = np.maximum(h @ kernel + bias, 0.0)
    kernel, bias = model.get_layer("head").get_weights()
    expected = h @ kernel + bias
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x)), expected, rtol=1e-5, atol=1e-6)


def test_deep_dense_batch_norm_after_every_dense():
    model = deep_dense(4, depth=3, width=8, batch_norm=True)
    bn = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert [l.name for l in bn] == ["bn_0", "bn_1", "bn_2"]
    for i in range(3):
        names = _names(model)
        assert names.index(f"bn_{i}") == names.index(f"dense_{i}") + 1
        assert names.index(f"act_{i}") == names.index(f"bn_{i}") + 1
        assert not model.get_layer(f"dense_{i}").use_bias
    assert not any(isinstance(l, keras.layers.BatchNormalization) for l in deep_dense(4, depth=3).layers)


def test_deep_dense_standardize_from_array_uses_training_statistics():
    rng = np.random.default_rng(1)
    x_train = rng.normal(loc=[5.0, -100.0], scale=[2.0, 50.0], size=(500, 2)).astype("float32")
    model = deep_dense(2, depth=1, standardize=x_train)
    norm = model.layers[1]
    assert isinstance(norm, keras.layers.Normalization)
    np.testing.assert_allclose(np.ravel(norm.mean), x_train.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(np.ravel(norm.variance), x_train.var(axis=0), rtol=1e-4)


def test_deep_dense_accepts_an_adapted_layer_and_rejects_an_unadapted_one():
    layer = standardizer(np.ones((4, 3), "float32") * [1, 2, 3])
    assert deep_dense(3, depth=1, standardize=layer).layers[1] is layer
    message = (
        "deep_dense received a Normalization layer that was never adapted; call "
        "layer.adapt(x_train) first, or pass standardize=x_train."
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        deep_dense(3, standardize=keras.layers.Normalization())


@pytest.mark.parametrize("cell, cls", [("simple_rnn", "SimpleRNN"), ("lstm", "LSTM"), ("gru", "GRU")])
@pytest.mark.parametrize("batch_norm", [False, True])
def test_sequence_model_cells_names_and_shapes(cell, cls, batch_norm):
    model = sequence_model(12, 2, cell=cell, units=5, batch_norm=batch_norm)
    expected = ["sequence", "rnn"] + (["bn"] if batch_norm else []) + ["head"]
    assert _names(model) == expected
    assert type(model.get_layer("rnn")).__name__ == cls
    assert model.name == f"sequence_{cell}"
    out = model(np.zeros((3, 12, 2), "float32"))
    assert tuple(out.shape) == (3, 1)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_sequence_model_keeps_the_cudnn_compatible_arguments(cell):
    rnn = sequence_model(10, 2, cell=cell).get_layer("rnn")
    config = rnn.get_config()
    assert config["activation"] == "tanh"
    assert config["recurrent_activation"] == "sigmoid"
    assert config["recurrent_dropout"] == 0.0
    assert config["unroll"] is False
    assert config["use_bias"] is True
    if cell == "gru":
        assert config["reset_after"] is True


def test_sequence_model_variable_length():
    model = sequence_model(None, 3, cell="gru", units=4)
    assert tuple(model(np.zeros((2, 7, 3), "float32")).shape) == (2, 1)


def test_sequence_standardizer_pools_batch_and_time_on_the_training_split_only():
    rng = np.random.default_rng(2)
    x_train = rng.normal(loc=[3.0, 1000.0], scale=[1.0, 300.0], size=(64, 20, 2)).astype("float32")
    x_val = rng.normal(loc=[-3.0, 0.0], scale=[1.0, 1.0], size=(64, 20, 2)).astype("float32")
    model = sequence_model(20, 2, standardize=x_train)
    norm = model.get_layer("standardize")
    mean = np.ravel(keras.ops.convert_to_numpy(norm.mean))
    np.testing.assert_allclose(mean, x_train.reshape(-1, 2).mean(axis=0), rtol=1e-4)
    assert not np.allclose(mean, np.concatenate([x_train, x_val]).reshape(-1, 2).mean(axis=0), rtol=1e-2)
    # Training data comes out standardized per feature.
    z = keras.ops.convert_to_numpy(norm(x_train)).reshape(-1, 2)
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(z.std(axis=0), 1.0, rtol=1e-3)


def test_sequence_model_unknown_cell():
    message = "sequence_model received cell='transformer'; expected one of ['gru', 'lstm', 'simple_rnn']."
    with pytest.raises(ValueError, match=re.escape(message)):
        sequence_model(10, 2, cell="transformer")


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: deep_dense(0), "deep_dense received input_dim=0; expected an int >= 1."),
        (lambda: deep_dense(3, depth=-1), "deep_dense received depth=-1; expected an int >= 0."),
        (lambda: deep_dense(3, width=2.0), "deep_dense received width=2.0; expected an int >= 1."),
        (
            lambda: deep_dense(3, standardize=np.ones((4, 2))),
            "deep_dense received standardize= an array of shape (4, 2); expected the "
            "training inputs, with 3 features on the last axis.",
        ),
        (
            lambda: deep_dense(3, standardize=keras.layers.Dense(3, name="d")),
            "deep_dense received standardize=Dense layer 'd'; expected None, an adapted "
            "keras.layers.Normalization, or the training inputs as an array.",
        ),
        (lambda: sequence_model(0, 2), "sequence_model received seq_len=0; expected an int >= 1."),
        (lambda: sequence_model(5, 2, units=0), "sequence_model received units=0; expected an int >= 1."),
        (
            lambda: standardizer(np.ones(5)),
            "standardizer received x_train with shape (5,); expected a non-empty array of "
            "shape (n, ..., n_features).",
        ),
        (
            lambda: standardizer(np.array([[1.0], [np.nan]])),
            "standardizer received x_train with non-finite values (NaN or inf); clean the "
            "training data before adapting.",
        ),
        (
            lambda: linear_chain(float("nan"), 3),
            "linear_chain received a=nan; expected a finite float (the gain of every "
            "layer, e.g. 0.5, 1.0 or 1.5).",
        ),
        (lambda: linear_chain(1.5, 0), "linear_chain received depth=0; expected an int >= 1."),
    ],
)
def test_bad_arguments(build, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        build()


@pytest.mark.parametrize("a, depth, units", [(1.5, 10, 2), (0.5, 7, 2), (-2.0, 3, 3), (1.0, 20, 1)])
def test_linear_chain_computes_a_to_the_depth_times_x(a, depth, units):
    model = linear_chain(a, depth, units=units)
    assert _names(model) == ["x"] + [f"linear_{i}" for i in range(depth)]
    for i in range(depth):
        layer = model.get_layer(f"linear_{i}")
        assert not layer.use_bias
        np.testing.assert_array_equal(layer.get_weights()[0], a * np.eye(units))
    x = np.arange(1, units + 1, dtype="float32")[None]
    expected = np.float32(a) ** depth * x
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x)), expected, rtol=1e-6)


def test_linear_chain_a_1_5_depth_10_is_exactly_57_665():
    y = keras.ops.convert_to_numpy(linear_chain(1.5, 10)(np.ones((1, 2), "float32")))
    assert y.dtype == np.float32
    assert y.tolist() == [[57.6650390625, 57.6650390625]]
