"""A logger-only fit is plain Keras, weight for weight.

Under TensorFlow an `Embedding`'s gradient is a `tf.IndexedSlices` with a
row per token occurrence, and Keras' Adam and RMSprop update those rows one
occurrence at a time (a token seen k times moves further than its summed
gradient would move it). The monitor measures the densified gradient but
must hand the inner optimizer exactly what Keras would: the reference here
is the same model, from the same weights, fitted by plain Keras.
"""

import importlib.util
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from gradguard.callbacks import AutoClip, GradientNormLogger
from tests.callbacks import zoo_models
from tests.callbacks.dense_tape import embedding_model, token_data

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BATCH = 8
OPTIMIZERS = {
    "adam": lambda **kw: keras.optimizers.Adam(0.05, **kw),
    "rmsprop": lambda **kw: keras.optimizers.RMSprop(0.05, **kw),
    "sgd": lambda **kw: keras.optimizers.SGD(0.5, **kw),
}


def _twin_fits(build, optimizer, x, y, callbacks_per_fit, fits=2, loss="mse"):
    """Fits two copies of one model, plain and with callbacks; returns both weight lists.

    `callbacks_per_fit()` makes a fresh callback list for each `fit` call.
    """
    keras.utils.set_random_seed(0)
    plain = build()
    keras.utils.set_random_seed(0)
    logged = build()
    logged.set_weights(plain.get_weights())
    plain.compile(optimizer=optimizer(), loss=loss)
    logged.compile(optimizer=optimizer(), loss=loss)
    for _ in range(fits):
        keras.utils.set_random_seed(1)
        plain.fit(x, y, batch_size=BATCH, shuffle=False, verbose=0)
        keras.utils.set_random_seed(1)
        logged.fit(x, y, batch_size=BATCH, shuffle=False, verbose=0,
                   callbacks=callbacks_per_fit())
    return plain.get_weights(), logged.get_weights()


def _max_diff(a, b) -> float:
    return max(float(np.max(np.abs(u - v))) if u.size else 0.0 for u, v in zip(a, b))


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_logger_only_fit_is_plain_keras_on_an_embedding(name):
    x, y = token_data(n=4 * BATCH)
    plain, logged = _twin_fits(embedding_model, OPTIMIZERS[name], x, y,
                               lambda: [GradientNormLogger()])
    assert _max_diff(plain, logged) <= 1e-6
    # The run moved: an equality of two untrained models would prove nothing.
    assert _max_diff(plain, embedding_model().get_weights()) > 1e-3


@pytest.mark.parametrize("clip", [{"clipnorm": 0.05}, {"global_clipnorm": 0.05},
                                  {"clipvalue": 0.005}])
def test_logger_leaves_keras_own_clipping_of_slices_alone(clip):
    # Keras clips an IndexedSlices row by row; with the logger it still does.
    x, y = token_data(n=4 * BATCH)
    plain, logged = _twin_fits(embedding_model, lambda: OPTIMIZERS["adam"](**clip), x, y,
                               lambda: [GradientNormLogger()])
    assert _max_diff(plain, logged) <= 1e-6


def test_autoclip_that_never_clips_keeps_the_sparse_update():
    # At the 100th percentile the threshold is the largest norm seen, the
    # current one included: nothing is clipped, so the update is Keras' own.
    x, y = token_data(n=4 * BATCH)
    plain, clipped = _twin_fits(embedding_model, OPTIMIZERS["adam"], x, y,
                                lambda: [GradientNormLogger(), AutoClip(percentile=100.0)])
    assert _max_diff(plain, clipped) <= 1e-6


ZOO_DEFAULT = {"embedding"}  # the rest under -m slow (LSTM, dict: ~15 s each)


def _zoo_loss(name):
    return {"score": "mse", "label": "sparse_categorical_crossentropy"} \
        if name == "dict_io" else "mse"


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=() if n in ZOO_DEFAULT else pytest.mark.slow)
    for n in sorted(zoo_models.FACTORIES)
])
def test_logger_only_fit_is_plain_keras_on_the_zoo(name):
    if name == "keras_hub_gpt2" and importlib.util.find_spec("keras_hub") is None:
        pytest.skip("keras-hub is not installed")
    x, y = zoo_models.data(name, 3 * BATCH)
    plain, logged = _twin_fits(zoo_models.FACTORIES[name],
                               lambda: keras.optimizers.Adam(0.02), x, y,
                               lambda: [GradientNormLogger()], loss=_zoo_loss(name))
    assert _max_diff(plain, logged) <= 1e-6, name


SCRIPT = textwrap.dedent("""
    import sys
    import keras, numpy as np
    sys.path.insert(0, {root!r})
    from gradguard.callbacks import GradientNormLogger
    from tests.callbacks.dense_tape import embedding_model, token_data
    x, y = token_data(n=32)
    out = {{}}
    for name, make in [("adam", lambda: keras.optimizers.Adam(0.05)),
                       ("rmsprop", lambda: keras.optimizers.RMSprop(0.05))]:
        keras.utils.set_random_seed(0)
        plain, logged = embedding_model(), embedding_model()
        logged.set_weights(plain.get_weights())
        plain.compile(optimizer=make(), loss="mse")
        logged.compile(optimizer=make(), loss="mse")
        for _ in range(2):
            plain.fit(x, y, batch_size=8, shuffle=False, verbose=0)
            logged.fit(x, y, batch_size=8, shuffle=False, verbose=0,
                       callbacks=[GradientNormLogger()])
        out[name] = max(float(np.max(np.abs(a - b)))
                        for a, b in zip(plain.get_weights(), logged.get_weights()))
    out["backend"] = keras.backend.backend()
    print("RESULT", out)
""")


@pytest.mark.slow  # a JAX subprocess: ~35 s on a loaded 2-core machine
def test_logger_only_fit_is_plain_keras_under_jax():
    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed")
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, "-c", SCRIPT.format(root=ROOT)], env=env,
                          check=True, timeout=300, capture_output=True, text=True)
    line = [s for s in done.stdout.splitlines() if s.startswith("RESULT")][-1]
    result = eval(line[len("RESULT "):])  # a dict of floats and a str we printed
    assert result["backend"] == "jax"
    assert result["adam"] <= 1e-6 and result["rmsprop"] <= 1e-6
