"""The RL² agent: trials of ``episodes_per_trial`` episodes collected by the engine, one PPO update per
iteration (or, with ``--overlap``, the next batch sampled during the update), meta-tests and adaptation."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from metarl.agent import MetaTestRollouts
from metarl.agents.gru import gru_loop
from metarl.agents.rl2.adapted import AdaptedRL2Policy, AdaptedStatePolicy, _FinalHidden
from metarl.agents.rl2.policy import RL2Policy, RL2PolicyConfig
from metarl.agents.rl2.ppo import RL2PPOConfig, ppo_update
from metarl.errors import UserError, check_int, check_int_field
from metarl.rollout.background import BackgroundCollect
from metarl.rollout.types import Trajectories
from metarl.tasks import Task


@dataclass(frozen=True)
class RL2Config:
    """RL² agent settings."""

    episodes_per_trial: int = 10
    """Consecutive episodes of one task that share the memory's state (a trial)."""
    policy: RL2PolicyConfig = RL2PolicyConfig()  # noqa: RUF009 (frozen, so one shared default is safe)
    ppo: RL2PPOConfig = RL2PPOConfig()  # noqa: RUF009

    def __post_init__(self) -> None:
        check_int_field(self, "episodes_per_trial")


class RL2Agent:
    """RL² with PPO over trials.  ``meta_train_step`` collects ``episodes_per_task`` episodes per task in
    trials of ``episodes_per_trial`` and takes one PPO update; ``meta_test`` runs one trial of
    adaptation + evaluation episodes per task, keeping the memory's state throughout.
    """

    name = "rl2"
    policy_class: type[RL2Policy] = RL2Policy
    """The policy the agent trains: an RL² variant with another memory subclasses both (``rl2-transformer``)."""
    adaptation_unit = "episodes"
    metaworld_info_in_obs = True  # as metaworld-algorithms' test envs (recurrent_info_in_obs)

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        config: RL2Config,
        *,
        episodes_per_task: int,
        seed: int = 0,
        device: str | torch.device = "cpu",
        action_low: Any = None,
        action_high: Any = None,
    ) -> None:
        if episodes_per_task % config.episodes_per_trial:
            raise UserError(
                f"episodes_per_task ({episodes_per_task}) must be a multiple of episodes_per_trial "
                f"({config.episodes_per_trial}): RL² collects whole trials"
            )
        self.config = config
        self.episodes_per_task = episodes_per_task
        torch.manual_seed(seed)
        self.policy = self.policy_class(obs_dim, action_dim, config.policy, action_low, action_high).to(device)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=config.ppo.lr, eps=config.ppo.adam_eps)
        self.generator = torch.Generator().manual_seed(seed)
        self.env_steps = 0  # training steps so far (kept in the checkpoint)
        self.updates = 0  # PPO updates so far: the policy version a batch is tagged with
        self._pending: dict[str, Any] | None = None  # --overlap: the next batch, collected during the last update

    def _collect(self, engine: Any, tasks: Sequence[Task]) -> Trajectories:
        return engine.collect(
            self.policy, list(tasks), episodes_per_task=self.episodes_per_task,
            episodes_per_trial=self.config.episodes_per_trial,
        )  # fmt: skip

    def meta_train_step(self, engine: Any, tasks: Sequence[Task]) -> dict[str, float]:
        t0 = time.perf_counter()
        traj = self._collect(engine, tasks)
        t1 = time.perf_counter()
        losses = ppo_update(self.policy, self.optimizer, traj, self.config.ppo, self.generator)
        t2 = time.perf_counter()
        self.updates += 1
        return self._step_metrics(traj, losses, sampling_s=t1 - t0, learning_s=t2 - t1)

    def meta_train_step_overlapped(
        self, engine: Any, tasks: Sequence[Task], next_tasks: Sequence[Task] | None
    ) -> dict[str, float]:
        """:meth:`meta_train_step` with sampling overlapped with learning (``--overlap``).

        The update for ``tasks`` uses the batch the previous call collected for them with the policy as it
        was before that call's update: one iteration of policy lag, and PPO's ratio is taken against the
        behaviour log-probabilities stored with the batch.  Meanwhile a frozen copy of the policy collects the
        batch for ``next_tasks`` in a background thread; it is kept (and checkpointed) for the next call.
        Without such a batch (the first iteration) ``tasks`` are collected first, on-policy."""
        t0 = time.perf_counter()
        pending, self._pending = self._pending, None
        if pending is not None and pending["traj"]["task_ids"] == [t.id for t in tasks]:
            traj, version = Trajectories.from_state(pending["traj"], tasks), int(pending["version"])
        else:
            traj, version = self._collect(engine, tasks), self.updates
        t1 = time.perf_counter()
        job = None
        if next_tasks:
            behaviour = copy.deepcopy(self.policy)  # the learner changes self.policy meanwhile
            job = BackgroundCollect(
                engine, behaviour, next_tasks, self.episodes_per_task, self.config.episodes_per_trial
            )
        try:
            losses = ppo_update(self.policy, self.optimizer, traj, self.config.ppo, self.generator)
            t2 = time.perf_counter()
            ahead = job.result() if job is not None else None
        except BaseException:  # Ctrl-C, SIGTERM, an error: stop the collect before the engine is closed
            if job is not None:
                job.cancel()
            raise
        t3 = time.perf_counter()
        if ahead is not None:
            self._pending = {"traj": ahead.to_state(), "version": self.updates}
        lag = self.updates - version
        self.updates += 1
        metrics = self._step_metrics(traj, losses, sampling_s=t1 - t0, learning_s=t2 - t1)
        metrics["time/sampling_wait_s"] = t3 - t2  # the background collect outlasting the update
        metrics["overlap/policy_lag"] = float(lag)
        return metrics

    def _step_metrics(
        self, traj: Trajectories, losses: Mapping[str, float], *, sampling_s: float, learning_s: float
    ) -> dict[str, float]:
        returns = traj.episode_returns  # [N, E]
        success = traj.episode_success.float()
        k = self.config.episodes_per_trial
        by_position = returns.reshape(returns.shape[0], -1, k)  # [N, trials, k]
        self.env_steps += int(traj.num_steps)
        return {
            "env_steps": float(traj.num_steps),
            "charts/episode_return": float(returns.mean()),
            "charts/success_rate": float(success.mean()),
            "charts/first_episode_return": float(by_position[..., 0].mean()),
            "charts/last_episode_return": float(by_position[..., -1].mean()),
            **{f"losses/{name}": value for name, value in losses.items()},
            "time/sampling_s": sampling_s,
            "time/learning_s": learning_s,
        }

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
        """One trial per task: ``adaptation_episodes`` sampled episodes, then ``eval_episodes`` evaluation episodes
        that each start from the memory state reached after the adaptation episodes (as Meta-World's evaluator
        does), so an evaluation episode never learns from an earlier one.  ``deterministic`` makes the
        evaluation episodes take the mean action; adaptation episodes are always sampled (as metaworld-algorithms
        does: they are how the agent explores).  ``feedback=False`` is the adaptation control: the previous
        reward enters the input as 0 throughout the trial, so the agent cannot learn the task from its rewards.
        ``sample_adaptation=False`` (with ``deterministic``) takes the adaptation episodes on the mean action too.
        """
        total = adaptation_episodes + eval_episodes
        policy = AdaptedStatePolicy(
            self.policy, adaptation_episodes, reward_feedback=feedback, deterministic_eval=deterministic
        )
        traj = engine.collect(
            policy, list(tasks), episodes_per_task=total, episodes_per_trial=total,
            deterministic=deterministic and not sample_adaptation,
        )  # fmt: skip
        success = traj.episode_success.float()  # [N, K+n]
        returns = traj.episode_returns
        k = adaptation_episodes
        curve_s = torch.cat([success[:, :k], success[:, k:].mean(1, keepdim=True)], 1)
        curve_r = torch.cat([returns[:, :k], returns[:, k:].mean(1, keepdim=True)], 1)
        return MetaTestRollouts(
            tasks=list(traj.tasks),
            curve_success=curve_s,
            curve_return=curve_r,
            eval_success=traj.episode_success[:, k:],
            eval_return=returns[:, k:],
            unit="episodes",
        )

    def adapt(self, engine: Any, tasks: Sequence[Task], adaptation_episodes: int) -> AdaptedRL2Policy:
        """One trial of ``adaptation_episodes`` sampled episodes per task; the adapted policy starts every episode
        from the memory state its task reached at the end of them (as a meta-test's evaluation episodes do)."""
        check_int("adaptation_episodes", adaptation_episodes, 0)
        if getattr(engine, "policy_runs_remotely", False):
            raise UserError(
                "RL²'s adapt() reads each task's hidden state from the policy as it acts, which a Ray engine runs "
                "in its actors; use a process or inline engine (meta_test and metarl eval work on any backend)"
            )
        tasks = list(tasks)
        recorder = _FinalHidden(self.policy, len(tasks))
        if adaptation_episodes:
            engine.collect(
                recorder, tasks, episodes_per_task=adaptation_episodes, episodes_per_trial=adaptation_episodes
            )
        return AdaptedRL2Policy(self.policy, recorder.final, adapted=adaptation_episodes > 0)

    def eval_slots(self, adaptation_episodes: int, eval_episodes: int) -> int:
        return 1  # a meta-test is one trial per task

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
        from metarl.agents.rl2.metaworld import RL2MetaWorldAgent

        return RL2MetaWorldAgent(
            self.policy, num_envs, deterministic=deterministic, seed=seed, info_in_obs=info_in_obs,
            deterministic_adaptation=exact, obs_reward_divisor=obs_reward_divisor,
        )  # fmt: skip

    @property
    def metaworld_adaptation_steps(self) -> int:
        return 1  # the evaluator's adapt() only snapshots the memory's state

    def learner_record(self) -> dict[str, str]:
        return {"gru_loop": gru_loop(self.config.policy.gru_hidden, self.policy.device)}

    def state_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "env_steps": self.env_steps,
            "updates": self.updates,
            "pending": self._pending,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.env_steps = int(state.get("env_steps", 0))  # checkpoints from before it was kept lack it
        self.updates = int(state.get("updates", 0))
        self._pending = state.get("pending")


def build(
    observation_space: Any,
    action_space: Any,
    config: RL2Config,
    train: Any,
    device: torch.device,
    agent_class: type[RL2Agent] | None = None,
) -> RL2Agent:
    """Agent factory used by the training loop (``train`` is a :class:`metarl.config.TrainConfig`); an agent built
    on RL²'s (say, with another memory) passes its class."""
    return (agent_class or RL2Agent)(
        int(math.prod(observation_space.shape)),
        int(math.prod(action_space.shape)),
        config,
        episodes_per_task=train.episodes_per_task,
        seed=train.seed,
        device=device,
        action_low=action_space.low,
        action_high=action_space.high,
    )
