"""TensorBoard event files for gradient norms, written without TensorFlow graphs.

`tf.summary.scalar` called eagerly with changing numpy values makes new
graph constants on every call and grows the process (about 17 MiB per 1000 x
20 calls with TensorFlow 2.21). Here one `Event` protocol buffer per step
carries every scalar. Under the TensorFlow backend the events go through
TensorFlow's C++ record writer (an event file is a TFRecord file); without
TensorFlow, through tensorboard's own `EventFileWriter` (so it also works
under `KERAS_BACKEND=jax` or `torch`), which computes each record's checksum
in pure Python on a background thread, about 100 times slower (1.7 ms
against 5-25 us for an 800-byte event, measured on a loaded 2-core machine). The steps of one
read of the monitor are written together and flushed once.

Writing can fail in two ways the writer itself does not report well: the
folder is deleted while the run goes on (the open file then writes into a
deleted inode: every later event is lost without a word), and the disk fills
up (TensorFlow's file system raises its own `ResourceExhaustedError` from the
writer's thread). `SummaryWriter` notices the first (`vanished`) so that the
logger can start a new event file, and turns the second into one
`LogWriteError` naming the folder, after which it writes nothing more.
"""

from __future__ import annotations

import itertools
import math
import os
import socket
import sys
import time
from typing import Sequence

import numpy as np

from .validation import check_writable_folder

TAG_PREFIX = "gradients/"
FLUSH_SECS = 30  # tensorboard's writer (without TensorFlow) flushes this often
_file_ids = itertools.count()


class _RecordEventFile:
    """An event file framed by TensorFlow's C++ record writer, written in place.

    tensorboard's `EventFileWriter` computes each record's CRC-32C in pure
    Python on a background thread: about 0.1-0.5 ms per event of 20 layers,
    taken from the training loop through the GIL. An event file is a
    TFRecord file, so when TensorFlow is already loaded (the TensorFlow
    backend) its `TFRecordWriter` writes the same bytes for a few
    microseconds. Same file name pattern and first event as tensorboard's.
    """

    def __init__(self, log_dir: str, event_pb2):
        import tensorflow as tf  # loaded already: only used when it is

        os.makedirs(log_dir, exist_ok=True)
        self._file_name = os.path.join(log_dir, "events.out.tfevents.%010d.%s.%s.%s" % (
            time.time(), socket.gethostname(), os.getpid(), next(_file_ids)))
        self._records = tf.io.TFRecordWriter(self._file_name)
        self.add_event(event_pb2.Event(
            wall_time=time.time(), file_version="brain.Event:2",
            source_metadata=event_pb2.SourceMetadata(writer="gradguard"),
        ))
        self.flush()

    def add_event(self, event) -> None:
        self._records.write(event.SerializeToString())

    def flush(self) -> None:
        self._records.flush()

    def close(self) -> None:
        self._records.close()


def os_reason(error: BaseException) -> str:
    """The operating system's words in an error: `No space left on device`.

    TensorFlow's file errors prefix them with the file's path (`'<path>;
    No space left on device'`); the path is dropped.
    """
    reason = getattr(error, "strerror", None) or getattr(error, "message", None) or str(error)
    reason = str(reason).strip()
    if "; " in reason and reason.startswith(("/", "\\")):
        reason = reason.rsplit("; ", 1)[1]
    return reason or type(error).__name__


class LogWriteError(OSError):
    """TensorBoard events could not be written; the message names the folder.

    `log_dir` is the folder and `reason` the operating system's words (for
    example `No space left on device`).
    """

    def __init__(self, owner: str, log_dir: str, error: BaseException):
        self.log_dir = log_dir
        self.reason = os_reason(error)
        super().__init__(
            f"{owner} could not write TensorBoard events to {log_dir!r}: "
            f"{self.reason}. Free space there (or pass another log_dir); "
            "training goes on without TensorBoard events."
        )


