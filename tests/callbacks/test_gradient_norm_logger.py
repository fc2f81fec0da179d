"""GradientNormLogger against norms computed independently with GradientTape."""

import csv

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from gradguard.callbacks import GradientMonitor, GradientNormLogger
from tests.callbacks.helpers import (
    dense_model, global_norm, lstm_model, regression_data, tape_steps,
)

LR = 0.05
BATCH = 16


def _fit(model_fn, x, *, jit, spe, epochs=1, logger=None, **fit_kwargs):
    y = regression_data(x.shape[1:], n=len(x), seed=1)[1]
    model = model_fn()
    model.compile(
        optimizer=keras.optimizers.SGD(LR), loss="mse", jit_compile=jit,
        steps_per_execution=spe,
    )
    weights = model.get_weights()
    logger = logger or GradientNormLogger()
    history = model.fit(
        x, y, batch_size=BATCH, epochs=epochs, shuffle=False, verbose=0,
        callbacks=[logger, *fit_kwargs.pop("callbacks", [])], **fit_kwargs,
    )
    return model, weights, y, logger, history


@pytest.mark.parametrize("spe", [1, 4])
@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("kind", ["dense", "lstm"])
def test_norms_match_gradient_tape(kind, jit, spe):
    model_fn = dense_model if kind == "dense" else lstm_model
    shape = (8,) if kind == "dense" else (12, 3)
    x = regression_data(shape, n=64)[0]
    model, weights, y, logger, _ = _fit(model_fn, x, jit=jit, spe=spe)
    steps = len(x) // BATCH
    expected = tape_steps(model_fn, weights, x, y, BATCH, LR, steps)

    table = logger.to_dataframe("global")
    assert table["step"].tolist() == list(range(1, steps + 1))  # none lost
    np.testing.assert_allclose(
        table["grad_norm"], [global_norm(g) for g in expected], rtol=1e-4
    )
    # No clipping configured: the clipped norm is the norm.
    np.testing.assert_allclose(table["grad_norm_clipped"], table["grad_norm"])

    layers = logger.to_dataframe()
    assert set(layers["layer"]) == {layer.name for layer in model.layers}
    owner = [
        layer.name for layer in model.layers for _ in layer.trainable_variables
    ]
    for step, grads in enumerate(expected, start=1):
        for name in set(owner):
            want = global_norm([g for g, o in zip(grads, owner) if o == name])
            got = layers.query("step == @step and layer == @name")["norm"]
            np.testing.assert_allclose(got, [want], rtol=1e-4)


def test_reading_every_50_steps_loses_nothing():
    x = regression_data((8,), n=16 * 30)[0]
    every = _fit(dense_model, x, jit=False, spe=1, epochs=4)[3]
    keras.utils.set_random_seed(0)
    sparse = _fit(
        dense_model, x, jit=False, spe=1, epochs=4,
        logger=GradientNormLogger(every_n_steps=50),
    )[3]
    a, b = every.to_dataframe("global"), sparse.to_dataframe("global")
    assert len(a) == 120
    np.testing.assert_allclose(a["grad_norm"], b["grad_norm"], rtol=1e-6)
    assert a["epoch"].tolist() == b["epoch"].tolist()


