"""TensorBoard output for gradient norms (TensorFlow imported lazily)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

TAG_PREFIX = "gradients/"


class SummaryWriter:
    """Writes gradient-norm scalars and histograms with `tf.summary`.

    TensorFlow is imported here, not at package import, so the callbacks keep
    working under `KERAS_BACKEND=jax` or `torch` when no `log_dir` is given.

    Args:
        log_dir: folder for the event files (created if missing).

    Raises:
        ImportError: if TensorFlow or TensorBoard is not installed.
    """

    def __init__(self, log_dir: str):
        try:
            import tensorboard  # noqa: F401  (tf.summary needs it since TF 2.21)
            import tensorflow as tf
        except ImportError as error:  # pragma: no cover - depends on the env
            raise ImportError(
                "GradientNormLogger(log_dir=...) writes TensorBoard files and "
                "needs `tensorflow` and `tensorboard`: pip install tensorflow "
                "tensorboard."
            ) from error
        self._tf = tf
        self._writer = tf.summary.create_file_writer(str(log_dir))

    def write(
        self,
        steps: np.ndarray,
        norm: np.ndarray,
        norm_clipped: np.ndarray,
        layer_names: Sequence[str],
        layer_norms: np.ndarray | None,
    ) -> None:
        """Writes one point per step (and per layer)."""
        summary = self._tf.summary
        with self._writer.as_default():
            for i, step in enumerate(steps.tolist()):
                summary.scalar(TAG_PREFIX + "global_norm", norm[i], step=step)
                summary.scalar(
                    TAG_PREFIX + "global_norm_clipped", norm_clipped[i], step=step
                )
                if layer_norms is None or not len(layer_names):
                    continue
                for j, name in enumerate(layer_names):
                    summary.scalar(
                        f"{TAG_PREFIX}layer/{name}", layer_norms[i, j], step=step
                    )
                finite = layer_norms[i][np.isfinite(layer_norms[i])]
                if finite.size:
                    summary.histogram(TAG_PREFIX + "layer_norms", finite, step=step)

    def flush(self) -> None:
        self._writer.flush()
