"""``METARL_NATIVE_GRU``: whether the learner may build and use compiled kernels (today one: the fused GRU's time
loops of RL²'s CPU update, :func:`metarl.agents.gru.native_gru`).  Read here, in the core, so that the trainer
refuses a bad value before a run starts without importing an agent."""

from __future__ import annotations

import os

from metarl.errors import UserError


def native_gru_setting() -> bool:
    """``METARL_NATIVE_GRU``: 1 (the default) builds and uses the compiled time loops where they can run, 0 keeps
    the Python loop; anything else is refused in one line."""
    setting = os.environ.get("METARL_NATIVE_GRU", "1")
    if setting not in ("0", "1"):
        raise UserError(
            f"METARL_NATIVE_GRU must be 0 (the Python loop) or 1 (the compiled loop, the default), got {setting!r}"
        )
    return setting == "1"
