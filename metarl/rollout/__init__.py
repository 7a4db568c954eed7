"""Rollout engine: process workers over shared memory, one batched policy call per step.

Names are imported lazily so that worker processes (which import :mod:`metarl.rollout.worker`)
do not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from metarl.rollout.background import BackgroundCollect
    from metarl.rollout.engine import RolloutEngine
    from metarl.rollout.errors import ActionError, CollectCancelled, EnvError, RolloutError, WorkerCrashedError
    from metarl.rollout.layout import Layout
    from metarl.rollout.pool import PoolError, WorkerPool
    from metarl.rollout.types import Policy, StepBatch, Trajectories

_EXPORTS = {
    "RolloutEngine": "metarl.rollout.engine",
    "BackgroundCollect": "metarl.rollout.background",
    "CollectCancelled": "metarl.rollout.errors",
    "WorkerPool": "metarl.rollout.pool",
    "PoolError": "metarl.rollout.pool",
    "Layout": "metarl.rollout.layout",
    "RolloutError": "metarl.rollout.errors",
    "EnvError": "metarl.rollout.errors",
    "ActionError": "metarl.rollout.errors",
    "WorkerCrashedError": "metarl.rollout.errors",
    "Policy": "metarl.rollout.types",
    "StepBatch": "metarl.rollout.types",
    "Trajectories": "metarl.rollout.types",
}

__all__ = [
    "ActionError",
    "BackgroundCollect",
    "CollectCancelled",
    "EnvError",
    "Layout",
    "Policy",
    "PoolError",
    "RolloutEngine",
    "RolloutError",
    "StepBatch",
    "Trajectories",
    "WorkerCrashedError",
    "WorkerPool",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'metarl.rollout' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
