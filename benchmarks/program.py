"""The start of every benchmark run as a program: flags first, Keras after.

A benchmark module imports Keras (and with it TensorFlow, 5-10 s and a
screen of start-up notes) at its top. Run as a program, it parses its
command line with this first, so `--help` and a bad flag answer in about
a second, before the backend loads; then the backend loads with
TensorFlow's start-up notes filtered out (`recipes.console.quiet_start`).
"""

from __future__ import annotations

import argparse
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
