"""How runs stop: SIGTERM as an exception (:class:`Terminated`), and named points inside a training
iteration where a test can stop the run with a signal.

``METARL_TEST_STOP_AT=POINT:N:SIGNAL`` (e.g. ``update:3:SIGTERM``) makes the process send itself SIGNAL the
N-th time it reaches POINT, so that interrupt-and-resume tests stop a run at a chosen place rather than
after a chosen time.  Points: ``sampling`` (a collect, once per collect, after the first env steps came
back) and ``update`` (once per learner update, after the first optimizer step or, for TRPO, with θ at the
first trial step of the line search).  Unset, :func:`stop_point` costs one global lookup.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

POINTS = ("sampling", "update")
_SPEC: tuple[str, int, signal.Signals] | None = None
_COUNTS: dict[str, int] = {}


def _parse(text: str) -> tuple[str, int, signal.Signals]:
    try:
        point, n, name = text.split(":")
        spec = (point, int(n), signal.Signals[name])
    except (ValueError, KeyError):
        raise ValueError(f"METARL_TEST_STOP_AT must be POINT:N:SIGNAL (e.g. update:3:SIGTERM), got {text!r}") from None
    if point not in POINTS or spec[1] <= 0:
        raise ValueError(f"METARL_TEST_STOP_AT: POINT must be one of {list(POINTS)} and N positive, got {text!r}")
    return spec


if os.environ.get("METARL_TEST_STOP_AT"):
    _SPEC = _parse(os.environ["METARL_TEST_STOP_AT"])


def stop_point(point: str) -> None:
    """Reached ``point``: send the configured signal if this is its N-th time."""
    if _SPEC is None or point != _SPEC[0]:
        return
    _COUNTS[point] = _COUNTS.get(point, 0) + 1
    if _COUNTS[point] == _SPEC[1]:
        os.kill(os.getpid(), _SPEC[2])


class Terminated(BaseException):
    """The run got SIGTERM (a scheduler's preemption): it stops at once, keeping its last boundary.  Like
    KeyboardInterrupt, a BaseException, so that no `except Exception` on the way swallows it."""

    exit_code = 128 + signal.SIGTERM


def _on_sigterm(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the save short
    raise Terminated(f"terminated by {signal.Signals(signum).name}")


def catch_sigterm() -> Any:
    """SIGTERM raises :class:`Terminated` in the main thread (elsewhere signals cannot be caught)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _on_sigterm)


def restore_sigterm(previous: Any) -> None:
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)
