"""The exceptions that mean "the user's input is wrong", as one family.

Raised at the boundary (config values, CLI arguments, custom envs and distributions, run directories,
checkpoints, result files), where the message can name what was given and what is valid.  The CLI prints
a :class:`UserError` as one line and exits 2; anything else is a bug in metarl and keeps its traceback
(exit 1).  :class:`UserError` is a ``ValueError`` and :class:`UserTypeError` also a ``TypeError``, so
Python callers may catch them as those.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input from the user; the message says what was given and what is valid."""


class UserTypeError(UserError, TypeError):
    """A user's object of the wrong kind (a custom distribution's space, a task that is not a Task)."""
