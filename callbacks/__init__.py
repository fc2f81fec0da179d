"""Keras 3 callbacks that see, guard against and clip exploding gradients."""

from .gradient_monitor import GradientMonitor, GradientRecord
from .gradient_norm_logger import GradientNormLogger

__all__ = ["GradientMonitor", "GradientRecord", "GradientNormLogger"]
