"""The start of every benchmark run as a program: flags first, Keras after.

A benchmark module imports Keras (and with it TensorFlow, 5-10 s and a
screen of start-up notes) at its top. Run as a program, it parses its
command line with this first, so `--help` and a bad flag answer in about
a second, before the backend loads; then the backend loads with
TensorFlow's start-up notes filtered out (`recipes.console.quiet_start`).
"""

from __future__ import annotations

import argparse
import os
from typing import Callable


def start(build_parser: Callable[[], argparse.ArgumentParser],
          argv: list[str] | None = None) -> argparse.Namespace:
    """Parses the command line, then loads the Keras backend quietly.

    Args:
        build_parser: the benchmark's parser; it must not need Keras.
        argv: the arguments (default `sys.argv[1:]`).

    Returns:
        The parsed arguments (`--help` and errors exit here, as argparse does).
    """
    args = build_parser().parse_args(argv)
    from gradguard.recipes.console import quiet_start

    quiet_start()
    return args


def begin(module: str, build_parser: Callable[[], argparse.ArgumentParser], log_level: str = "2") -> None:
    """The top of a benchmark module, before it imports Keras.

    Run as a program (`module == "__main__"`), its flags are parsed first and
    the backend then loads quietly (`start`); imported (a test, another
    benchmark), TensorFlow's C++ log level defaults to `log_level`.

    Args:
        module: the benchmark's `__name__`.
        build_parser: the benchmark's parser; it must not need Keras.
        log_level: `TF_CPP_MIN_LOG_LEVEL` when imported, unless the user set it.
            Defaults to `"2"`.
    """
    if module == "__main__":
        start(build_parser)
    else:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", log_level)

