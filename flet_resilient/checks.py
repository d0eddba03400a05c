"""One place that refuses bad option values ("seconds > 0", "a positive int").

Every decorator and `configure_*` call checks its numbers here, so the same
mistake gets the same `ValueError` wherever it is made (a bool is never a
number: `True` is not one second).
"""

from __future__ import annotations

import math

__all__ = [
    "check_bool",
    "check_finite",
    "check_positive",
    "check_positive_int",
    "check_seconds",
]


def check_positive(
    name: str,
    value: object,
    *,
    expected: str = "a number > 0",
    optional: bool = False,
    integral: bool = False,
    finite: bool = False,
) -> None:
    """Refuse `value` unless it is a number > 0 (an int if `integral`, below
    infinity if `finite`, or None if `optional`): `"{name} must be {expected}"`."""
    if value is None and optional:
        return
    kinds = int if integral else (int, float)
    if (
        isinstance(value, bool)
        or not isinstance(value, kinds)
        or value <= 0
        or (finite and not value < math.inf)
    ):
        raise ValueError(f"{name} must be {expected}, got {value!r}")


def check_seconds(name: str, value: object, *, optional: bool = False) -> None:
    """Refuse a duration that is not a number of seconds > 0 (or None if
    `optional`)."""
    check_positive(name, value, expected="a number of seconds > 0", optional=optional)


def check_positive_int(name: str, value: object, *, optional: bool = False) -> None:
    """Refuse a count that is not an int >= 1 (or None if `optional`)."""
    check_positive(
        name, value, expected="a positive int", optional=optional, integral=True
    )


def check_finite(name: str, value: object, *, optional: bool = False) -> None:
    """Refuse a rate or duration that is not a finite number > 0 (or None if
    `optional`)."""
    check_positive(
        name, value, expected="a finite number > 0", optional=optional, finite=True
    )


def check_bool(name: str, value: object) -> None:
    """Refuse a switch that is not True or False (a truthy string is a mistake)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
