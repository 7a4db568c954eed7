"""The MAML-family agent behind the shared training loop: sampling, the inner steps, the algorithm's outer
loop (its config builds it), meta-test and checkpoints, and the registry's ``build``."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from metarl.agent import MetaTestRollouts
from metarl.agents.maml.inner import InnerLoopConfig, TaskBatch, inner_step, task_batch
from metarl.agents.maml.policy import GaussianMLPPolicy, Params, TaskPolicy, detach_params, stack_params
from metarl.agents.maml.ppo import MAMLPPOConfig
from metarl.agents.maml.reptile import ReptileConfig
from metarl.agents.maml.trpo import FOMAMLConfig, MAMLConfig
from metarl.errors import UserError
from metarl.rollout.types import Trajectories
from metarl.tasks import Task

META_TEST_EPISODES_PER_CALL = 500
"""Adaptation episodes one meta-test call adapts from at once (50 tasks x 10 episodes); more tasks are taken in
chunks. The inner step's graph grows with its data: all 250 held-out ML10 goals at once (1.25M steps) needed more
than 22 GiB and were killed on a 24 GiB machine, where the periodic meta-test's 50 goals fit."""


class MAMLAgent:
    """MAML-family agent behind the shared training loop (:class:`metarl.agent.MetaLearner`).

    The config's type picks the algorithm: it builds the outer loop (``config.outer_loop``) that moves θ after
    the inner steps; sampling, adaptation and meta-test are the same for all of them."""

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        config: InnerLoopConfig | None = None,
        *,
        name: str = "maml-trpo",
        episodes_per_task: int = 10,
        device: torch.device | str = "cpu",
        action_low: Any = None,
        action_high: Any = None,
        seed: int = 0,
    ) -> None:
        self.config: InnerLoopConfig = config or MAMLConfig()
        self.name = name
        self.episodes_per_task = int(episodes_per_task)
        self.device = torch.device(device)
        self.seed = int(seed)
        torch.manual_seed(seed)
        self.policy = GaussianMLPPolicy(
            obs_dim, action_dim, self.config.hidden, self.config.init_std, action_low, action_high
        ).to(self.device)
        self.outer = self.config.outer_loop(self.policy, self.seed)
        self.env_steps = 0  # training env steps behind the weights

    adaptation_unit = "gradient_steps"
    metaworld_info_in_obs = False

    # -- sampling --------------------------------------------------------------------------
    def _collect(
        self,
        engine: Any,
        tasks: Sequence[Task],
        params: Params | None,
        episodes: int,
        deterministic: bool = False,
        stream: dict[str, int] | None = None,
    ) -> Trajectories:
        """``stream`` (a meta-test chunk's ``task_offset`` and ``collect_index``) is advanced to the next collect."""
        extra = {} if stream is None else dict(stream)
        traj: Trajectories = engine.collect(
            TaskPolicy(self.policy, params, extra.get("task_offset", 0)), list(tasks),
            episodes_per_task=episodes, deterministic=deterministic, **extra,
        )  # fmt: skip
        if stream is not None:
            stream["collect_index"] += 1
        return traj

    def adapt(self, engine: Any, tasks: Sequence[Task], adaptation_episodes: int) -> TaskPolicy:
        """The test-time inner steps (``config.steps_at_test``), each on ``adaptation_episodes`` fresh sampled
        episodes per task; returns the adapted per-task policy (weights stacked in the order of ``tasks``)."""
        if isinstance(adaptation_episodes, bool) or not isinstance(adaptation_episodes, int) or adaptation_episodes < 1:
            raise UserError(
                f"{self.name} adapts by gradient steps on episodes; adaptation_episodes must be a positive integer, "
                f"got {adaptation_episodes!r}"
            )
        policy, _ = self.adapt_with_batches(engine, tasks, adaptation_episodes, self.config.steps_at_test)
        return policy

    def adapt_with_batches(
        self, engine: Any, tasks: Sequence[Task], episodes: int | None = None, steps: int | None = None
    ) -> tuple[TaskPolicy, list[TaskBatch]]:
        """Collect ``episodes`` per task and take ``steps`` inner steps (default: the training ones); returns the
        adapted per-task policy and the batches it stepped on.

        The returned :class:`TaskPolicy` holds the adapted weights stacked in the order of ``tasks``:
        pass it and the same task list to ``engine.collect``.
        """
        episodes = self.episodes_per_task if episodes is None else int(episodes)
        steps = self.config.inner_steps if steps is None else int(steps)
        if episodes <= 0:
            raise ValueError(f"adaptation needs at least one episode per task, got {episodes}")
        params: Params | None = None
        batches: list[TaskBatch] = []
        for _ in range(steps):
            traj = self._collect(engine, tasks, params, episodes)
            batches.append(task_batch(traj, self.policy, self.config))
            params = self.inner_step(params, batches[-1], len(tasks))
        return TaskPolicy(self.policy, params), batches

    def inner_step(self, params: Params | None, batch: TaskBatch, num_tasks: int) -> Params:
        """Per-task weights after one more inner step (from θ when ``params`` is None), as constants."""
        base = stack_params(detach_params(self.policy.params()), num_tasks) if params is None else params
        return detach_params(inner_step(self.policy, base, batch, self.config.inner_lr, False))

    # -- MetaLearner ------------------------------------------------------------------------
    def meta_train_step(self, engine: Any, tasks: Sequence[Task]) -> dict[str, float]:
        t0 = time.perf_counter()
        adapted_policy, pre = self.adapt_with_batches(engine, tasks)
        assert adapted_policy.params is not None
        post: TaskBatch | None = None
        if self.outer.samples_post_adaptation:
            post_traj = self._collect(engine, tasks, adapted_policy.params, self.episodes_per_task)
            post = task_batch(post_traj, self.policy, self.config)
        t1 = time.perf_counter()
        losses = self.outer.step(pre, post, adapted_policy.params, self.env_steps)
        t2 = time.perf_counter()
        # Reptile has no post-adaptation phase: its "post" figures are those of the last inner step's episodes
        last = post if post is not None else pre[-1]
        env_steps = sum(b.num_steps for b in pre) + (post.num_steps if post is not None else 0)
        self.env_steps += int(env_steps)
        return {
            "env_steps": float(env_steps),
            "charts/pre_adaptation_return": float(pre[0].returns.mean()),
            "charts/post_adaptation_return": float(last.returns.mean()),
            "charts/pre_adaptation_success": float(pre[0].success.mean()),
            "charts/post_adaptation_success": float(last.success.mean()),
            "charts/log_std": float(self.policy.log_std.detach().mean()),
            # metarl's inner step is lr x the per-task mean gradient with std-normalised advantages; the
            # metaworld-algorithms step (one mean over all tasks, advantages / variance) is lr / (N x this std)
            "inner/advantage_std": pre[0].raw_advantage_std,
            **losses,
            "time/sampling_s": t1 - t0,
            "time/learning_s": t2 - t1,
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
        """Curve point k: ``eval_episodes`` episodes with the weights after k inner steps (k = 0..S).

        Each inner step uses ``adaptation_episodes`` fresh stochastic episodes per task (one
        episode if 0 is given: a gradient step needs data).  There is no reward input to withhold:
        the adaptation control is the curve's point 0 (no inner step), so ``feedback=False`` is refused.
        Adaptation episodes are sampled whatever ``sample_adaptation`` says: a policy gradient needs exploration.
        """
        if not feedback:
            raise UserError(
                f"{self.name} has no reward input to withhold (--no-feedback is RL²'s control); "
                "its adaptation control is the curve's point 0, before any inner step"
            )
        from metarl.rollout import RolloutEngine

        tasks = list(tasks)
        episodes = max(int(adaptation_episodes), 1)
        per_call = max(1, META_TEST_EPISODES_PER_CALL // episodes)
        if len(tasks) <= per_call:
            return self._meta_test_chunk(engine, tasks, episodes, eval_episodes, deterministic, None)
        # Tasks adapt independently. On a RolloutEngine each chunk's collects reuse the whole call's collect indices
        # at the chunk's task positions, so every episode's seed and noise equal one call's, and so does the result
        # up to the rounding of batched products over fewer tasks (other engines, e.g. Ray's, draw fresh streams).
        start = engine.state_dict()["collects"] if isinstance(engine, RolloutEngine) else None
        parts, stream = [], None
        for i in range(0, len(tasks), per_call):
            stream = None if start is None else {"task_offset": i, "collect_index": start}
            parts.append(self._meta_test_chunk(engine, tasks[i : i + per_call], episodes, eval_episodes,
                                               deterministic, stream))  # fmt: skip
        if stream is not None:  # the engine ends where one call's collects leave it
            engine.load_state_dict({**engine.state_dict(), "collects": stream["collect_index"]})
        return MetaTestRollouts(
            tasks=[t for part in parts for t in part.tasks],
            curve_success=torch.cat([part.curve_success for part in parts]),
            curve_return=torch.cat([part.curve_return for part in parts]),
            eval_success=torch.cat([part.eval_success for part in parts]),
            eval_return=torch.cat([part.eval_return for part in parts]),
            unit="gradient_steps",
        )

    def _meta_test_chunk(
        self,
        engine: Any,
        tasks: list[Task],
        episodes: int,
        eval_episodes: int,
        deterministic: bool,
        stream: dict[str, int] | None,
    ) -> MetaTestRollouts:
        steps = self.config.steps_at_test
        params: Params | None = None
        succ, rets = [], []
        last: Trajectories | None = None
        for k in range(steps + 1):
            last = self._collect(engine, tasks, params, eval_episodes, deterministic, stream)
            succ.append(last.episode_success.float().mean(1))
            rets.append(last.episode_returns.mean(1))
            if k == steps:
                break
            traj = self._collect(engine, tasks, params, episodes, stream=stream)
            batch = task_batch(traj, self.policy, self.config)
            params = self.inner_step(params, batch, len(tasks))
        if last is None:  # the loop above runs at least once: adaptation takes at least one episode
            raise RuntimeError(f"internal error: meta_test collected nothing (episodes={episodes!r})")
        return MetaTestRollouts(
            tasks=list(last.tasks),
            curve_success=torch.stack(succ, 1).cpu(),
            curve_return=torch.stack(rets, 1).cpu(),
            eval_success=last.episode_success.cpu(),
            eval_return=last.episode_returns.cpu(),
            unit="gradient_steps",
        )

    def eval_slots(self, adaptation_episodes: int, eval_episodes: int) -> int:
        return max(adaptation_episodes, eval_episodes)  # independent episodes run side by side

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
        """``exact`` is ignored: the adaptation episodes are sampled (a policy gradient needs exploration)."""
        from metarl.agents.maml.metaworld import MAMLMetaWorldAgent

        if info_in_obs:
            raise ValueError(f"{self.name} reads plain observations; build the envs without recurrent_info_in_obs")
        return MAMLMetaWorldAgent(self, num_envs, deterministic=deterministic, seed=seed)

    @property
    def metaworld_adaptation_steps(self) -> int:
        return self.config.steps_at_test

    def learner_record(self) -> dict[str, str]:
        return {}  # nothing beyond the learner's threads and device

    def state_dict(self) -> dict[str, Any]:
        # the outer loop's state (MAML-PPO: its Adam state under "optimizer") sits beside the policy
        return {"policy": self.policy.state_dict(), "env_steps": self.env_steps, **self.outer.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.env_steps = int(state.get("env_steps", 0))
        self.outer.load_state_dict(state)


AGENT_CONFIGS: dict[str, type[InnerLoopConfig]] = {
    "maml-trpo": MAMLConfig,
    "maml-ppo": MAMLPPOConfig,
    "fomaml": FOMAMLConfig,
    "reptile": ReptileConfig,
}


def build(
    observation_space: Any, action_space: Any, config: InnerLoopConfig, train: Any, device: torch.device
) -> MAMLAgent:
    """Agent factory used by the training loop (``train`` is a :class:`metarl.config.TrainConfig`)."""
    expected = AGENT_CONFIGS.get(train.agent)
    if expected is not None and type(config) is not expected:
        raise ValueError(f"agent {train.agent!r} needs a {expected.__name__}, got a {type(config).__name__}")
    return MAMLAgent(
        int(math.prod(observation_space.shape)),
        int(math.prod(action_space.shape)),
        config,
        name=train.agent,
        episodes_per_task=train.episodes_per_task,
        device=device,
        action_low=action_space.low,
        action_high=action_space.high,
        seed=train.seed,
    )
