"""What NaNGuard measures on a model before step 1, against numpy on its kernels."""

import keras
import numpy as np
import pytest

from gradguard.callbacks.model_evidence import initial_gains


def _model(*layers):
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((5, 3)), *layers, keras.layers.Dense(1)])


def test_the_recurrent_gain_is_the_simple_rnn_s_and_gated_kernels_are_left_out():
    gated = dict(return_sequences=True,
                 recurrent_initializer=keras.initializers.Orthogonal(gain=2.0))
    model = _model(
        keras.layers.GRU(4, name="gru", **gated),
        keras.layers.LSTM(4, name="lstm", **gated),
        keras.layers.SimpleRNN(4, name="rnn", recurrent_initializer=(
            keras.initializers.Orthogonal(gain=1.5))))
    simple = model.get_layer("rnn").cell.recurrent_kernel.numpy()
    gru = model.get_layer("gru").cell.recurrent_kernel.numpy()
    assert gru.shape == (4, 12) and np.linalg.norm(gru, 2) == pytest.approx(2.0, rel=1e-5)
    _, recurrent = initial_gains(model)
    assert recurrent == pytest.approx(np.linalg.svd(simple, compute_uv=False).max())
    assert recurrent == pytest.approx(1.5, rel=1e-5)
    # A GRU alone, at gain 2.0: no ungated recurrence, no `recurrence` sign.
    _, recurrent = initial_gains(_model(keras.layers.GRU(4, **gated)))
    assert recurrent is None


def test_a_kernel_that_feeds_only_a_normalization_is_left_out_of_the_gains():
    from gradguard.callbacks.diagnosis import structural_sign

    init = keras.initializers.VarianceScaling(9.0, "fan_in", "truncated_normal")  # gain 3

    def stack(norm):
        keras.utils.set_random_seed(0)
        layers = [keras.Input((8,))]
        for i in range(8):
            layers.append(keras.layers.Dense(16, activation="relu", name=f"d{i}",
                                             kernel_initializer=init))
            if norm:
                layers.append(norm())
        return keras.Sequential(layers + [keras.layers.Dense(1, name="head")])

    def by_hand(model, names):  # std x sqrt(fan-in), numpy
        return [float(np.std(k) * np.sqrt(k.shape[0]))
                for k in (model.get_layer(n).kernel.numpy() for n in names)]

    bare = stack(None)
    gains, _ = initial_gains(bare)
    names = [f"d{i}" for i in range(8)] + ["head"]
    np.testing.assert_allclose(gains, by_hand(bare, names), rtol=1e-5)
    assert structural_sign(gains, None, None) == "depth"  # ~3**8 x the head's
    for norm in (keras.layers.BatchNormalization, keras.layers.LayerNormalization):
        model = stack(norm)
        gains, _ = initial_gains(model)
        np.testing.assert_allclose(gains, by_hand(model, ["head"]), rtol=1e-5)
        assert structural_sign(gains, None, None) is None
    # A kernel whose output also goes elsewhere still counts.
    inputs = keras.Input((8,))
    h = keras.layers.Dense(16, name="shared", kernel_initializer=init)(inputs)
    out = keras.layers.Dense(1, name="head")(
        keras.layers.Concatenate()([keras.layers.BatchNormalization()(h), h]))
    model = keras.Model(inputs, out)
    gains, _ = initial_gains(model)
    np.testing.assert_allclose(gains, by_hand(model, ["shared", "head"]), rtol=1e-5)


def test_a_first_convolution_feeding_batch_normalization_gives_no_input_ratio():
    # BatchNormalization removes the batch mean, so the convolution's bias
    # gradient is rounding noise and kernel/bias said "input_scale" of healthy
    # Conv2D + BatchNormalization nets on unit-scale inputs (issue 29).
    from gradguard.callbacks.model_evidence import input_columns

    def convnet(norm):
        keras.utils.set_random_seed(0)
        layers = [keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, name="conv")]
        layers += [keras.layers.BatchNormalization()] if norm else []
        layers += [keras.layers.ReLU(), keras.layers.Flatten(), keras.layers.Dense(1)]
        return keras.Sequential(layers)

    for norm, expected in ((True, None), (False, (0, 1, 9))):
        model = convnet(norm)
        paths = [v.path for v in model.trainable_variables]
        assert input_columns(model, paths) == expected
    # And on a real batch the bias gradient behind BatchNormalization is ~0.
    import tensorflow as tf

    model = convnet(True)
    x = np.random.default_rng(0).normal(size=(16, 8, 8, 1)).astype("float32")
    with tf.GradientTape() as tape:
        loss = keras.ops.mean(keras.ops.square(model(x, training=True) - 1.0))
    grads = tape.gradient(loss, model.trainable_variables)
    kernel, bias = (float(np.linalg.norm(g)) for g in grads[:2])
    assert bias < 1e-4 * kernel
