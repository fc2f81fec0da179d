"""The gradient flow heatmap, drawn from a real GradientNormLogger after a real fit."""

import keras
import numpy as np
import pandas as pd
import pytest

from gradguard.callbacks import GradientNormLogger
from gradguard.recipes.gradient_flow import gradient_flow, plot_gradient_flow, plot_gradient_flows

NAN_BATCH = 5  # 0-based batch whose inputs hold a NaN: global step 6


def _model_and_data():
    keras.utils.set_random_seed(0)
    # tanh, not relu: a compiled ReLU takes NaN to 0 on some CPUs (oneDNN),
    # and the NaN would then stop at the first layer there.
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="tanh", name="first"),
                              keras.layers.Dense(8, activation="tanh", name="middle"),
                              keras.layers.Dense(1, name="last")])
    x = np.random.default_rng(0).normal(size=(80, 4)).astype("float32")
    return model, x, x.sum(axis=1, keepdims=True)


def _fit(nan_batch=None):
    model, x, y = _model_and_data()
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    if nan_batch is not None:
        x[nan_batch * 8 + 3, 1] = np.nan  # a real NaN in a real batch
    logger = GradientNormLogger()
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=[logger])
    return model, logger


def test_heatmap_has_a_row_per_layer_and_marks_the_nan_steps(tmp_path):
    model, logger = _fit(NAN_BATCH)
    flow = gradient_flow(logger)
    # Rows: the model's trainable layers, in the model's order; columns: the 10 steps.
    assert flow.layers == ("first", "middle", "last")
    assert flow.norms.shape == (3, 10) and list(flow.steps) == list(range(1, 11))
    # The NaN input makes that step's gradients NaN and, through SGD, every
    # weight after it: every layer is non-finite from step 6 on, finite before.
    assert flow.nonfinite[:, :NAN_BATCH].sum() == 0
    assert flow.nonfinite[:, NAN_BATCH:].all()
    assert list(flow.nonfinite_steps) == list(range(NAN_BATCH + 1, 11))
    # The first column holds each layer's norm of the first step's gradient,
    # computed again here with GradientTape at the same (seeded) initial weights.
    np.testing.assert_allclose(flow.norms[:, 0], _first_step_layer_norms(), rtol=1e-5)
    path = plot_gradient_flow(logger, tmp_path / "flow.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _first_step_layer_norms():
    """Per-layer norms of the first batch's gradient at the seeded initial weights, by GradientTape."""
    import tensorflow as tf

    model, x, y = _model_and_data()
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(model(x[:8]) - y[:8]))
    grads = tape.gradient(loss, model.trainable_variables)
    squares = {}
    for g, v in zip(grads, model.trainable_variables):
        layer = v.path.split("/")[-2]
        squares[layer] = squares.get(layer, 0.0) + float(tf.reduce_sum(tf.square(g)))
    return np.sqrt([squares[name] for name in ("first", "middle", "last")])


def test_flow_from_the_layer_table_equals_the_flow_from_the_logger(tmp_path):
    _, logger = _fit()
    frame = logger.to_dataframe("layer")
    path = tmp_path / "layers.csv"
    frame.to_csv(path, index=False)
    from_csv = gradient_flow(pd.read_csv(path))
    direct = gradient_flow(logger)
    assert from_csv.layers == direct.layers and not direct.nonfinite.any()
    np.testing.assert_allclose(from_csv.norms, direct.norms, rtol=1e-6)
    written = plot_gradient_flows({"a": direct, "b": from_csv}, tmp_path / "two.png", title="two rows")
    assert written.stat().st_size > 0
    with pytest.raises(ValueError, match="no per-layer norms"):
        gradient_flow(frame.iloc[:0])
