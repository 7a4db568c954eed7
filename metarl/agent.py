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
    """A meta-learning agent: everything the training loop, evaluation and the Meta-World cross-check
    need from one.  The core never branches on an agent's name, so a new agent implements this in
    ``agents/`` and adds itself to the registry (``metarl.agents.AGENTS``)."""

    name: str
    adaptation_unit: Literal["episodes", "gradient_steps"]
    """How the agent adapts: from the episodes in its input (RL²; 0 adaptation episodes is zero-shot)
    or by gradient steps on episodes (the MAML family; a step needs at least one episode)."""
    env_steps: int
    """Training env steps behind the agent's weights (kept in its ``state_dict``)."""
    metaworld_info_in_obs: bool
    """Whether the agent's Meta-World adapter reads the previous action and reward from the
    observation (Meta-World's ``recurrent_info_in_obs`` envs), as the reference's RL² does."""

    def meta_train_step(self, engine: Any, tasks: Sequence[Task]) -> dict[str, float]:
        """One meta-iteration on ``tasks``; returns metrics, including ``env_steps`` taken."""
        ...

    def adapt(self, engine: Any, tasks: Sequence[Task], adaptation_episodes: int) -> Any:
        """Adapt to each of ``tasks`` from ``adaptation_episodes`` sampled episodes; returns the adapted policy,
        which ``engine.collect`` runs on the same task list (each task with its own adaptation)."""
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
        sample_adaptation: bool = True,
    ) -> MetaTestRollouts:
        """Adapt to each task with the budget, then run evaluation episodes.

        ``deterministic`` applies to the evaluation episodes (adaptation episodes explore); ``feedback=False``
        is the adaptation control for agents that adapt from the rewards in their input (RL²): those
        rewards read 0.  An agent without such an input raises ``UserError`` for it.
        ``sample_adaptation=False`` takes the adaptation episodes on the mean action too where the agent can
        (the cross-check's exact mode); an agent whose adaptation needs exploration keeps sampling."""
        ...

    def eval_slots(self, adaptation_episodes: int, eval_episodes: int) -> int:
        """Env slots per task that :meth:`meta_test` can use at once (a trial runs in one slot; independent
        episodes can run side by side)."""
        ...

    def metaworld_adapter(
        self,
        num_envs: int,
        *,
        deterministic: bool,
        seed: int,
        info_in_obs: bool = False,
        exact: bool = False,
        obs_reward_divisor: float = 10.0,
    ) -> Any:
        """The agent as Meta-World's ``MetaLearningAgent`` on a vector env of ``num_envs`` (env i is task i), for
        ``metaworld.evaluation.metalearning_evaluation``.  ``deterministic``: evaluation episodes on the mean
        action; ``exact``: adaptation episodes too, where the agent can; ``info_in_obs``: the envs carry the
        previous action and reward in the observation (see :attr:`metaworld_info_in_obs`), the reward divided by
        ``obs_reward_divisor`` (10 in Meta-World's default envs; 1 with
        ``normalize_reward_in_recurrent_info=False``)."""
        ...

    @property
    def metaworld_adaptation_steps(self) -> int:
        """``adaptation_steps`` for Meta-World's evaluator: how often it calls the adapter's ``adapt()``."""
        ...

    def learner_record(self) -> dict[str, str]:
        """What else the agent's update depends on for bitwise reproduction beyond the learner's threads and
        device (RL²: which GRU time loop runs); kept in the checkpoint, and a resume that differs says so."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


@runtime_checkable
class OverlappingLearner(Protocol):
    """An agent whose update may use a batch collected by the policy of the iteration before (``--overlap``):
    off-policy-tolerant updates such as PPO's, which weigh by the behaviour log-probabilities.  MAML's outer
    step differentiates through an inner step on its own on-policy samples, so the MAML family is not one."""

    def meta_train_step_overlapped(
        self, engine: Any, tasks: Sequence[Task], next_tasks: Sequence[Task] | None
    ) -> dict[str, float]:
        """One meta-iteration on ``tasks`` (as ``meta_train_step``), collecting ``next_tasks``' batch for the
        next call while it learns; metrics include ``overlap/policy_lag`` and ``time/sampling_wait_s``."""
        ...
