"""GradientNormLogger on data, layouts and folders the other tests keep fixed.

Unknown-length and repeated datasets, trainable sets that change between
fits, a log_dir deleted or full during `fit`, and NaNGuard reports shared by
two guards. Norms are checked against `tf.GradientTape`, TensorBoard files
are read back with tensorboard's `EventAccumulator`.
"""

import json
import os
import re
import shutil
import stat
import subprocess
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from gradguard.callbacks import GradientMonitor, GradientNormLogger, NaNGuard
from gradguard.callbacks.tensorboard_writer import LogWriteError
from tests.callbacks.helpers import dense_model, global_norm, regression_data

LR = 0.05
BATCH = 16


def _dataset(x, y, kind):
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)
    if kind == "filter":  # cardinality -2: Keras learns the length at the end
        return data.filter(lambda a, b: True)
    if kind == "generator":
        return tf.data.Dataset.from_generator(
            lambda: ((x[i:i + BATCH], y[i:i + BATCH]) for i in range(0, len(x), BATCH)),
            output_signature=(tf.TensorSpec((None, x.shape[1]), tf.float32),
                              tf.TensorSpec((None, 1), tf.float32)),
        )
    return data


def _tape(model, x, y, steps, *, offset=0):
    """Plain SGD replayed on a clone: per step, {layer name: norm} and the global norm."""
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    loss_fn = keras.losses.MeanSquaredError()
    owner = {v.path: layer.name for layer in clone.layers for v in layer.trainable_variables}
    out = []
    for step in range(steps):
        start = ((offset + step) * BATCH) % len(x)
        with tf.GradientTape() as tape:
            loss = loss_fn(y[start:start + BATCH], clone(x[start:start + BATCH], training=True))
        grads = [g.numpy() for g in tape.gradient(loss, clone.trainable_variables)]
        layers = {}
        for v, g in zip(clone.trainable_variables, grads):
            layers.setdefault(owner[v.path], []).append(g)
        out.append(({k: global_norm(v) for k, v in layers.items()}, global_norm(grads)))
        for v, g in zip(clone.trainable_variables, grads):
            v.assign_sub(LR * g)
    return out


def _events(folder, tag):
    from tensorboard.backend.event_processing import event_accumulator

    reader = event_accumulator.EventAccumulator(str(folder), size_guidance={"scalars": 0})
    reader.Reload()
    if tag not in reader.Tags()["scalars"]:
        return [], []
    events = reader.Scalars(tag)
    return [e.step for e in events], [e.value for e in events]


# -- datasets of unknown length, repeated datasets ---------------------------


@pytest.mark.parametrize("kind", ["filter", pytest.param("generator", marks=pytest.mark.slow)])
def test_unknown_length_logs_the_known_length_run_and_the_tape(kind, tmp_path):
    x, y = regression_data((8,), n=64)
    runs = {}
    for name in ("known", kind):
        keras.utils.set_random_seed(0)
        model = dense_model()
        # A ring of 3 rows wraps inside every epoch of 4 steps.
        model.compile(optimizer=GradientMonitor(keras.optimizers.SGD(LR), history=3), loss="mse")
        weights = model.get_weights()
        logger = GradientNormLogger(log_dir=str(tmp_path / name))
        history = model.fit(_dataset(x, y, name), epochs=3, verbose=0, callbacks=[logger])
        runs[name] = (logger, history.history, weights)
    logger, history, weights = runs[kind]
    table = logger.to_dataframe("global")
    assert table["step"].tolist() == list(range(1, 13))  # no step-0 row, no repeats
    model = dense_model()
    model.set_weights(weights)
    expected = [norm for _, norm in _tape(model, x, y, 12)]
    np.testing.assert_allclose(table["grad_norm"], expected, rtol=1e-4)
    by_epoch = np.reshape(expected, (3, 4))
    np.testing.assert_allclose(history["grad_norm"], by_epoch.mean(1), rtol=1e-4)
    np.testing.assert_allclose(history["grad_norm_max"], by_epoch.max(1), rtol=1e-4)
    for key in ("grad_norm", "grad_norm_max", "grad_norm_clipped"):
        np.testing.assert_allclose(history[key], runs["known"][1][key], rtol=1e-6)
    steps, values = _events(tmp_path / kind, "gradients/global_norm")
    assert steps == list(range(1, 13))
    np.testing.assert_allclose(values, expected, rtol=1e-4)


def test_repeated_dataset_with_steps_per_epoch_logs_each_step_once():
    x, y = regression_data((8,), n=64)
    model = dense_model()
    model.compile(optimizer=keras.optimizers.SGD(LR), loss="mse")
    weights = model.get_weights()
    logger = GradientNormLogger()
    history = model.fit(_dataset(x, y, "known").repeat(), steps_per_epoch=3, epochs=3,
                        verbose=0, callbacks=[logger]).history
    table = logger.to_dataframe("global")
    assert table["step"].tolist() == list(range(1, 10))
    assert table["epoch"].tolist() == [0] * 3 + [1] * 3 + [2] * 3
    probe = dense_model()
    probe.set_weights(weights)
    expected = [norm for _, norm in _tape(probe, x, y, 9)]  # batches wrap 4 by 4
    np.testing.assert_allclose(table["grad_norm"], expected, rtol=1e-4)
    np.testing.assert_allclose(history["grad_norm"], np.reshape(expected, (3, 3)).mean(1), rtol=1e-4)


