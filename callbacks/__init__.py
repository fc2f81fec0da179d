"""Keras 3 callbacks that see, guard against and clip exploding gradients."""

from .agc import AGC
from .attach import remove_monitor
from .auto_clip import AutoClip
from .gradient_clipping import GradientClipping
from .gradient_monitor import GradientMonitor
from .gradient_record import GradientRecord
from .gradient_norm_logger import GradientNormLogger
from .lr_finder import LRFinderResult, find_learning_rate
from .model_copy import faithful_copy
from .nan_guard import NaNGuard, NonFiniteTrainingError
from .zclip import ZClip

__all__ = [
    "AGC",
    "AutoClip",
    "faithful_copy",
    "find_learning_rate",
    "GradientClipping",
    "GradientMonitor",
    "GradientNormLogger",
    "GradientRecord",
    "LRFinderResult",
    "NaNGuard",
    "NonFiniteTrainingError",
    "remove_monitor",
    "ZClip",
]
