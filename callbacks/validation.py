"""Argument checks worded like Keras': the class, the bad value, the fix."""

from __future__ import annotations

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
