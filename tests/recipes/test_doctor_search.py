"""The doctor's bar and search on what the population benchmark found: each judged by numpy.

Real models trained for real; the expected numbers (majority class,
accuracy, the constant prediction's loss) are computed here, not read
from the doctor.
"""

import keras
import numpy as np
import pytest

from gradguard.recipes.trials import Bar, predict, split_data

from doctor_data import linear_data


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


@pytest.mark.slow  # ~10 s on idle cores, 23 s under a benchmark
def test_a_kept_cure_still_improving_gets_its_longer_run_next():
    from gradguard.recipes.doctor import examine

    x, y = linear_data(d=12, seed=4)
    keras.utils.set_random_seed(4)
    model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(48, activation="relu"),
                              keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    found = examine(model, x * 300, y, epochs=3, batch_size=16, max_trials=3, verbose=False)
    trained = found.trials[found.trials["note"] == ""]
    assert found.cure == "Normalization in front of the inputs (12 epochs)", found.trials
    assert list(trained["change"])[1:] == ["Normalization in front of the inputs", found.cure]
    # judged here: validation MSE against the training mean's, on the raw (x 300) inputs
    pred = np.asarray(found.model(x[256:] * 300), np.float64)
    assert np.mean((pred - y[256:]) ** 2) / np.mean((y[256:] - y[:256].mean()) ** 2) <= 0.1


def _embedding_trainer():
    """An Embedding model under SGD, as a user writes it; the doctor's Trainer over it."""
    from gradguard.recipes.trials import Trainer

    rng = np.random.default_rng(0)
    x = rng.integers(0, 40, size=(320, 10)).astype("int32")
    y = (rng.normal(size=40)[x].mean(1, keepdims=True) * 2).astype("float32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((10,)), keras.layers.Embedding(40, 8),
                              keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(50.0), loss="mse")
    data = split_data(x, y, None, 0.2)
    return Trainer(model, data, Bar.measure(model, data, None), seed=0, epochs=1, batch_size=16,
                   out_dir=None), model, data


def test_a_stacked_switch_to_adam_keeps_the_clip_and_a_range_test_tunes_adams_rate():
    from gradguard.callbacks.lr_finder import find_learning_rate
    from gradguard.recipes import cures as C
    from gradguard.recipes.search import stacked

    trainer, model, (x, y, _, _) = _embedding_trainer()
    context = C.Context(clip_norm=0.123, bad_rows=(), loss=model.loss, batch_size=16)
    clipped = stacked(trainer, [C.CLIP, C.ADAM], context).optimizer  # kept clip, then Adam
    assert type(clipped) is keras.optimizers.Adam and clipped.global_clipnorm == 0.123
    assert float(clipped.learning_rate) == pytest.approx(float(keras.optimizers.Adam().learning_rate))
    # the range test run here by hand, on a copy compiled with Adam
    keras.utils.set_random_seed(0)
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    copy.compile(optimizer=keras.optimizers.Adam(), loss="mse")
    expected = float(f"{find_learning_rate(copy, x, y, batch_size=16, seed=0).suggestion:.2g}")
    for cures in ([C.ADAM_FOUND], [C.ADAM, C.LR_FINDER], [C.LR_FINDER, C.ADAM]):  # in any order
        optimizer = stacked(trainer, cures, context).optimizer
        assert type(optimizer) is keras.optimizers.Adam
        assert float(optimizer.learning_rate) == pytest.approx(expected), cures


def test_adam_at_a_range_tests_rate_is_not_offered_to_adam():
    from gradguard.recipes import cures as C

    trainer, model, _ = _embedding_trainer()
    context = C.Context(clip_norm=None, bad_rows=(), loss=model.loss, batch_size=16)
    with pytest.raises(C.NotApplicable, match="Adam already"):
        C.ADAM_FOUND.apply(C.ADAM.apply(trainer.patient(), context), context)
