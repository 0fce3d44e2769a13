"""Checks of settings: each failure is a ``ValueError`` that names the key, the value and what was expected.

The conditions test the type first, so a string where a number belongs
(``trainer.lr=abc``) gets the same one-line message as a number out of range,
not a ``TypeError`` from a comparison.
"""

from __future__ import annotations

import math


def is_number(value) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_int(value, least: int) -> bool:
    """An int (not a bool) >= ``least``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def raise_first(checks: list[tuple[bool, str]]) -> None:
    """Raise ValueError with the message of the first failed ``(ok, message)`` check."""
    for ok, message in checks:
        if not ok:
            raise ValueError(message)
