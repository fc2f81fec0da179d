"""The model zoo: every common Keras model kind, trained with every callback.

Each model (`zoo_models.py`) is trained a few steps with
`GradientNormLogger`, `NaNGuard` and one clipping callback (`AutoClip` or
`GradientClipping`; Keras allows one clipping mode at a time, so each model
runs with one of them by default and with the other under `-m slow`). At
every step the logged global and per-layer norms must equal the tape's, at
the weights the step started from and on the same batch, with sparse
gradients densified; and these healthy runs must raise no `NaNGuard`
event. The same zoo runs under JAX (and torch, `-m slow`) in a subprocess,
its norms checked here against TensorFlow's tape on the weights that run
reports.
"""

import importlib.util
import os
import pickle
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from gradguard.callbacks import AutoClip, GradientClipping, GradientNormLogger, NaNGuard
from tests.callbacks import zoo_models
from tests.callbacks.zoo_models import DETERMINISTIC, WeightsBefore, build, data, take

STEPS = 4
BATCH = 8
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class CustomStep(keras.Model):
    """A subclassed model whose own `train_step` calls `optimizer.apply`."""

    def __init__(self):
        super().__init__()
        self.hidden = keras.layers.Dense(8, activation="tanh", name="hidden")
        self.head = keras.layers.Dense(1, name="head")

    def call(self, x):
        return self.head(self.hidden(x))

    def train_step(self, batch):
        x, y = batch
        with tf.GradientTape() as tape:
            loss = custom_loss(y, self(x, training=True))
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply(grads, self.trainable_variables)
        return {"loss": loss}


def custom_loss(y, y_pred):
    return tf.reduce_mean(tf.square(y_pred - y))


def build_any(name):
    if name != "custom_train_step":
        return build(name)
    model = CustomStep()
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    model(np.zeros((1, 6), "float32"))
    return model


def tape_norms(name, weights, x, y):
    """(global norm, {top-level layer: norm}) of the tape's densified gradient."""
    model = build_any(name)
    model.set_weights(weights)
    with tf.GradientTape() as tape:
        y_pred = model(x, training=True)
        if name == "custom_train_step":
            loss = custom_loss(y, y_pred)
        else:
            loss = model.compute_loss(x=x, y=y, y_pred=y_pred, training=True)
    grads = tape.gradient(loss, model.trainable_variables)
    squares = {v.path: float(np.sum(np.square(tf.convert_to_tensor(g).numpy(), dtype=np.float64)))
               for g, v in zip(grads, model.trainable_variables)}
    layers = {}
    for layer in model.layers:
        own = [squares.pop(v.path) for v in layer.trainable_variables if v.path in squares]
        if own:
            layers[layer.name] = float(np.sqrt(sum(own)))
    assert not squares  # every variable belongs to a top-level layer
    return float(np.sqrt(sum(s ** 2 for s in layers.values()))), layers


def check_against_tape(name, seen, table, layers, x, y, backend="tensorflow"):
    assert table["step"].tolist() == list(range(1, STEPS + 1))
    logged = table["grad_norm"].to_numpy()
    assert np.isfinite(logged).all() and (logged > 0).all()
    if name not in DETERMINISTIC | {"custom_train_step"}:
        return
    rtol = 1e-4 if backend == "tensorflow" else 1e-3
    for step, weights in enumerate(seen, start=1):
        xb, yb = take(x, (step - 1) * BATCH, step * BATCH), take(y, (step - 1) * BATCH, step * BATCH)
        norm, per_layer = tape_norms(name, weights, xb, yb)
        np.testing.assert_allclose(logged[step - 1], norm, rtol=rtol, err_msg=f"{name} step {step}")
        got = layers[layers.step == step].set_index("layer")["norm"]
        assert set(got.index) == set(per_layer), name
        for layer, value in per_layer.items():
            np.testing.assert_allclose(got[layer], value, rtol=rtol, atol=1e-7,
                                       err_msg=f"{name} step {step} layer {layer}")


