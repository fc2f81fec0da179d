"""Targets fed as a model input (the endpoint layer pattern): found, and measured as targets."""

import keras
import numpy as np
from keras import ops

from gradguard.callbacks import NaNGuard
from gradguard.callbacks.loss_only_inputs import loss_only_inputs
from gradguard.callbacks.target_scale import TARGET_SCALE


class _Endpoint(keras.layers.Layer):
    """keras-io's LogisticEndpoint: the loss from the targets input, the predictions out."""

    def __init__(self):
        super().__init__()
        self.loss_fn = keras.losses.BinaryCrossentropy(from_logits=True)

    def call(self, logits, targets=None, sample_weight=None):
        if targets is not None:
            self.add_loss(self.loss_fn(targets, logits, sample_weight))
        return ops.sigmoid(logits)


def _endpoint_model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8,), name="inputs")
    targets = keras.Input((1,), name="targets")
    weights = keras.Input((1,), name="sample_weight")
    logits = keras.layers.Dense(1)(keras.layers.Dense(16, activation="tanh")(inputs))
    model = keras.Model([inputs, targets, weights], _Endpoint()(logits, targets, weights))
    model.compile(keras.optimizers.Adam(1e-3))  # no loss: the layer adds it
    return model


def _data(scale, n=512, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype("float32")
    t = (x[:, :1] + 0.5 * x[:, 1:2] > 0).astype("float32") * scale
    return {"inputs": x, "targets": t, "sample_weight": np.ones((n, 1), "float32")}


def test_the_inputs_only_the_loss_reads_are_found():
    model = _endpoint_model()
    batch = {k: v[:32] for k, v in _data(1.0).items()}
    assert loss_only_inputs(model, batch) == ["targets", "sample_weight"]
    # Independently: zeroing the features moves the outputs, zeroing the targets does not.
    base = np.asarray(model(batch, training=False))
    assert not np.array_equal(base, np.asarray(model({**batch, "inputs": 0 * batch["inputs"]})))
    assert np.array_equal(base, np.asarray(model({**batch, "targets": 0 * batch["targets"]})))


def test_a_model_that_reads_every_input_or_one_array_has_none():
    keras.utils.set_random_seed(0)
    a, b = keras.Input((3,), name="a"), keras.Input((2,), name="b")
    model = keras.Model([a, b], keras.layers.Dense(1)(keras.layers.Concatenate()([a, b])))
    rng = np.random.default_rng(0)
    batch = {"a": rng.normal(size=(8, 3)).astype("float32"),
             "b": rng.normal(size=(8, 2)).astype("float32")}
    assert loss_only_inputs(model, batch) == []
    assert loss_only_inputs(model, [batch["a"], batch["b"]]) == []
    single = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    assert loss_only_inputs(single, batch["a"]) == []


def test_targets_x1e5_fed_as_an_input_are_named_target_scale():
    model = _endpoint_model()
    data = _data(1e5)
    assert np.sqrt(np.mean(data["targets"][:32] ** 2)) > TARGET_SCALE  # computed here
    guard = NaNGuard(verbose=False)
    history = model.fit(data, batch_size=32, epochs=2, shuffle=False, verbose=0, callbacks=[guard])
    assert guard.events, history.history["loss"]
    event = guard.events[0]
    assert event.cause == "target_scale", (event.trigger, event.cause, event.detail)


def test_unit_targets_fed_as_an_input_draw_no_event():
    model = _endpoint_model()
    guard = NaNGuard(verbose=False)
    history = model.fit(_data(1.0), batch_size=32, epochs=2, shuffle=False, verbose=0,
                        callbacks=[guard])
    assert guard.events == []
    assert history.history["loss"][-1] < history.history["loss"][0]  # it learns
