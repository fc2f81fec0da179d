"""Epoch losses to TensorBoard with tensorboard's own writer, on every backend.

`keras.callbacks.TensorBoard` writes through `tf.summary` and so needs
TensorFlow, which a JAX or PyTorch install may not have. tensorboard ships
an event-file writer that takes `Summary` protocol buffers and needs no
TensorFlow (the logger's `SummaryWriter` uses it for the gradient norms).
`EpochSummary` writes what the recipes read from Keras' callback, the same
way on every backend: `epoch_loss` per epoch under `<log_dir>/train` and
`<log_dir>/validation`, so TensorBoard draws the two curves in one chart.
A write that fails (a full disk) ends the row with a `RunFolderError` naming
the folder, instead of TensorFlow's raw `ResourceExhaustedError`.
"""

from __future__ import annotations

import contextlib
import math
import pathlib
import time

import keras

from gradguard.callbacks.summary import os_reason

from .run_files import RunFolderError


class EpochSummary(keras.callbacks.Callback):
    """Writes `epoch_loss` (train and validation) to TensorBoard event files.

    Args:
        log_dir: The run's folder; `train/` and `validation/` go inside.
    """

    def __init__(self, log_dir: str | pathlib.Path):
        super().__init__()
        self.log_dir = pathlib.Path(log_dir)
        self._writers: dict = {}

    def _write(self, split: str, tag: str, value: float, step: int) -> None:
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        with self._naming_the_folder(split):
            if split not in self._writers:
                self._writers[split] = EventFileWriter(str(self.log_dir / split))
            summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=value)])
            self._writers[split].add_event(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))

    @contextlib.contextmanager
    def _naming_the_folder(self, split: str):
        """Turns any write failure (TensorFlow's own file errors too) into a `RunFolderError`."""
        try:
            yield
        except Exception as error:
            raise RunFolderError(
                f"could not write TensorBoard events to {str(self.log_dir / split)!r}: "
                f"{os_reason(error)}; free space or fix the folder's permissions (this row "
                "is trained again).") from None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        for split, key in (("train", "loss"), ("validation", "val_loss")):
            if key in logs:
                value = float(logs[key])
                self._write(split, "epoch_loss", value if math.isfinite(value) else math.nan, epoch)

    def on_train_end(self, logs=None):
        writers, self._writers = self._writers, {}
        for split, writer in writers.items():
            with self._naming_the_folder(split):
                writer.close()
