"""faithful_copy: the copy predicts what the original predicts, layer state included.

Each stateful preprocessing layer is adapted on real data (or given its
state by hand), put in front of a Dense layer, and the copy's predictions
are compared with the original's on the same batch. The Normalization case
also shows that the config + weights route does not give the same model,
so the comparison can fail.
"""

import keras
import numpy as np
import pytest

from gradguard.callbacks.model_copy import faithful_copy

RNG = np.random.default_rng(0)
NUMBERS = (RNG.normal(size=(64, 4)) * 300 + 50).astype("float32")
WORDS = np.array(["red cat", "blue dog", "red dog", "green bird", "cat bird"] * 8)
TOKENS = np.array(["red", "blue", "green", "cat", "dog", "bird"] * 8)
INTS = RNG.integers(0, 50, size=(48, 1)).astype("int64")


def adapted(layer, data):
    layer.adapt(data)
    return layer


@keras.saving.register_keras_serializable(package="gradguard_tests")
class RunningScale(keras.layers.Layer):
    """A custom layer with a non-trainable state set outside training."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)

    def build(self, shape):
        self.scale = self.add_weight(shape=(shape[-1],), initializer="ones", trainable=False)

    def call(self, x):
        return x * self.scale


def numeric(front, data, input_dtype="float32"):
    def build():
        inputs = keras.Input(data.shape[1:], dtype=input_dtype)
        h = front()(inputs)
        h = keras.layers.Flatten()(keras.ops.cast(h, "float32")) if len(h.shape) > 2 else \
            keras.ops.cast(h, "float32")
        return keras.Model(inputs, keras.layers.Dense(3)(h)), data
    return build


def custom_layer():
    layer = RunningScale()
    layer.build((None, 4))
    layer.scale.assign(np.array([0.5, 2.0, -1.0, 3.0], "float32"))
    return layer


SETUPS = {
    "Normalization": numeric(lambda: adapted(keras.layers.Normalization(), NUMBERS), NUMBERS),
    "Rescaling": numeric(lambda: keras.layers.Rescaling(1 / 255.0, offset=-0.5), NUMBERS),
    "Discretization": numeric(lambda: adapted(keras.layers.Discretization(num_bins=5), NUMBERS),
                              NUMBERS),
    "IntegerLookup": numeric(lambda: adapted(keras.layers.IntegerLookup(output_mode="one_hot"),
                                             INTS), INTS, "int64"),
    "StringLookup": numeric(lambda: adapted(keras.layers.StringLookup(output_mode="one_hot"),
                                            TOKENS), TOKENS[:, None], "string"),
    "TextVectorization": numeric(lambda: adapted(keras.layers.TextVectorization(
        output_mode="multi_hot"), WORDS), WORDS[:, None], "string"),
    "custom layer": numeric(custom_layer, NUMBERS),
}


@pytest.mark.parametrize("name", sorted(SETUPS))
def test_copy_predicts_what_the_original_predicts(name):
    model, data = SETUPS[name]()
    copy = faithful_copy(model)
    assert copy is not model
    expected = keras.ops.convert_to_numpy(model(data))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(copy(data)), expected, rtol=1e-6)
    # The copy is independent: changing it leaves the original alone.
    for variable in copy.trainable_variables:
        variable.assign(keras.ops.zeros_like(variable))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(data)), expected, rtol=1e-6)


def test_config_and_weights_lose_the_normalization_statistics():
    """The route faithful_copy replaces: it gives another model (the test above can fail)."""
    model, data = SETUPS["Normalization"]()
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    gap = np.abs(keras.ops.convert_to_numpy(clone(data)) - keras.ops.convert_to_numpy(model(data)))
    assert gap.max() > 1.0  # raw inputs (rms ~300) pass through the clone's Normalization


def test_copy_restores_the_optimizer_only_when_asked():
    model, data = SETUPS["Normalization"]()
    model.compile(optimizer=keras.optimizers.Adam(0.003), loss="mse")
    model.fit(data, np.zeros((len(data), 3)), epochs=1, verbose=0)
    assert getattr(faithful_copy(model), "optimizer", None) is None
    restored = faithful_copy(model, compile=True)
    assert int(restored.optimizer.iterations) == int(model.optimizer.iterations) == 2
    assert float(restored.optimizer.learning_rate) == pytest.approx(0.003)


def test_an_unregistered_custom_layer_is_named_with_the_fix():
    class Unregistered(keras.layers.Layer):
        def __init__(self, factor, **kwargs):  # no get_config: cannot be rebuilt
            super().__init__(**kwargs)
            self.factor = factor

        def call(self, x):
            return x * self.factor

    model = keras.Sequential([keras.Input((4,)), Unregistered(2.0), keras.layers.Dense(1)])
    with pytest.raises(ValueError, match="register custom layers and losses with"):
        faithful_copy(model)
