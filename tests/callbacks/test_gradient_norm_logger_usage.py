"""GradientNormLogger as scripts use it: unknown-length data, copies, the keys it logs."""

import copy
import pickle

import keras
import numpy as np
import pytest
import tensorflow as tf

from gradguard.callbacks import GradientNormLogger
from tests.callbacks.helpers import dense_model, global_norm, regression_data, tape_steps

BATCH = 16


class Batches(keras.callbacks.Callback):
    """Counts the batches Keras trained and keeps each batch's logged norm."""

    def on_train_begin(self, logs=None):
        self.norms = []

    def on_train_batch_end(self, batch, logs=None):
        self.norms.append((logs or {}).get("grad_norm"))


def _unknown_length(x, y):
    def batches():
        for i in range(0, len(x), BATCH):
            yield x[i:i + BATCH], y[i:i + BATCH]

    spec = (tf.TensorSpec((None, x.shape[1])), tf.TensorSpec((None, 1)))
    return tf.data.Dataset.from_generator(batches, output_signature=spec)


@pytest.mark.parametrize("every_n_steps", [1, 3])
def test_unknown_length_dataset_logs_every_step_trained(every_n_steps):
    x, y = regression_data((8,), n=4 * BATCH)
    data = _unknown_length(x, y)
    assert data.cardinality().numpy() == tf.data.UNKNOWN_CARDINALITY
    model = dense_model()
    weights = model.get_weights()
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    logger, batches = GradientNormLogger(every_n_steps=every_n_steps), Batches()
    model.fit(data, epochs=3, verbose=0, callbacks=[logger, batches])
    table = logger.to_dataframe("global")
    # One row for each batch Keras trained: 4 a epoch, the end of the data
    # none. (Keras' own `iterations` also counts the step that found the
    # data exhausted, so step numbers skip one per epoch: 1-4, 6-9, 11-14.)
    assert len(batches.norms) == 12
    assert len(table) == 12
    assert table.groupby("epoch").size().tolist() == [4, 4, 4]
    assert table["step"].is_monotonic_increasing and table["step"].is_unique
    # The norms are the tape's, batch after batch (plain SGD, epoch after epoch).
    expected = tape_steps(dense_model, weights, x, y, BATCH, 0.05, 12)
    np.testing.assert_allclose(table["grad_norm"], [global_norm(g) for g in expected],
                               rtol=1e-4)
    if every_n_steps == 1:  # every batch's logs had its own norm
        np.testing.assert_allclose(batches.norms, table["grad_norm"], rtol=1e-6)


def test_logger_deep_copies_and_pickles_after_fit(tmp_path):
    x, y = regression_data((8,), n=3 * BATCH)
    model = dense_model()
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    logger = GradientNormLogger(log_dir=str(tmp_path / "tb"))
    model.fit(x, y, batch_size=BATCH, verbose=0, callbacks=[logger])
    want = logger.to_dataframe()
    for clone in (copy.deepcopy(logger), pickle.loads(pickle.dumps(logger))):
        assert clone.model is None
        assert clone.to_dataframe().equals(want)
        assert clone.layer_names == logger.layer_names
    # The original is still bound to its model and logs on.
    model.fit(x, y, batch_size=BATCH, verbose=0, callbacks=[logger])
    assert logger.to_dataframe("global")["step"].tolist() == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("log_keys,batch_keys,epoch_keys", [
    ("all", {"grad_norm", "grad_norm_clipped"}, {"grad_norm", "grad_norm_max", "grad_norm_clipped"}),
    ("norm", {"grad_norm"}, {"grad_norm", "grad_norm_max"}),
    ("epoch", set(), {"grad_norm", "grad_norm_max", "grad_norm_clipped"}),
    ("none", set(), set()),
])
def test_log_keys_choose_what_reaches_the_progress_bar_and_history(log_keys, batch_keys,
                                                                  epoch_keys):
    x, y = regression_data((8,), n=2 * BATCH)
    model = dense_model()
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")

    class Keys(keras.callbacks.Callback):  # after the logger, as Keras' progress bar is
        def on_train_batch_end(self, batch, logs=None):
            self.batch = {k for k in logs if k.startswith("grad")}

    keys, logger = Keys(), GradientNormLogger(log_keys=log_keys)
    history = model.fit(x, y, batch_size=BATCH, verbose=0, callbacks=[logger, keys])
    assert keys.batch == batch_keys
    assert {k for k in history.history if k.startswith("grad")} == epoch_keys
    assert len(logger.to_dataframe("global")) == 2  # the record is whole either way


def test_log_keys_is_checked():
    with pytest.raises(ValueError, match="GradientNormLogger received log_keys='short'"):
        GradientNormLogger(log_keys="short")
