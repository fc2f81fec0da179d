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
