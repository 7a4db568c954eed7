"""A made-up agent that exists only here: the proof that a new agent needs ``agents/``-style code and a
registry entry, and no core change.  It does not meta-learn: one state-independent Gaussian for every
task, its mean moved by a REINFORCE step per iteration (a non-adaptive baseline)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from metarl.agent import MetaTestRollouts
from metarl.rollout.types import StepBatch
from metarl.tasks import Task


@dataclass(frozen=True)
class ToyConfig:
    lr: float = 0.05
    """Step size of the mean."""


class ToyPolicy:
    def __init__(self, action_dim: int, low: Any, high: Any) -> None:
        self.mean = torch.zeros(action_dim)
        self.scale = torch.as_tensor((high - low) / 2, dtype=torch.float32)
        self.bias = torch.as_tensor((high + low) / 2, dtype=torch.float32)
        self.device = torch.device("cpu")

    def initial_state(self, num_slots: int) -> None:
        return None

    def act(self, step: StepBatch, state: Any) -> tuple[torch.Tensor, Any, dict[str, torch.Tensor]]:
        a = self.mean.expand(step.obs.shape[0], -1) + (0.0 if step.deterministic else 0.3 * step.noise)
        return self.bias + self.scale * a.clamp(-1, 1), state, {"noise": step.noise}


class ToyAgent:
    name = "toy"
    adaptation_unit = "episodes"
    metaworld_info_in_obs = False

    def __init__(self, action_dim: int, low: Any, high: Any, config: ToyConfig, episodes_per_task: int) -> None:
        self.config = config
        self.policy = ToyPolicy(action_dim, low, high)
        self.episodes_per_task = episodes_per_task
        self.env_steps = 0

    def meta_train_step(self, engine: Any, tasks: Sequence[Task]) -> dict[str, float]:
        traj = engine.collect(self.policy, list(tasks), episodes_per_task=self.episodes_per_task)
        returns = traj.episode_returns  # [N, E]
        advantage = (returns - returns.mean()) / (returns.std() + 1e-8)
        noise = traj.extras["noise"][..., 0, :]  # [N, E, A]: the first step's noise stands for the episode
        self.policy.mean += self.config.lr * (advantage.unsqueeze(-1) * noise).mean((0, 1))
        self.env_steps += int(traj.num_steps)
        return {"env_steps": float(traj.num_steps), "charts/episode_return": float(returns.mean())}

    def adapt(self, engine: Any, tasks: Sequence[Task], adaptation_episodes: int) -> ToyPolicy:
        return self.policy  # it does not adapt

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
        traj = engine.collect(self.policy, list(tasks), episodes_per_task=eval_episodes, deterministic=deterministic)
        success, returns = traj.episode_success.float().mean(1), traj.episode_returns.mean(1)
        k = adaptation_episodes
        return MetaTestRollouts(
            tasks=list(traj.tasks),
            curve_success=success.unsqueeze(1).repeat(1, k + 1),
            curve_return=returns.unsqueeze(1).repeat(1, k + 1),
            eval_success=traj.episode_success,
            eval_return=traj.episode_returns,
            unit="episodes",
        )

    def eval_slots(self, adaptation_episodes: int, eval_episodes: int) -> int:
        return eval_episodes

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
        raise NotImplementedError("the toy agent has no Meta-World adapter")

    @property
    def metaworld_adaptation_steps(self) -> int:
        return 1

    def learner_record(self) -> dict[str, str]:
        return {}  # nothing beyond the learner's threads and device

    def state_dict(self) -> dict[str, Any]:
        return {"mean": self.policy.mean.clone(), "env_steps": self.env_steps}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.policy.mean = state["mean"].clone()
        self.env_steps = int(state["env_steps"])


def build(observation_space: Any, action_space: Any, config: ToyConfig, train: Any, device: torch.device) -> ToyAgent:
    return ToyAgent(int(math.prod(action_space.shape)), action_space.low, action_space.high, config,
                    train.episodes_per_task)  # fmt: skip
