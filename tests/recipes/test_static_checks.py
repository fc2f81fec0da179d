"""Static checks: small arrays in, findings out; the numbers they name recomputed with numpy."""

import keras
import numpy as np
import pytest

from gradguard.recipes import static_checks as S

RNG = np.random.default_rng(0)
X = RNG.normal(size=(200, 4)).astype("float32")
Y = RNG.normal(size=(200, 1)).astype("float32")


def checks(findings):
    return [(f.check, f.cure) for f in findings]


def judge(activation="linear", units=1, loss="mean_squared_error", from_logits=False, x=X, y=Y):
    return S.judge(activation=activation, units=units, loss=loss, from_logits=from_logits,
                   x_arrays=[x], y=y)


def test_a_sound_setup_has_no_finding():
    assert judge() == ()
    labels = RNG.integers(0, 3, size=200)
    assert judge("softmax", 3, "sparse_categorical_crossentropy", y=labels) == ()
    assert judge("linear", 3, "sparse_categorical_crossentropy", True, y=labels) == ()


@pytest.mark.parametrize("activation, units, loss, from_logits", [
    ("linear", 3, "categorical_crossentropy", False),  # logits read as probabilities
    ("relu", 3, "sparse_categorical_crossentropy", False),
    ("linear", 1, "binary_crossentropy", False),
    ("softmax", 3, "categorical_crossentropy", True),  # probabilities read as logits
    ("sigmoid", 1, "binary_crossentropy", True),
    ("softmax", 1, "binary_crossentropy", False),  # softmax over one unit: always 1
])
def test_output_activation_against_the_loss(activation, units, loss, from_logits):
    y = np.eye(units)[RNG.integers(0, units, size=200)] if loss == "categorical_crossentropy" else \
        RNG.integers(0, max(units, 2), size=200)
    found = judge(activation, units, loss, from_logits, y=y)
    assert checks(found)[0] == ("output_activation", S.LOGITS)


def test_target_range_against_the_output_activation():
    y = np.linspace(-2.0, 3.5, 200, dtype="float32")[:, None]
    for activation, lo, hi in [("sigmoid", 0, 1), ("relu", 0, np.inf), ("tanh", -1, 1)]:
        found = [f for f in judge(activation, y=y) if f.check == "target_range"]
        outside = np.mean((y < lo) | (y > hi))
        assert [f.cure for f in found] == [S.LINEAR_OUTPUT]
        assert f"{outside:.0%} of the targets" in found[0].message
    assert judge("sigmoid", y=np.clip(y, 0, 1)) == ()
    # Labels the output cannot hold: only the user can fix them.
    found = judge("linear", 3, "sparse_categorical_crossentropy", True, y=np.arange(200) % 5)
    assert checks(found) == [("target_range", None)] and "reach 4" in found[0].message


def test_scale_and_finiteness_of_inputs_and_targets():
    x, y = X * 500, Y * 1000 + 400
    found = judge(x=x, y=y)
    assert checks(found) == [("target_scale", S.TARGET_SCALE), ("input_scale", S.NORMALIZE)]
    assert f"{np.sqrt(np.mean(y.astype(np.float64) ** 2)):.3g}" in found[0].message
    assert f"{np.sqrt(np.mean(x.astype(np.float64) ** 2)):.3g}" in found[1].message
    x, y = X.copy(), Y.copy()
    x[[3, 9], 1], y[[9, 50]] = np.nan, np.inf
    found = judge(x=x, y=y)
    assert checks(found) == [("nonfinite", S.DROP_ROWS)] and found[0].message.startswith("3 rows")


def test_target_columns_against_the_output():
    assert checks(judge(y=RNG.normal(size=(200, 3)))) == [("target_shape", None)]
    assert checks(judge(units=3, y=Y)) == [("target_shape", None)]
    assert judge(y=Y.ravel()) == ()  # (n,) against one unit: what Keras expects


def test_check_setup_reads_a_compiled_model():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(3)])
    model.compile(optimizer="sgd", loss=keras.losses.CategoricalCrossentropy())
    y = np.eye(3)[RNG.integers(0, 3, size=200)]
    assert checks(S.check_setup(model, X, y)) == [("output_activation", S.LOGITS)]
    model.compile(optimizer="sgd", loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    assert S.check_setup(model, X, y) == ()
    assert S.output_activation(model) == ("linear", 3)
    assert S.loss_name("mse") == ("mean_squared_error", False)


def test_the_cures_named_exist():
    from gradguard.recipes.search import BY_NAME

    for name in (S.LOGITS, S.LINEAR_OUTPUT, S.TARGET_SCALE, S.NORMALIZE, S.DROP_ROWS, S.FAN_IN):
        assert name in BY_NAME


def test_inputs_behind_a_normalization_layer_are_not_judged_by_scale():
    normalize = keras.layers.Normalization()
    normalize.adapt(X * 500)
    model = keras.Sequential([keras.Input((4,)), normalize, keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    assert S.check_setup(model, X * 500, Y) == ()
    bare = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    bare.compile(optimizer="sgd", loss="mse")
    assert checks(S.check_setup(bare, X * 500, Y)) == [("input_scale", S.NORMALIZE)]


def deep_relu(stddev, depth=5, seed=0):
    keras.utils.set_random_seed(seed)
    init = keras.initializers.RandomNormal(stddev=stddev)
    model = keras.Sequential([keras.Input((4,)), *[keras.layers.Dense(32, activation="relu",
                                                                       kernel_initializer=init)
                                                    for _ in range(depth)], keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    return model


def test_an_initial_output_far_larger_than_the_targets_names_fan_in_initialization():
    model = deep_relu(4.0 / np.sqrt(32))  # gain 4 per layer: the signal grows ~2.8x a layer
    rms = np.sqrt(np.mean(np.asarray(model.predict(X, verbose=0), np.float64) ** 2))  # by numpy
    assert rms > S.SCALE * np.sqrt(np.mean(Y ** 2))
    found = [f for f in S.check_setup(model, X, Y) if f.check == "initial_output"]
    assert [f.cure for f in found] == [S.FAN_IN] and f"{rms:.3g}" in found[0].message
    assert S.check_setup(deep_relu(np.sqrt(2 / 32)), X, Y) == ()  # he_normal's scale: nothing
    assert not [f for f in S.check_setup(model, X * 100, Y) if f.check == "initial_output"]  # input_scale's
