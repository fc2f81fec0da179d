"""Argument checks shared by the dataset functions (private)."""

from __future__ import annotations

import numbers


def check_int(func: str, name: str, value: object, minimum: int) -> int:
    """Returns `value` as an int, or raises a ValueError naming `func`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(
            f"{func} received {name}={value!r}; expected an int >= {minimum}."
        )
    return int(value)


def check_seed(func: str, seed: object) -> int:
    """Returns `seed` as an int, or raises a ValueError naming `func`."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(
            f"{func} received seed={seed!r}; expected an int >= 0 "
            "(pass the same seed to get the same data)."
        )
    return int(seed)