# -- trainable sets that change between fits ---------------------------------


def _freeze_hidden(model):
    model.get_layer("hidden").trainable = False


def _unfreeze_hidden(model):
    model.get_layer("hidden").trainable = True


def _freeze_middle(model):
    model.get_layer("middle").trainable = False


def _new_head(model):
    model.pop()
    model.add(keras.layers.Dense(2, name="head2"))
    model.add(keras.layers.Dense(1, name="head3"))


@pytest.mark.parametrize("first, change, layers", [
    (_freeze_hidden, _unfreeze_hidden, ["hidden", "middle", "head"]),  # unfreeze
    (None, _freeze_middle, ["hidden", "head"]),  # fewer variables than the layout
    pytest.param(None, _new_head, ["hidden", "middle", "head2", "head3"],  # layers added
                 marks=pytest.mark.slow),
])
def test_changed_trainable_layers_keep_their_names(first, change, layers, tmp_path):
    x, y = regression_data((8,), n=32)
    model = dense_model()
    if first:
        first(model)
    logger = GradientNormLogger(log_dir=str(tmp_path))
    expected = {}
    for fit in range(2):
        if fit == 1:
            change(model)
        model.compile(optimizer=keras.optimizers.SGD(LR), loss="mse")  # as Keras asks
        expected[fit] = _tape(model, x, y, 2)
        model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0,
                  callbacks=[logger])
    assert logger.layouts[-1] == tuple(layers)
    assert len(logger.layouts) == 2
    table = logger.to_dataframe()
    for fit in range(2):
        rows = table[table["fit"] == fit]
        assert set(rows["layout"]) == {fit}
        for i, (per_layer, _) in enumerate(expected[fit]):
            step = rows[rows["step"] == sorted(set(rows["step"]))[i]]
            logged = dict(zip(step["layer"], step["norm"]))
            assert logged.keys() == per_layer.keys()  # the layers trained, no others
            for name, norm in per_layer.items():
                assert logged[name] == pytest.approx(norm, rel=1e-4), name
    # TensorBoard: each layer's tag holds only that layer's norms.
    for name in layers:
        _, values = _events(tmp_path, f"gradients/layer/{name}")
        trained = [p[name] for fit in range(2) for p, _ in expected[fit] if name in p]
        np.testing.assert_allclose(values, trained, rtol=1e-4)


# -- log_dir: events written in blocks ----------------------------------------


class _EventsSeen(keras.callbacks.Callback):
    """After each batch, the newest step in log_dir's events (what TensorBoard shows)."""

    def __init__(self, folder):
        super().__init__()
        self.folder, self.newest = folder, []

    def on_train_batch_end(self, batch, logs=None):
        steps, _ = _events(self.folder, "gradients/global_norm")
        self.newest.append(max(steps, default=0))


def test_log_dir_events_are_written_in_blocks_and_hold_every_step(tmp_path, monkeypatch):
    # 70 steps: the monitor is read about once per 64-row block, not once a
    # step, and the event file still holds every step with the tape's norm.
    x, y = regression_data((8,), n=BATCH * 70)
    model = dense_model()
    model.compile(optimizer=keras.optimizers.SGD(LR), loss="mse")
    tape = _tape(model, x, y, 70)
    reads = []
    read = GradientMonitor.read
    monkeypatch.setattr(GradientMonitor, "read", lambda self: reads.append(1) or read(self))
    folder = tmp_path / "tb"
    logger = GradientNormLogger(log_dir=str(folder))
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0,
              callbacks=[logger])
    assert len(reads) <= 6, len(reads)
    steps, values = _events(folder, "gradients/global_norm")
    assert steps == list(range(1, 71))
    np.testing.assert_allclose(values, [norm for _, norm in tape], rtol=1e-4)


def test_log_dir_events_show_within_write_seconds(tmp_path, monkeypatch):
    # A slow model's events must not wait for a 64-step block: once
    # WRITE_SECONDS have passed the block is written. At 0 s every batch's
    # step is on disk by the next callback's turn.
    from gradguard.callbacks import gradient_norm_logger

    monkeypatch.setattr(gradient_norm_logger, "WRITE_SECONDS", 0.0)
    x, y = regression_data((8,), n=BATCH * 6)
    model = dense_model()
    model.compile(optimizer=keras.optimizers.SGD(LR), loss="mse")
    folder = tmp_path / "tb"
    seen = _EventsSeen(folder)
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0,
              callbacks=[GradientNormLogger(log_dir=str(folder)), seen])
    assert seen.newest == [1, 2, 3, 4, 5, 6]


# -- log_dir deleted, disk full ----------------------------------------------


