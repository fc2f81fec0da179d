"""Epoch losses and the explosion chart to TensorBoard, on every backend.

`keras.callbacks.TensorBoard` writes through `tf.summary` and so needs
TensorFlow, which a JAX or PyTorch install may not have. tensorboard ships
an event-file writer that takes `Summary` protocol buffers and needs no
TensorFlow; `callbacks.tensorboard_writer.SummaryWriter` wraps it, for the
logger's gradient norms and for these losses alike.

`EpochSummary` writes what the recipes read from Keras' callback into the
row's own run, beside the gradient norms: `epoch_loss/train` and
`epoch_loss/validation` per epoch, and the largest unclipped global
gradient norm of the epoch (`gradients/epoch_max_norm` and its log10),
read from `GradientNormLogger`'s `grad_norm_max` log. One run per row (not three, as
`row`, `row/train`, `row/validation` would be) keeps the default recipe's 14
rows well under the 40 runs TensorBoard selects by default.

`LAYOUT` is the recipes' custom-scalars layout (tensorboard's
`custom_scalar` plugin, no TensorFlow graph needed), whose first chart draws
`gradients/global_norm_log10` of every row on one chart: the custom-scalars
layout has no log-scale setting, so the chart plots log10 of the unclipped
global norm, on which an explosion from 1 to 1e5 climbs five units while
every stable row stays near 0. The plugin reads one layout per run and
merges them across runs, so the recipes write it once, in the run that
holds their figures (`tensorboard_report.write_figures`), not in the rows'
runs, where `GradientNormLogger` may write its own.

A write that fails (a full disk) ends the row with a `RunFolderError` naming
the folder, instead of TensorFlow's raw `ResourceExhaustedError`.
"""

from __future__ import annotations

import math
import pathlib

import keras

from gradguard.callbacks import tensorboard_writer
from gradguard.callbacks.tensorboard_writer import LogWriteError, SummaryWriter, os_reason

from .run_files import RunFolderError

LOSS_TAG = "epoch_loss"
LOG10_NORM_TAG = "gradients/global_norm_log10"
# The largest unclipped global norm of each epoch (Keras' `grad_norm_max` log),
# beside the per-step norms: one point per epoch, so an explosion is one
# point decades above the rest even when the per-step chart is smoothed.
EPOCH_MAX_TAG = "gradients/epoch_max_norm"
# Category and charts of the Custom Scalars tab (regular expressions over tags).
# The first category has the title of `GradientNormLogger`'s own layout
# (`tensorboard_writer.LOGGER_LAYOUT`): TensorBoard merges categories of one
# title across runs, so the log10 chart both carry is drawn once, first.
LAYOUT = {
    tensorboard_writer.LOGGER_CATEGORY: [
        ("log10 of the unclipped global gradient norm", [f"^{LOG10_NORM_TAG}$"]),
        ("log10 of the largest unclipped global norm per epoch", [f"^{EPOCH_MAX_TAG}_log10$"]),
        ("validation loss per epoch", [f"^{LOSS_TAG}/validation$"]),
        ("training loss per epoch", [f"^{LOSS_TAG}/train$"]),
    ],
    "Clipping (every row)": [
        ("global norm, unclipped and as applied", [r"^gradients/global_norm(_clipped)?$"]),
    ],
}


def layout_summary():
    """`LAYOUT` as the `Summary` the custom-scalars plugin reads (no TensorFlow)."""
    return tensorboard_writer.layout_summary(LAYOUT)


class EpochSummary(keras.callbacks.Callback):
    """Writes `epoch_loss/train`, `epoch_loss/validation` and the epoch's largest norm to a run.

    The step of an epoch's losses is its 0-based index, as Keras'
    `TensorBoard` callback writes `epoch_loss`.

    Args:
        log_dir: The row's run folder (the one `GradientNormLogger` writes to).
    """

    def __init__(self, log_dir: str | pathlib.Path):
        super().__init__()
        self.log_dir = pathlib.Path(log_dir)
        self._writer = None

    def _add(self, summary, step: int) -> None:
        try:
            if self._writer is None:
                self._writer = SummaryWriter(str(self.log_dir), owner="EpochSummary")
            self._writer.add(summary, step)
        except ValueError as error:  # the folder cannot be created or written
            self._raise(error)
        self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self._writer is not None and self._writer.error is not None:
            self._raise(self._writer.error)

    def _raise(self, error: BaseException) -> None:
        reason = error.reason if isinstance(error, LogWriteError) else os_reason(error)
        raise RunFolderError(
            f"could not write TensorBoard events to {str(self.log_dir)!r}: "
            f"{reason}; free space or fix the folder's permissions (this row "
            "is trained again).") from None

    def on_epoch_end(self, epoch, logs=None):
        from tensorboard.compat.proto import summary_pb2

        logs = logs or {}
        values = [summary_pb2.Summary.Value(tag=f"{LOSS_TAG}/{split}",
                                            simple_value=_finite_or_nan(logs[key]))
                  for split, key in (("train", "loss"), ("validation", "val_loss")) if key in logs]
        if "grad_norm_max" in logs:  # GradientNormLogger's, written before this callback runs
            top = float(logs["grad_norm_max"])
            values += [summary_pb2.Summary.Value(tag=EPOCH_MAX_TAG, simple_value=top),
                       summary_pb2.Summary.Value(tag=f"{EPOCH_MAX_TAG}_log10",
                                                 simple_value=_log10(top))]
        if values:
            self._add(summary_pb2.Summary(value=values), epoch)

    def on_train_end(self, logs=None):
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
            if writer.error is not None:
                self._raise(writer.error)


def _log10(value: float) -> float:
    """log10 of a norm: NaN for NaN, inf for inf, -inf for 0."""
    if math.isnan(value) or value < 0:
        return math.nan
    return math.log10(value) if value > 0 else -math.inf


def _finite_or_nan(value) -> float:
    value = float(value)
    return value if math.isfinite(value) else math.nan
