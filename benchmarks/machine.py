"""`machine_header`: one line naming the machine and software a table came from."""

from __future__ import annotations

import datetime
import os
import pathlib
import platform
import subprocess
import textwrap


def cpu_model() -> str:
    """The CPU's `model name` from /proc/cpuinfo, or `platform.processor()`."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def usable_cores() -> int:
    """CPU cores this process may run on (affinity), else `os.cpu_count()`."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def source_revision() -> str:
    """The git commit of this checkout, noting uncommitted `callbacks/` edits.

    Returns `"unknown revision"` outside a git checkout.
    """
    root = pathlib.Path(__file__).resolve().parent.parent
    try:
        run = lambda *a: subprocess.run(  # noqa: E731
            ["git", "-C", str(root), *a], capture_output=True, text=True,
            timeout=10, check=True).stdout.strip()
        commit = run("rev-parse", "--short", "HEAD")
        dirty = run("status", "--porcelain", "--", "callbacks")
    except (OSError, subprocess.SubprocessError):
        return "unknown revision"
    return f"gradguard {commit}" + (" + uncommitted callbacks/ edits" if dirty else "")


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, `"0.52, 0.61, 0.70"` (or `"unknown"`)."""
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except (AttributeError, OSError):
        return "unknown"


def machine_header() -> str:
    """Returns a Markdown paragraph: cores, CPU, backend, versions, load, source, date.

    The load average is there because other processes on a shared machine
    are the largest source of timing noise.
    """
    import keras

    parts = [
        f"{usable_cores()} cores, {cpu_model()}",
        f"Keras {keras.__version__} ({keras.backend.backend()} backend)",
    ]
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        parts.append(f"TensorFlow {tf.__version__}")
        parts.append(f"{len(gpus)} GPU" if gpus else "CPU only")
    parts.append(f"load average {load_average()}")
    parts.append(source_revision())
    parts.append(datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"))
    # One Markdown paragraph, in lines of at most 120 characters (a console's width).
    return textwrap.fill("Machine: " + "; ".join(parts) + ".", 120, break_long_words=False,
                         break_on_hyphens=False)