class SummaryWriter:
    """Writes gradient-norm scalars and histograms to a TensorBoard run.

    Per step, one event holds `gradients/global_norm`,
    `gradients/global_norm_clipped`, `gradients/global_norm_log10` (an
    explosion of 1e5 climbs five units on a linear axis, visible once
    TensorBoard's default "Ignore outliers" is unticked) and one
    `gradients/layer/<name>` per layer (about 14 bytes each). Every
    `histogram_every` steps, the histogram `gradients/layer_norms` of the
    per-layer norms is added.

    A failed write (a full disk) does not stop training: `error` holds a
    `LogWriteError` naming the folder and nothing more is written; the
    caller warns once.

    Args:
        log_dir: folder for the event files (created if missing).
        histogram_every: int, steps between histograms.
        owner: the class named in messages. Defaults to
            `"GradientNormLogger"`.

    Raises:
        ImportError: if `tensorboard` is not installed.
        ValueError: if `log_dir` cannot be created or written, naming it.
    """

    def __init__(self, log_dir: str, histogram_every: int = 100,
                 owner: str = "GradientNormLogger"):
        try:
            from tensorboard.compat.proto import event_pb2, summary_pb2
            from tensorboard.summary.writer.event_file_writer import (
                EventFileWriter,
            )
        except ImportError as error:  # pragma: no cover - depends on the env
            raise ImportError(
                "GradientNormLogger(log_dir=...) writes TensorBoard files and "
                "needs the `tensorboard` package: pip install tensorboard."
            ) from error
        self._event_pb2, self._summary_pb2 = event_pb2, summary_pb2
        if "tensorflow" in sys.modules:  # its C++ record writer is 100x faster
            self._writer_class = lambda folder: _RecordEventFile(folder, event_pb2)
        else:
            self._writer_class = lambda folder: EventFileWriter(
                folder, flush_secs=FLUSH_SECS)
        self._template = None  # (layer names, event, its values) reused per step
        self.log_dir = str(log_dir)
        self.owner = owner
        self.histogram_every = int(histogram_every)
        self.error: LogWriteError | None = None  # what stopped the writing
        self._writer = None
        check_writable_folder(self.log_dir, owner, "log_dir")
        self.reopen()

    @property
    def vanished(self) -> bool:
        """True when the event file is gone (its folder was deleted)."""
        if self._writer is None:
            return False
        return not os.path.exists(getattr(self._writer, "_file_name", self.log_dir))

    def reopen(self) -> None:
        """Starts a new event file in `log_dir`, creating the folder again."""
        self._close_quietly()
        self._guard(lambda: setattr(
            self, "_writer", self._writer_class(self.log_dir)
        ))

    def _guard(self, action) -> None:
        """Runs a write; a failure becomes `self.error` and ends the writing."""
        if self.error is not None:
            return
        try:
            action()
        except Exception as error:  # OSError, or TensorFlow's file errors
            self.error = LogWriteError(self.owner, self.log_dir, error)
            self._close_quietly()

    def _close_quietly(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.close()
            except Exception:  # the error is already known, or moot
                pass

    def write(
        self,
        steps: np.ndarray,
        norm: np.ndarray,
        norm_clipped: np.ndarray,
        layer_names: Sequence[str],
        layer_norms: np.ndarray | None,
    ) -> None:
        """Writes one event per step (and a histogram every few steps).

        The steps of one read go out together: one `Event` is filled in
        place for each step (a new one only where a histogram is due), so a
        block of steps costs a field update and one serialization per step.
        """
        if self._writer is None:
            return
        event, values = self._event_for(tuple(layer_names), layer_norms is not None)
        now = time.time()
        rows = layer_norms.tolist() if layer_norms is not None else None
        for i, step in enumerate(steps.tolist()):
            value = float(norm[i])
            head = (value, float(norm_clipped[i]), _log10(value))
            if rows is not None and step % self.histogram_every == 0:
                self._write_with_histogram(step, now, head, layer_names,
                                           layer_norms[i])
            else:
                event.step, event.wall_time = int(step), now
                for slot, v in zip(values, head):
                    slot.simple_value = v
                if rows is not None:
                    for slot, v in zip(values[3:], rows[i]):
                        slot.simple_value = v
                self._guard(lambda: self._writer.add_event(event))
            if self._writer is None:
                return
        # One flush per read: the events of a read reach the disk together,
        # and a full disk shows at the read that could not be written.
        self.flush()

    def _event_for(self, layer_names: tuple, with_layers: bool):
        """The reusable event of this layout (and its values, in order)."""
        key = (layer_names, with_layers)
        if self._template is None or self._template[0] != key:
            Value = self._summary_pb2.Summary.Value
            tags = [TAG_PREFIX + t for t in ("global_norm", "global_norm_clipped",
                                             "global_norm_log10")]
            if with_layers:
                tags += [f"{TAG_PREFIX}layer/{name}" for name in layer_names]
            event = self._event_pb2.Event(summary=self._summary_pb2.Summary(
                value=[Value(tag=tag, simple_value=0.0) for tag in tags]))
            self._template = (key, event, list(event.summary.value))
        return self._template[1], self._template[2]

    def _write_with_histogram(self, step, now, head, layer_names, layer_norms):
        Value = self._summary_pb2.Summary.Value
        tags = ("global_norm", "global_norm_clipped", "global_norm_log10")
        values = [Value(tag=TAG_PREFIX + t, simple_value=v) for t, v in zip(tags, head)]
        values += [
            Value(tag=f"{TAG_PREFIX}layer/{name}", simple_value=float(v))
            for name, v in zip(layer_names, layer_norms.tolist())
        ]
        values.append(Value(tag=TAG_PREFIX + "layer_norms",
                            histo=self._histogram(layer_norms)))
        event = self._event_pb2.Event(
            wall_time=now, step=int(step),
            summary=self._summary_pb2.Summary(value=values),
        )
        self._guard(lambda: self._writer.add_event(event))

    def add(self, summary, step: int) -> None:
        """Writes one `Summary` proto at `step` (the recipes' losses and layout)."""
        if self._writer is not None:
            event = self._event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary)
            self._guard(lambda: self._writer.add_event(event))

    def _histogram(self, values: np.ndarray):
        finite = values[np.isfinite(values)].astype(np.float64)
        if not finite.size:
            finite = np.zeros(1)
        counts, edges = np.histogram(finite, bins=min(30, finite.size))
        return self._summary_pb2.HistogramProto(
            min=float(finite.min()), max=float(finite.max()),
            num=float(finite.size), sum=float(finite.sum()),
            sum_squares=float(np.square(finite).sum()),
            bucket_limit=edges[1:].tolist(), bucket=counts.astype(float).tolist(),
        )

    def flush(self) -> None:
        if self._writer is not None:
            self._guard(self._writer.flush)

    def close(self) -> None:
        if self._writer is not None:
            self._guard(self._writer.close)
        self._writer = None