ALL = sorted(zoo_models.FACTORIES) + ["custom_train_step"]
# One clipping callback per model by default (alternating), the other under -m slow.
CASES = [
    pytest.param(name, clip, marks=() if (i + j) % 2 == 0 else pytest.mark.slow,
                 id=f"{name}-{clip}")
    for i, name in enumerate(ALL) for j, clip in enumerate(["autoclip", "clipping"])
]


@pytest.mark.parametrize("name,clip", CASES)
def test_zoo_norms_equal_the_tape_and_no_event(name, clip):
    if name == "keras_hub_gpt2" and importlib.util.find_spec("keras_hub") is None:
        pytest.skip("keras-hub is not installed")
    model = build_any(name)
    if name == "custom_train_step":
        x, y = data("frozen_layers", STEPS * BATCH)
    else:
        x, y = data(name, STEPS * BATCH)
    before, logger, guard = WeightsBefore(), GradientNormLogger(), NaNGuard(verbose=False)
    clipper = AutoClip(percentile=50.0) if clip == "autoclip" else GradientClipping(global_clipnorm=0.5)
    model.fit(x, y, batch_size=BATCH, shuffle=False, verbose=0,
              callbacks=[before, logger, guard, clipper])
    assert guard.events == []
    check_against_tape(name, before.seen, logger.to_dataframe("global"),
                       logger.to_dataframe(), x, y)


SCRIPT = textwrap.dedent("""
    import pickle, sys
    import keras
    sys.path.insert(0, {root!r})
    from gradguard.callbacks import AutoClip, GradientClipping, GradientNormLogger, NaNGuard
    from tests.callbacks.zoo_models import WeightsBefore, build, data
    out = {{}}
    for i, name in enumerate({names!r}):
        keras.utils.set_random_seed(0)
        accumulate = name.endswith("+accumulate")
        base = name.split("+")[0]
        model = build(base)
        if accumulate:
            model.compile(optimizer=keras.optimizers.SGD(0.01, gradient_accumulation_steps=2),
                          loss="mse")
        x, y = data(base, {n})
        before, logger, guard = WeightsBefore(), GradientNormLogger(), NaNGuard(verbose=False)
        clipper = AutoClip(percentile=50.0) if i % 2 else GradientClipping(global_clipnorm=0.5)
        model.fit(x, y, batch_size={batch}, shuffle=False, verbose=0,
                  callbacks=[before, logger, guard, clipper])
        out[name] = dict(seen=before.seen, table=logger.to_dataframe("global"),
                         layers=logger.to_dataframe(), events=len(guard.events),
                         backend=keras.backend.backend())
    pickle.dump(out, open({out!r}, "wb"))
""")

JAX_DEFAULT = ["dict_io", "embedding+accumulate"]
JAX_SLOW = sorted(set(zoo_models.FACTORIES) - {"dict_io"})


@pytest.mark.parametrize("backend,names", [
    pytest.param("jax", JAX_DEFAULT, id="jax-default"),
    pytest.param("jax", JAX_SLOW, id="jax-rest", marks=pytest.mark.slow),
    pytest.param("torch", JAX_DEFAULT + ["embedding_masked", "keras_hub_gpt2"], id="torch",
                 marks=pytest.mark.slow),
])
def test_zoo_under_other_backends(backend, names, tmp_path):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    if importlib.util.find_spec("keras_hub") is None:
        names = [n for n in names if n != "keras_hub_gpt2"]
    out = str(tmp_path / "zoo.pkl")
    script = SCRIPT.format(root=ROOT, names=names, n=STEPS * BATCH, batch=BATCH, out=out)
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=600)
    with open(out, "rb") as f:
        results = pickle.load(f)
    for name in names:
        result = results[name]
        assert result["backend"] == backend and result["events"] == 0, name
        base = name.split("+")[0]
        x, y = data(base, STEPS * BATCH)
        check_against_tape(base, result["seen"], result["table"], result["layers"], x, y,
                           backend=backend)
        if name.endswith("+accumulate"):  # weights change at every 2nd micro-batch only
            seen = result["seen"]
            assert all(np.array_equal(a, b) for a, b in zip(seen[0], seen[1]))
            assert not all(np.array_equal(a, b) for a, b in zip(seen[1], seen[2]))
