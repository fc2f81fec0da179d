"""The evidence behind the `recurrence` sign: which loops amplify (inference only)."""

import keras
import numpy as np

from gradguard.benchmarks.diagnosis_population import make_data, make_model
from gradguard.benchmarks.recurrent_gain_twins import state_norms


def _growth(family, act, gain):
    keras.utils.set_random_seed(0)
    x, _ = make_data(family, 0, n=16, seq_len=40)
    model = make_model(family, x.shape[1:], recurrent_gain=gain, rnn_act=act)
    norms = state_norms(model, x)
    # Independently: the last step's state is the layer's own output.
    last = np.asarray(model.layers[1](x))
    np.testing.assert_allclose(norms[-1], np.linalg.norm(last, axis=-1).mean(), rtol=1e-4)
    return norms[-1]


def test_a_relu_simple_rnn_amplifies_at_gain_1_3_and_a_gru_at_gain_2_does_not():
    assert _growth("simplernn", "relu", 1.3) > 50 * _growth("simplernn", "relu", 1.0)
    assert _growth("gru", "tanh", 2.0) < 1.2 * _growth("gru", "tanh", 1.0)