def _log10(value: float) -> float:
    if math.isnan(value):
        return value
    return math.log10(value) if value > 0 else float("-inf")



# -- Summaries beside the scalars: images, text, a custom-scalars layout -------
# Plain `Summary` protocol buffers, as `tf.summary.image` / `text` and
# `tensorboard.plugins.custom_scalar.summary.pb` write them, built without
# TensorFlow; `SummaryWriter.add(summary, step)` writes any of them.

# The custom-scalars layout of a `GradientNormLogger` run: category title ->
# (chart title, tag regular expressions). The layout has no log-scale setting,
# so the first chart draws log10 of the norm: an explosion from 1 to 1e5 climbs
# five units while every stable run stays near 0.
LOGGER_CATEGORY = "Gradient norms (every run)"
LOGGER_LAYOUT = {
    LOGGER_CATEGORY: [
        ("log10 of the unclipped global gradient norm", [f"^{TAG_PREFIX}global_norm_log10$"]),
        ("global norm, unclipped and as applied", [f"^{TAG_PREFIX}global_norm(_clipped)?$"]),
        ("per-layer norms", [f"^{TAG_PREFIX}layer/"]),
    ],
}


def image_summary(tag: str, png: bytes):
    """A `Summary` holding one PNG image, for TensorBoard's Images tab.

    Args:
        tag: The image's name, e.g. `"figures/grad_norms"`.
        png: The bytes of a PNG file.

    Returns:
        A `summary_pb2.Summary` (the `Image` value `tf.summary.image` wrote
        in TensorFlow 1, which TensorBoard still reads).

    Raises:
        ValueError: If `png` is not a PNG file.
    """
    from tensorboard.compat.proto import summary_pb2

    if png[:8] != b"\x89PNG\r\n\x1a\n" or len(png) < 24:
        raise ValueError(f"image_summary received {len(png)} bytes for {tag!r} that are not a PNG "
                         "file; expected the bytes of a .png file.")
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    image = summary_pb2.Summary.Image(height=height, width=width, colorspace=4,
                                      encoded_image_string=png)
    return summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, image=image)])


def text_summary(tag: str, text: str):
    """A `Summary` holding Markdown text, for TensorBoard's Text tab (no TensorFlow needed)."""
    from tensorboard.compat.proto import summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
    from tensorboard.plugins.text import metadata

    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_shape=tensor_shape_pb2.TensorShapeProto(),
                                    string_val=[text.encode()])
    return summary_pb2.Summary(value=[summary_pb2.Summary.Value(
        tag=tag, metadata=metadata.create_summary_metadata(display_name=tag, description=""),
        tensor=tensor)])


def layout_summary(layout: dict | None = None):
    """A custom-scalars layout as the `Summary` the plugin reads (no TensorFlow needed).

    The same proto as `tensorboard.plugins.custom_scalar.summary.pb` (a
    string tensor under the plugin's config tag), which imports TensorFlow
    to build it. Every run may carry the same layout: TensorBoard merges
    identical charts into one.

    Args:
        layout: Category title -> list of (chart title, tag regular
            expressions). Defaults to `None`: `LOGGER_LAYOUT`.
    """
    from tensorboard.compat.proto import summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
    from tensorboard.plugins.custom_scalar import layout_pb2, metadata

    layout = LOGGER_LAYOUT if layout is None else layout
    proto = layout_pb2.Layout(category=[
        layout_pb2.Category(title=title, chart=[
            layout_pb2.Chart(title=chart, multiline=layout_pb2.MultilineChartContent(tag=tags))
            for chart, tags in charts])
        for title, charts in layout.items()])
    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_shape=tensor_shape_pb2.TensorShapeProto(),
                                    string_val=[proto.SerializeToString()])
    return summary_pb2.Summary(value=[summary_pb2.Summary.Value(
        tag=metadata.CONFIG_SUMMARY_TAG, metadata=metadata.create_summary_metadata(), tensor=tensor)])
