"""Errors raised by the rollout engine (all subclasses of :class:`RolloutError`)."""

from __future__ import annotations


class RolloutError(RuntimeError):
    """Base class of the engine's errors."""


class EnvError(RolloutError):
    """An env raised while stepping or resetting; the message holds the task, slot and original traceback."""


class WorkerCrashedError(RolloutError):
    """A worker process kept dying (more than ``max_restarts`` times on the same work)."""


class ActionError(RolloutError, ValueError):
    """The policy returned actions that cannot be stepped (wrong shape, non-finite values)."""


class CollectCancelled(RolloutError):
    """A collect was stopped from another thread (its ``stop`` event was set) before it finished."""
