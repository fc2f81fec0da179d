"""A later `fit` with fresh callback instances reuses the compiled step.

A loop, Keras Tuner or staged fine-tuning calls `fit` again with new
callback objects. Only the first `fit` may trace the train step; the
count is read from the model's own `train_step`, whose Python body runs
once per trace (never per batch once compiled).
"""

import keras
import numpy as np
import pytest

from gradguard.callbacks import (
    AGC, AutoClip, GradientClipping, GradientNormLogger, NaNGuard, ZClip,
)
from tests.callbacks.dense_tape import embedding_model, token_data
from tests.callbacks.helpers import regression_data


class Counting(keras.Sequential):
    """A Sequential model that counts how often its train step is traced."""

    traces = 0

    def train_step(self, data):
        Counting.traces += 1
        return super().train_step(data)


def _model():
    Counting.traces = 0
    model = Counting([
        keras.Input((8,)),
        keras.layers.Dense(16, activation="tanh"),
        keras.layers.Dense(1),
    ])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    return model


STACKS = {
    "none": lambda: [],
    "logger": lambda: [GradientNormLogger()],
    "logger_every_4": lambda: [GradientNormLogger(every_n_steps=4)],
    "nan_guard": lambda: [NaNGuard(verbose=False)],
    "autoclip": lambda: [AutoClip(percentile=90.0)],
    "clipping": lambda: [GradientClipping(global_clipnorm=1.0)],
    "agc": lambda: [AGC(clipping=0.05)],
    "zclip": lambda: [ZClip()],
    "full": lambda: [GradientNormLogger(), NaNGuard(verbose=False), AutoClip(percentile=90.0)],
}


@pytest.mark.parametrize("stack", [
    pytest.param(s, marks=() if s in ("none", "logger", "full") else pytest.mark.slow)
    for s in STACKS
])
def test_later_fits_with_fresh_callbacks_do_not_retrace(stack):
    x, y = regression_data((8,), n=32)
    model = _model()
    model.fit(x, y, batch_size=8, verbose=0, callbacks=STACKS[stack]())
    first = Counting.traces
    assert first >= 1
    for _ in range(3):
        model.fit(x, y, batch_size=8, verbose=0, callbacks=STACKS[stack]())
    assert Counting.traces == first, f"{stack}: {first} traces, then {Counting.traces}"


def test_fresh_logger_on_an_embedding_model_does_not_retrace_and_still_logs():
    x, y = token_data(n=16)

    class CountingEmbedding(Counting):
        pass

    keras.utils.set_random_seed(0)
    base = embedding_model()
    model = CountingEmbedding(base.layers)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    Counting.traces = 0
    loggers, traces = [], []
    for _ in range(3):
        loggers.append(GradientNormLogger())
        model.fit(x, y, batch_size=8, verbose=0, callbacks=[loggers[-1]])
        traces.append(Counting.traces)
    assert traces[0] >= 1 and traces[1:] == [traces[0]] * 2
    # Each fresh logger logs its own fit's two steps, numbered globally.
    for i, logger in enumerate(loggers):
        table = logger.to_dataframe("global")
        assert table["step"].tolist() == [2 * i + 1, 2 * i + 2]
        assert np.isfinite(table["grad_norm"]).all()
