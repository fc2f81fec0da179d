"""Tests of the profile benchmark's timer: it counts every call and changes nothing."""

import keras
import numpy as np

from gradguard.benchmarks.callback_profile import timed
from gradguard.callbacks import GradientNormLogger


def test_timed_hook_counts_every_batch_and_the_callback_still_works():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(48, 4)).astype("float32")
    y = rng.normal(size=(48, 1)).astype("float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    logger, times = GradientNormLogger(), {}
    timed(logger, "logger", times)
    seen = []

    class After(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(logs["grad_norm"])

    model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0,
              callbacks=[logger, After()])
    assert len(times["logger"]) == 12 and all(t >= 0 for t in times["logger"])
    table = logger.to_dataframe("global")
    assert table["step"].tolist() == list(range(1, 13))
    np.testing.assert_allclose(seen, table["grad_norm"], rtol=1e-6)
