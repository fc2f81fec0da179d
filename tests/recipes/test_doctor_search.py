"""The doctor's bar and search on what the population benchmark found: each judged by numpy.

Real models trained for real; the expected numbers (majority class,
accuracy, the constant prediction's loss) are computed here, not read
from the doctor.
"""

import keras
import numpy as np

from gradguard.recipes.trials import Bar, predict, split_data


@keras.saving.register_keras_serializable(package="gradguard_tests")
def hand_log_loss(y_true, y_pred):
    """Binary cross-entropy written by hand, as users do, without an epsilon."""
    y_true = keras.ops.cast(y_true, y_pred.dtype)
    return -keras.ops.mean(y_true * keras.ops.log(y_pred) + (1 - y_true) * keras.ops.log(1 - y_pred),
                           axis=-1)


def binary_data(n=320, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype("float32")
    return x, (x[:, 0] + x[:, 1] > 0.3).astype("float32")


def classifier(optimizer, loss, seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer=optimizer, loss=loss)
    return model


def test_a_hand_written_loss_on_labels_is_judged_as_a_classifier_by_accuracy():
    x, y = binary_data()
    model = classifier(keras.optimizers.SGD(0.3), hand_log_loss)
    model.fit(x[:256], y[:256], epochs=10, batch_size=16, verbose=0)
    bar = Bar.measure(model, split_data(x, y, None, 0.2), None)
    y_train, y_val = y[:256], y[256:]
    majority = np.mean(y_val == float(y_train.mean() > 0.5))  # the training set's majority class
    assert bar.kind == "classification" and bar.labels == "binary"
    assert np.isclose(bar.majority, majority)
    p = np.clip(y_train.mean(), 1e-7, 1 - 1e-7)  # the constant prediction's log loss, by numpy
    assert np.isclose(bar.trivial, -np.mean(y_val * np.log(p) + (1 - y_val) * np.log(1 - p)), rtol=1e-5)
    score = bar.score(model, x[256:], y_val)
    accuracy = np.mean((predict(model, x[256:])[:, 0] > 0.5) == (y_val > 0.5))
    assert np.isclose(score["accuracy"], accuracy) and accuracy > 0.85
    assert score["learned"] == (accuracy >= majority + 0.5 * (1 - majority))


def test_a_hand_written_loss_on_real_targets_stays_regression():
    x, _ = binary_data()
    y = (x[:, :1] * 0.3 + 0.5).clip(0.01, 0.99)  # probabilities in (0, 1), not labels
    bar = Bar.measure(classifier("sgd", hand_log_loss), split_data(x, y, None, 0.2), None)
    assert bar.kind == "regression"
