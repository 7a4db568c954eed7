"""metarl: meta-reinforcement learning on robot control.

Core types live here; distributions in :mod:`metarl.envs`, agents in :mod:`metarl.agents`,
the rollout engine in :mod:`metarl.rollout`.  The Python API mirrors the CLI:
``metarl.train(config)``, ``metarl.resume(RUN_DIR)``, ``metarl.load(RUN_DIR)``, ``metarl.evaluate(...)``.
"""

from __future__ import annotations

import importlib
from typing import Any

from metarl.checks import check_task_distribution
from metarl.tasks import DistributionSpec, Split, Task, TaskDistribution

__version__ = "0.1.0"

_LAZY = {
    "train": "metarl.training",
    "resume": "metarl.training",
    "train_seeds": "metarl.training",
    "load": "metarl.run",
    "evaluate": "metarl.evaluation",
    "EvalResult": "metarl.evaluation",
    "TrainConfig": "metarl.config",
}

__all__ = [
    "DistributionSpec",
    "EvalResult",
    "Split",
    "Task",
    "TaskDistribution",
    "TrainConfig",
    "__version__",
    "check_task_distribution",
    "evaluate",
    "load",
    "resume",
    "train",
    "train_seeds",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'metarl' has no attribute {name!r}")
