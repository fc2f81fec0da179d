"""Argument checks worded like Keras': the class, the bad value, the fix."""

from __future__ import annotations

import os

import numpy as np


def is_int(value) -> bool:
    """True for Python and numpy integers, False for bools."""
    return not isinstance(value, bool) and isinstance(value, (int, np.integer))


def is_number(value) -> bool:
    """True for Python and numpy reals, False for bools."""
    return not isinstance(value, bool) and isinstance(
        value, (int, float, np.integer, np.floating)
    )


def check(ok: bool, owner: str, name: str, value, expected: str) -> None:
    """Raises `ValueError("<owner> received <name>=<value>; expected <expected>.")`."""
    if not ok:
        raise ValueError(
            f"{owner} received {name}={value!r}; expected {expected}."
        )


def check_int(owner: str, name: str, value, low: int) -> None:
    """Checks that `value` is an int >= `low`."""
    check(is_int(value) and value >= low, owner, name, value, f"an int >= {low}")


def check_writable_folder(
    value: str, owner: str, name: str, folder: str | None = None
) -> None:
    """Creates the folder `value` (or `folder`, the one it goes in) and test-writes it.

    Raises:
        ValueError: naming the owner, the argument and its value, with the
            operating system's reason, before any training step.
    """
    folder = value if folder is None else folder
    try:
        os.makedirs(folder, exist_ok=True)
        probe = os.path.join(folder, f".gradguard-write-test-{os.getpid()}")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as error:
        where = ", which" if folder == value else f", whose folder {folder!r}"
        raise ValueError(
            f"{owner} received {name}={value!r}{where} cannot be written: "
            f"{error.strerror or error}. Pass a path in a folder you can "
            "write to."
        ) from None
