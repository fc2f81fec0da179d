"""Steps stay global across recompiles; a model without trainable weights trains."""

import keras
import numpy as np
import pytest

from gradguard.callbacks import GradientNormLogger, NaNGuard
from gradguard.callbacks.attach import find_monitor
from tests.callbacks.helpers import dense_model, global_norm, regression_data, tape_steps

BATCH = 16


@pytest.mark.parametrize("same_optimizer", [
    False, pytest.param(True, marks=pytest.mark.slow),
])
def test_recompiling_goes_on_counting_steps(same_optimizer):
    x, y = regression_data((8,), n=8 * BATCH)
    model = dense_model()
    first = keras.optimizers.SGD(0.01)
    model.compile(optimizer=first, loss="mse")
    logger, guard = GradientNormLogger(), NaNGuard(verbose=False)
    model.fit(x, y, batch_size=BATCH, shuffle=False, verbose=0, callbacks=[logger, guard])
    model.compile(optimizer=first if same_optimizer else keras.optimizers.SGD(0.02),
                  loss="mse")
    weights = model.get_weights()
    model.fit(x, y, batch_size=BATCH, shuffle=False, verbose=0, callbacks=[logger, guard])
    table = logger.to_dataframe("global")
    assert table["step"].tolist() == list(range(1, 17))  # no step twice
    assert table["fit"].tolist() == [0] * 8 + [1] * 8
    # Keras' own count restarts with a new optimizer (its schedule does too).
    assert int(model.optimizer.iterations.numpy()) == (16 if same_optimizer else 8)
    assert find_monitor(model.optimizer).last_step == 16
    lr = 0.01 if same_optimizer else 0.02
    expected = tape_steps(dense_model, weights, x, y, BATCH, lr, 8)
    np.testing.assert_allclose(table["grad_norm"][8:], [global_norm(g) for g in expected],
                               rtol=1e-4)
    assert guard.events == []


def test_model_without_trainable_weights_trains_with_every_callback():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, trainable=False)])
    model.compile(optimizer="sgd", loss="mse")
    before = model.get_weights()
    logger, guard = GradientNormLogger(), NaNGuard(verbose=False)
    x = np.ones((32, 3), "float32")
    model.fit(x, np.zeros((32, 2), "float32"), batch_size=8, verbose=0,
              callbacks=[logger, guard])
    assert guard.events == []
    assert len(logger.to_dataframe("global")) == 0  # no gradient, no row
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert find_monitor(model.optimizer).read().count == 0
