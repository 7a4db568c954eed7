"""The exceptions that mean "the user's input is wrong", as one family.

Raised at the boundary (config values, CLI arguments, custom envs and distributions, run directories,
checkpoints, result files), where the message can name what was given and what is valid.  The CLI prints
a :class:`UserError` as one line and exits 2; anything else is a bug in metarl and keeps its traceback
(exit 1).  :class:`UserError` is a ``ValueError`` and :class:`UserTypeError` also a ``TypeError``, so
Python callers may catch them as those.
"""

from __future__ import annotations

import numbers


class UserError(ValueError):
    """Bad input from the user; the message says what was given and what is valid."""


class UserTypeError(UserError, TypeError):
    """A user's object of the wrong kind (a custom distribution's space, a task that is not a Task)."""


def check_int(name: str, value: object, minimum: int = 1) -> int:
    """``value`` as an ``int`` if it is an integer (not a bool) of at least ``minimum``; else a :class:`UserError`
    naming ``name``, what was given and what is valid.  The one integer check of config fields and arguments."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        kind = {1: "a positive integer", 0: "a non-negative integer"}.get(minimum, f"an integer >= {minimum}")
        raise UserError(f"{name} must be {kind}, got {value!r}")
    return int(value)


def check_number(name: str, value: object, low: float, high: float) -> float:
    """``value`` as a ``float`` if it is a finite real number (not a bool) in [low, high]; else a
    :class:`UserError` naming ``name``, what was given and what is valid."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not low <= float(value) <= high:
        raise UserError(f"{name} must be a number in [{_short(low)}, {_short(high)}], got {value!r}")
    return float(value)


def _short(x: float) -> str:
    return f"{x:g}".replace("e+0", "e").replace("e+", "e")


def check_int_field(obj: object, name: str, minimum: int = 1) -> int:
    """:func:`check_int` on a (frozen) dataclass field, storing the checked value back as a plain ``int`` (a
    numpy integer would pass the check and then break the JSON of the saved config)."""
    value = check_int(name, getattr(obj, name), minimum)
    object.__setattr__(obj, name, value)
    return value
