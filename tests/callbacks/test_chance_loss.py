"""The `chance` stall: a classifier still far above a chance guess's loss after 8 steps."""

import keras
import numpy as np
import pytest

from gradguard.callbacks.loss_rules import (
    CHANCE_FACTOR, STALL_STEPS, chance_loss, find_stall, regularization_penalty,
)


def _classifier(width, loss):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(width)])
    model.compile(optimizer="sgd", loss=loss)
    return model


@pytest.mark.parametrize("width, loss, expected", [
    (10, "sparse_categorical_crossentropy", np.log(10)),
    (3, "categorical_crossentropy", np.log(3)),
    (5, keras.losses.CategoricalCrossentropy(from_logits=True), np.log(5)),
    (5, keras.losses.SparseCategoricalCrossentropy(), np.log(5)),
    (7, keras.losses.categorical_crossentropy, np.log(7)),
    (1, "binary_crossentropy", np.log(2)),
    (1, keras.losses.BinaryCrossentropy(from_logits=True), np.log(2)),
    (1, "mse", None),
    (3, keras.losses.Huber(), None),
])
def test_chance_loss_reads_the_loss_and_the_output_width(width, loss, expected):
    got = chance_loss(_classifier(width, loss))
    assert got == (None if expected is None else pytest.approx(expected))


def test_chance_loss_is_none_for_two_outputs():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, [keras.layers.Dense(3)(inputs), keras.layers.Dense(3)(inputs)])
    model.compile(optimizer="sgd", loss=["categorical_crossentropy"] * 2)
    assert chance_loss(model) is None


def test_a_classifier_far_above_chance_that_barely_falls_stalls():
    chance = np.log(10)
    # keras-io's MNIST convnet on pixels x1e4: 23.1 -> 16.0 in 8 steps (0.69x)
    mnist = [23.094, 19.232, 19.029, 18.611, 17.929, 16.991, 16.338, 15.981]
    assert find_stall(mnist, "input_scale", chance=chance) == "chance"
    # the custom-loop guide's net on raw pixels, healthy: 70.7 -> 25.4 (0.36x): learning
    guide = [70.693, 52.071, 44.296, 38.587, 34.386, 30.983, 27.765, 25.369]
    assert find_stall(guide, "input_scale", chance=chance) is None
    # no structural sign, no loss known, or under CHANCE_FACTOR x chance: no stall
    assert find_stall(mnist, None, chance=chance) is None
    assert find_stall(mnist, "input_scale", chance=None) is None
    near = np.asarray(mnist) / mnist[STALL_STEPS - 1] * (CHANCE_FACTOR * chance * 0.99)
    assert find_stall(near, "input_scale", chance=chance) is None


def test_a_flat_loss_far_above_chance_stalls_without_a_structural_sign():
    chance = np.log(2)
    # keras-io's recommender, its embedding tables at ~3e4: the loss (its L2
    # penalty) stays at 9.0e7 and moves by 1e-5 of itself in 8 steps.
    recommender = 90075808.0 - 10.0 * np.arange(STALL_STEPS)
    assert find_stall(recommender, None, chance=chance) == "chance"
    # Far above chance but falling (0.69x in 8 steps), or flat near chance: no stall.
    falling = np.linspace(20.0, 0.69 * 20.0, STALL_STEPS)
    assert find_stall(falling, None, chance=chance) is None
    near = np.full(STALL_STEPS, 0.99 * CHANCE_FACTOR * chance)
    assert find_stall(near, None, chance=chance) is None
    assert find_stall(np.full(STALL_STEPS, 1e3), None, chance=None) is None  # a regression


def test_chance_loss_of_a_subclassed_binary_classifier():
    class Scorer(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(1, activation="sigmoid")

        def call(self, x):
            return self.dense(x)

    model = Scorer()
    model.compile(optimizer="sgd", loss=keras.losses.BinaryCrossentropy())
    assert chance_loss(model) == pytest.approx(np.log(2))
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    assert chance_loss(model) is None  # its width is not known


def test_regularization_penalty_is_model_losses_summed():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((6,)),
        keras.layers.Dense(8, kernel_regularizer=keras.regularizers.L2(0.01)),
        keras.layers.Dense(3, kernel_regularizer=keras.regularizers.L1(0.1)),
    ])
    k1, _, k2, _ = (np.asarray(w, np.float64) for w in model.get_weights())
    want = 0.01 * np.sum(k1 ** 2) + 0.1 * np.sum(np.abs(k2))
    assert regularization_penalty(model) == pytest.approx(want, rel=1e-5)
    assert regularization_penalty(_classifier(3, "mse")) == 0.0


def test_a_penalty_far_above_chance_is_not_a_stall_but_a_data_loss_far_above_is():
    chance = np.log(19)
    # keras-io's EEG classifier (held out, round 4), healthy: L2 0.01 on a
    # dense head of 45M weights, a running loss of ~30 that its penalty of
    # ~28 dominates; the data's part sits near ln 19.
    eeg = 30.9 - 0.05 * np.arange(STALL_STEPS)
    assert find_stall(eeg, None, chance=chance) == "chance"  # the loss alone misreads it
    assert find_stall(eeg, None, chance=chance, penalty=28.0) is None
    # The recommender's tables at ~3e4: penalty and data loss both far above.
    recommender = 90075808.0 - 10.0 * np.arange(STALL_STEPS)
    assert find_stall(recommender, None, chance=chance, penalty=9.0e7) == "chance"


def test_a_healthy_classifier_whose_loss_is_mostly_its_penalty_gets_no_event():
    from gradguard.callbacks import NaNGuard

    rng = np.random.default_rng(0)
    x = rng.normal(size=(640, 16)).astype("float32")
    y = np.argmax(x[:, :4], axis=1)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((16,)),
        keras.layers.Dense(512, activation="relu", kernel_regularizer=keras.regularizers.L2(0.5)),
        keras.layers.Dense(4, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    guard = NaNGuard(verbose=False)
    history = model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[guard])
    first = history.history["loss"][0]
    assert first > CHANCE_FACTOR * np.log(4)  # the loss alone is far above chance...
    assert guard.events == []  # ...its penalty is, not the data's loss