def test_every_50_steps_reads_once_in_50_and_logs_those_batches(monkeypatch):
    # Reading every 50 steps: Keras' own train function runs (no norms in
    # the step's outputs), the monitor is read once in 50 batches, and the
    # batch logs of those batches carry the norm of their own step.
    x = regression_data((8,), n=16 * 30)[0]
    reads = []
    read = GradientMonitor.read
    monkeypatch.setattr(GradientMonitor, "read", lambda self: reads.append(1) or read(self))
    logged = []

    class Spy(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            logged.append(logs.get("grad_norm"))

    logger = _fit(dense_model, x, jit=False, spe=1, epochs=4, callbacks=[Spy()],
                  logger=GradientNormLogger(every_n_steps=50))[3]
    table = logger.to_dataframe("global").set_index("step")
    assert [i + 1 for i, n in enumerate(logged) if n is not None] == [50, 100]
    np.testing.assert_allclose([logged[49], logged[99]], table.loc[[50, 100], "grad_norm"])
    # 2 due reads, one at the start and one per epoch's end (4), not 120.
    assert len(reads) <= 8, len(reads)
    assert len(table) == 120


def test_epoch_logs_reach_history_and_csv_logger(tmp_path):
    x = regression_data((8,), n=64)[0]
    path = tmp_path / "log.csv"
    _, _, _, logger, history = _fit(
        dense_model, x, jit=False, spe=1, epochs=3,
        callbacks=[keras.callbacks.CSVLogger(str(path))],
    )
    table = logger.to_dataframe("global")
    by_epoch = table.groupby("epoch")["grad_norm"]
    np.testing.assert_allclose(history.history["grad_norm"], by_epoch.mean())
    np.testing.assert_allclose(history.history["grad_norm_max"], by_epoch.max())
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3
    np.testing.assert_allclose(
        [float(r["grad_norm_max"]) for r in rows], by_epoch.max(), rtol=1e-6
    )


def test_batch_logs_carry_the_latest_norm():
    seen = []

    class Spy(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append((logs["grad_norm"], logs["grad_norm_clipped"]))

    x = regression_data((8,), n=64)[0]
    logger = _fit(dense_model, x, jit=False, spe=1, callbacks=[Spy()])[3]
    np.testing.assert_allclose(
        [s[0] for s in seen], logger.to_dataframe("global")["grad_norm"]
    )


def test_tensorboard_event_files_hold_gradient_tags(tmp_path):
    from tensorboard.backend.event_processing import event_accumulator

    x = regression_data((8,), n=64)[0]
    logger = _fit(
        dense_model, x, jit=False, spe=1, epochs=2,
        logger=GradientNormLogger(log_dir=str(tmp_path / "tb"), histogram_every=2),
    )[3]
    reader = event_accumulator.EventAccumulator(
        str(tmp_path / "tb"), size_guidance={"scalars": 0, "histograms": 0}
    )
    reader.Reload()
    assert {
        "gradients/global_norm", "gradients/global_norm_clipped",
        "gradients/global_norm_log10", "gradients/layer/hidden",
        "gradients/layer/middle", "gradients/layer/head",
    } <= set(reader.Tags()["scalars"])
    table = logger.to_dataframe("global")
    events = reader.Scalars("gradients/global_norm")
    assert [e.step for e in events] == table["step"].tolist()
    np.testing.assert_allclose([e.value for e in events], table["grad_norm"], rtol=1e-6)
    np.testing.assert_allclose(
        [e.value for e in reader.Scalars("gradients/global_norm_log10")],
        np.log10(table["grad_norm"]), rtol=1e-5,
    )
    layers = logger.to_dataframe().query("layer == 'head'")
    np.testing.assert_allclose(
        [e.value for e in reader.Scalars("gradients/layer/head")], layers["norm"], rtol=1e-6,
    )
    histograms = reader.Histograms("gradients/layer_norms")
    assert [h.step for h in histograms] == [s for s in table["step"] if s % 2 == 0]
    assert all(h.histogram_value.num == 3 for h in histograms)  # three layers


def test_keeps_an_existing_monitor():
    x, y = regression_data((8,), n=32)
    model = dense_model()
    monitor = GradientMonitor(keras.optimizers.SGD(LR), history=64)
    model.compile(optimizer=monitor, loss="mse")
    model.fit(x, y, batch_size=16, verbose=0, callbacks=[GradientNormLogger()])
    assert model.optimizer is monitor
    assert monitor.read().count == 2


@pytest.mark.parametrize("value", [0, -3, 1.5, True])
def test_rejects_bad_every_n_steps(value):
    with pytest.raises(ValueError, match=(
        rf"GradientNormLogger received every_n_steps={value!r}; "
        r"expected an int >= 1\."
    )):
        GradientNormLogger(every_n_steps=value)


def test_uncompiled_model_is_a_clear_error():
    logger = GradientNormLogger()
    logger.set_model(dense_model())
    with pytest.raises(RuntimeError, match=r"GradientNormLogger needs a compiled model"):
        logger.on_train_begin()


def test_unknown_dataframe_level():
    with pytest.raises(ValueError, match=r"level='layers'; expected 'layer' or 'global'"):
        GradientNormLogger().to_dataframe("layers")


def test_keras_tensorboard_callback_records_the_norms(tmp_path):
    from tensorboard.backend.event_processing import event_accumulator

    x = regression_data((8,), n=64)[0]
    logger = _fit(
        dense_model, x, jit=False, spe=1, epochs=2,
        callbacks=[keras.callbacks.TensorBoard(str(tmp_path), update_freq=1)],
    )[3]
    reader = event_accumulator.EventAccumulator(
        str(tmp_path / "train"), size_guidance={"tensors": 0}
    )
    reader.Reload()
    tags = set(reader.Tags()["tensors"])
    assert {"epoch_grad_norm", "epoch_grad_norm_max", "epoch_grad_norm_clipped"} <= tags
    values = [float(tf.make_ndarray(e.tensor_proto)) for e in reader.Tensors("epoch_grad_norm_max")]
    by_epoch = logger.to_dataframe("global").groupby("epoch")["grad_norm"].max()
    np.testing.assert_allclose(values, by_epoch, rtol=1e-6)
    assert "batch_grad_norm" in tags


def test_bounded_memory_spills_old_steps_to_log_dir_and_reads_them_back(tmp_path):
    x, y = regression_data((8,), n=96)
    runs = {}
    for name, logger in [
        ("unbounded", GradientNormLogger()),
        ("spilled", GradientNormLogger(keep_steps=5, log_dir=str(tmp_path / "tb"))),
    ]:
        keras.utils.set_random_seed(0)
        model = dense_model()
        model.compile(optimizer=keras.optimizers.SGD(LR), loss="mse")
        for _ in range(2):  # two fits, 24 steps
            model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0,
                      callbacks=[logger])
        runs[name] = logger
    spilled = runs["spilled"]
    assert spilled._table.rows_in_memory <= 2 * 5  # the window plus one block
    assert spilled._table.spilled >= 14
    assert len(list((tmp_path / "tb").glob("grad_norms.*.csv"))) == 1
    for level in ["global", "layer"]:
        a, b = spilled.to_dataframe(level), runs["unbounded"].to_dataframe(level)
        assert a["step"].tolist() == b["step"].tolist() == sorted(b["step"].tolist())
        pd.testing.assert_frame_equal(a, b, rtol=1e-6)


def test_bounded_memory_without_log_dir_keeps_the_window_and_warns():
    x, y = regression_data((8,), n=96)
    model = dense_model()
    model.compile(optimizer=keras.optimizers.SGD(LR), loss="mse")
    logger = GradientNormLogger(keep_steps=4)
    with pytest.warns(UserWarning, match=r"keeps the last 4 steps in memory and has no log_dir"):
        history = model.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0,
                            callbacks=[logger])
    table = logger.to_dataframe("global")
    assert 4 <= len(table) <= 8 and table["step"].iloc[-1] == 18
    # The epoch statistics do not depend on the window.
    assert np.isfinite(history.history["grad_norm_max"]).all()


