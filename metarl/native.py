"""Environment switches of the learner process, read in the core so that the trainer refuses a bad value before
a run starts: ``METARL_NATIVE_GRU`` (whether RL²'s CPU update may build and use the fused GRU's compiled time loops,
:func:`metarl.agents.gru.native_gru`) and, through :func:`env_switch`, ``METARL_KEEP_FREED_MEMORY``
(:mod:`metarl.allocator`)."""

from __future__ import annotations

import os

from metarl.errors import UserError


def env_switch(name: str, off: str, on: str) -> bool:
    """An environment variable that is 0 (``off``) or 1 (``on``, the default); anything else is refused in one
    line naming what is valid (``METARL_NATIVE_GRU`` here, ``METARL_KEEP_FREED_MEMORY`` in :mod:`metarl.allocator`)."""
    setting = os.environ.get(name, "1")
    if setting not in ("0", "1"):
        raise UserError(f"{name} must be 0 ({off}) or 1 ({on}, the default), got {setting!r}")
    return setting == "1"


def native_gru_setting() -> bool:
    """``METARL_NATIVE_GRU``: 1 (the default) builds and uses the compiled time loops where they can run, 0 keeps
    the Python loop."""
    return env_switch("METARL_NATIVE_GRU", "the Python loop", "the compiled loop")