class _DeleteFolder(keras.callbacks.Callback):
    """Deletes a folder (for real) after the given training step."""

    def __init__(self, folder, after_step):
        super().__init__()
        self.folder, self.after_step, self.step = folder, after_step, 0

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.step == self.after_step:
            shutil.rmtree(self.folder)


def test_log_dir_deleted_mid_fit_is_recreated_and_refilled(tmp_path):
    x, y = regression_data((8,), n=64)
    model = dense_model()
    model.compile(optimizer=keras.optimizers.SGD(LR), loss="mse")
    folder = tmp_path / "tb"
    logger = GradientNormLogger(log_dir=str(folder))
    with pytest.warns(UserWarning, match=r"log_dir .* was deleted during training; it was created again"):
        model.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0,
                  callbacks=[logger, _DeleteFolder(folder, after_step=2)])
    table = logger.to_dataframe("global")
    steps, values = _events(folder, "gradients/global_norm")
    assert steps == table["step"].tolist() == list(range(1, 9))
    np.testing.assert_allclose(values, table["grad_norm"], rtol=1e-6)
    assert logger.write_error is None


def test_log_dir_deleted_with_keep_steps_loses_only_the_spilled_steps(tmp_path):
    x, y = regression_data((8,), n=64)
    model = dense_model()
    model.compile(optimizer=keras.optimizers.SGD(LR), loss="mse")
    folder = tmp_path / "tb"
    logger = GradientNormLogger(log_dir=str(folder), keep_steps=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, batch_size=BATCH, epochs=3, shuffle=False, verbose=0,
                  callbacks=[logger, _DeleteFolder(folder, after_step=7)])
        table = logger.to_dataframe("global")
    messages = [str(w.message) for w in caught]
    # The oldest steps had moved to the spill file in log_dir (the table
    # keeps 2 steps in memory, and records a block at each epoch's end):
    # they went with it, and one warning counts them. Every other step is
    # still in the table and in the new event file.
    gone = [re.search(r"was deleted during training; its (\d+) steps are gone", m)
            for m in messages]
    gone = [int(g.group(1)) for g in gone if g]
    assert len(gone) == 1 and 1 <= gone[0] <= 8
    assert table["step"].tolist() == list(range(gone[0] + 1, 13))
    steps, values = _events(folder, "gradients/global_norm")
    assert steps == table["step"].tolist()
    np.testing.assert_allclose(values, table["grad_norm"], rtol=1e-6)


@pytest.fixture
def full_folder(tmp_path):
    """A folder on a 64 KiB tmpfs filled to the last byte (needs root to mount)."""
    folder = tmp_path / "full"
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)],
                      capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root")
    try:
        with open(folder / "filler", "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 512)
            except OSError:
                pass
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def test_full_disk_is_one_warning_naming_the_folder_and_training_goes_on(full_folder):
    x, y = regression_data((8,), n=64)
    model = dense_model()
    model.compile(optimizer=keras.optimizers.SGD(LR), loss="mse")
    log_dir = str(full_folder / "tb")
    logger = GradientNormLogger(log_dir=log_dir)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(x, y, batch_size=BATCH, epochs=2, verbose=0, callbacks=[logger])
    ours = [w for w in caught if "could not write TensorBoard events" in str(w.message)]
    assert len(ours) == 1
    assert str(ours[0].message).startswith(
        f"GradientNormLogger could not write TensorBoard events to {log_dir!r}: ")
    assert "training goes on without TensorBoard events" in str(ours[0].message)
    assert isinstance(logger.write_error, LogWriteError)
    assert logger.to_dataframe("global")["step"].tolist() == list(range(1, 9))
    assert np.isfinite(history.history["grad_norm"]).all()


# -- NaNGuard reports ----------------------------------------------------------


def _nan_data():
    x, y = regression_data((8,), n=64)
    x[20] = np.nan  # batch 1 of each epoch
    return x, y


def test_two_guards_refuse_one_report_path(tmp_path):
    x, y = _nan_data()
    model = dense_model()
    model.compile(optimizer=keras.optimizers.SGD(LR), loss="mse")
    report = tmp_path / "report.json"
    first, second = NaNGuard(report_path=report, verbose=False), NaNGuard(report_path=report, verbose=False)
    with pytest.raises(ValueError, match=r"report_path=.*report.json', which another NaNGuard in "
                                         r"this process already writes to .* give each guard its own"):
        model.fit(x, y, batch_size=BATCH, verbose=0, callbacks=[first, second])
    assert not report.exists()


def test_report_has_the_mode_open_gives_and_every_event(tmp_path):
    x, y = _nan_data()
    model = dense_model()
    model.compile(optimizer=keras.optimizers.SGD(LR), loss="mse")
    report = tmp_path / "report.json"
    guard = NaNGuard(action="rollback", report_path=report, verbose=False)
    old = os.umask(0o022)
    try:
        model.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0, callbacks=[guard])
    finally:
        os.umask(old)
    assert stat.S_IMODE(report.stat().st_mode) == 0o644
    assert len(json.loads(report.read_text())["events"]) == len(guard.events) == 2
    assert not [p for p in tmp_path.iterdir() if p.name != "report.json"]  # no temporary left