class _BatchLogs(keras.callbacks.Callback):
    """Keeps each batch's `grad_norm` and the logger's table at that batch."""

    def __init__(self, logger):
        super().__init__()
        self.logger, self.norms, self.rows = logger, [], []

    def on_train_batch_end(self, batch, logs=None):
        self.norms.append(logs["grad_norm"])
        if batch in (0, 40, 63, 64, 69):  # inside, at and after a 64-row block
            self.rows.append(len(self.logger.to_dataframe("global")))


def test_every_step_logs_and_mid_fit_tables_see_every_step_recorded_in_blocks():
    # Without log_dir, rows read every step are recorded in blocks; the batch
    # logs still carry each step's norm, and to_dataframe() mid-fit holds
    # every step read so far.
    x, y = regression_data((8,), n=BATCH * 70)
    model = dense_model()
    model.compile(optimizer=keras.optimizers.SGD(LR), loss="mse")
    logger = GradientNormLogger()
    after = _BatchLogs(logger)
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0,
              callbacks=[logger, after])
    table = logger.to_dataframe("global")
    assert after.rows == [1, 41, 64, 65, 70]
    assert table["step"].tolist() == list(range(1, 71))
    np.testing.assert_allclose(after.norms, table["grad_norm"], rtol=1e-6)


def test_batch_logs_come_from_the_step_and_the_monitor_is_read_in_blocks(monkeypatch):
    # On TensorFlow the step's own logs carry its norms (no read per batch):
    # each batch's grad_norm is the tape's, while the monitor is read about
    # once per 64-row block. After the fit Keras' own train function is back,
    # so a later fit without the logger has no grad_norm in its logs.
    x, y = regression_data((8,), n=BATCH * 70)
    keras.utils.set_random_seed(0)
    model = dense_model()
    model.compile(optimizer=keras.optimizers.SGD(LR), loss="mse")
    weights = model.get_weights()
    reads = []
    read = GradientMonitor.read
    monkeypatch.setattr(GradientMonitor, "read", lambda self: reads.append(1) or read(self))
    logger = GradientNormLogger()
    after = _BatchLogs(logger)
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0,
              callbacks=[logger, after])
    tape = [global_norm(g) for g in tape_steps(dense_model, weights, x, y, BATCH, LR, 70)]
    np.testing.assert_allclose(after.norms, tape, rtol=1e-4)
    # A read at the start, one per block of 64, and one per mid-fit table
    # (`_BatchLogs` asks for one at 5 batches) and at the end: far from 70.
    assert len(reads) <= 10, len(reads)
    assert logger.to_dataframe("global")["step"].tolist() == list(range(1, 71))
    keras_fn = model.train_function
    second = model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    assert model.train_function is keras_fn
    assert "grad_norm" not in second.history
