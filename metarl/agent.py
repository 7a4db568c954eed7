"""The contract between the training loop / evaluation and an agent (RL², MAML-RL, ...)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import torch

from metarl.tasks import Task


@dataclass
class MetaTestRollouts:
    """What an agent hands back from a meta-test on ``N`` tasks.

    ``curve_*[:, k]`` is the mean over evaluation episodes run after ``k`` adaptation units
    (episodes for RL², gradient steps for the MAML family); the last column is the full budget.
    ``eval_*`` are the evaluation episodes after the full budget.
    """

    tasks: list[Task]
    curve_success: torch.Tensor  # [N, K+1] float in [0, 1]
    curve_return: torch.Tensor  # [N, K+1] float
    eval_success: torch.Tensor  # [N, n_eval] bool: success at any step of each evaluation episode
    eval_return: torch.Tensor  # [N, n_eval] float
    unit: Literal["episodes", "gradient_steps"]


@runtime_checkable
class MetaLearner(Protocol):
    """A meta-learning agent.  The training loop only calls these."""

    name: str

    def meta_train_step(self, engine: Any, tasks: Sequence[Task]) -> dict[str, float]:
        """One meta-iteration on ``tasks``; returns metrics, including ``env_steps`` taken."""
        ...

    def meta_test(
        self,
        engine: Any,
        tasks: Sequence[Task],
        adaptation_episodes: int,
        eval_episodes: int,
        deterministic: bool,
        *,
        feedback: bool = True,
    ) -> MetaTestRollouts:
        """Adapt to each task with the budget, then run evaluation episodes.

        ``deterministic`` applies to the evaluation episodes (adaptation episodes explore); ``feedback=False``
        is the adaptation control for agents that adapt from the rewards in their input (RL²): those
        rewards read 0.  An agent without such an input raises ``ValueError`` for it."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...
