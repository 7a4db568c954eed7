"""A tiny deterministic task distribution for engine tests (importable by worker processes).

:class:`CountingDistribution` has ``num_families`` families (``"count-0"``, ``"count-1"``, ...) of
``tasks_per_family`` tasks each.  A task has a ``value`` (``family * 10 + index_in_family``) and an
episode ``length`` (0 = never terminates; the engine then truncates at ``horizon``).  Its env is an
oracle: everything it returns is a closed-form function of the step count, the task, the reset seed
and the action, so tests can compute the expected trajectories by hand.

At step ``t`` (0-based) of an episode reset with ``seed``, the observation the policy sees is::

    obs = [t, value, (seed % 1000) / 1000, 0, ..., 0]            # obs_dim entries

and stepping with action ``a`` gives::

    reward     = value + t + a[0]
    terminated = length > 0 and t + 1 >= length
    success    = t + 1 == success_step
    next obs   = [t + 1, value, (seed % 1000) / 1000, 0, ...]
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import gymnasium as gym
import numpy as np

from metarl.tasks import DistributionSpec, Split, Task, TaskDistribution


class CountingEnv(gym.Env[np.ndarray, np.ndarray]):
    """The env of :class:`CountingDistribution` (see the module docstring for its closed form)."""

    def __init__(
        self,
        family: str,
        obs_dim: int,
        action_dim: int,
        success_step: int,
        step_delay_s: float,
        fail_value: float | None,
        fail_step: int,
        kill_value: float | None,
        kill_step: int,
    ) -> None:
        self.family = family
        self._obs_dim = obs_dim
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float64)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (action_dim,), np.float32)
        self._success_step = success_step
        self._delay = step_delay_s
        self._fail_value = fail_value
        self._fail_step = fail_step
        self._kill_value = kill_value
        self._kill_step = kill_step
        self.value: float | None = None
        self.length = 0
        self.t = 0
        self._seed_feature = 0.0
        self.set_task_calls = 0

    def _obs(self) -> np.ndarray:
        obs = np.zeros(self._obs_dim, np.float64)
        obs[0] = self.t
        obs[1] = 0.0 if self.value is None else self.value
        obs[2] = self._seed_feature
        return obs

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if self.value is None:
            raise RuntimeError("CountingEnv.reset called before set_task")
        self.t = 0
        self._seed_feature = ((seed or 0) % 1000) / 1000.0
        return self._obs(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self.value is None:
            raise RuntimeError("CountingEnv.step called before set_task")
        action = np.asarray(action)
        if action.shape != self.action_space.shape:
            raise ValueError(f"action shape {action.shape} != {self.action_space.shape}")
        if self._fail_value is not None and self.value == self._fail_value and self.t == self._fail_step:
            raise RuntimeError(f"CountingEnv failure injected at value={self.value} step={self.t}")
        if self._kill_value is not None and self.value == self._kill_value and self.t == self._kill_step:
            os.kill(os.getpid(), signal.SIGKILL)
        if self._delay > 0:
            time.sleep(self._delay)
        reward = self.value + self.t + float(action[0])
        self.t += 1
        terminated = self.length > 0 and self.t >= self.length
        info = {"success": self.t == self._success_step}
        return self._obs(), float(reward), bool(terminated), False, info


class CountingDistribution(TaskDistribution):
    """Deterministic oracle distribution for engine tests (see the module docstring).

    Options: ``horizon`` (max episode steps), ``lengths`` (episode length per task index within a
    family, cycled; 0 = never terminates), ``step_delay_s`` (sleep per step, to keep workers busy),
    ``fail_value``/``fail_step`` (raise in ``step`` of the task with that value at that step),
    ``kill_value``/``kill_step`` (the worker SIGKILLs itself there: a crash that recurs),
    ``make_env_error`` (``make_env`` raises a RuntimeError with this message).
    """

    source = "testing"

    def __init__(
        self,
        num_families: int = 2,
        tasks_per_family: int = 4,
        horizon: int = 10,
        obs_dim: int = 3,
        action_dim: int = 2,
        lengths: tuple[int, ...] = (0,),
        success_step: int = 2,
        step_delay_s: float = 0.0,
        fail_value: float | None = None,
        fail_step: int = 0,
        kill_value: float | None = None,
        kill_step: int = 0,
        make_env_error: str | None = None,
        name: str = "counting",
        seed: int = 0,
    ) -> None:
        if obs_dim < 3:
            raise ValueError(f"obs_dim must be >= 3, got {obs_dim}")
        self.name = name
        self.max_episode_steps = int(horizon)
        self.families = tuple(f"count-{i}" for i in range(num_families))
        self._kwargs: dict[str, Any] = {
            "num_families": num_families,
            "tasks_per_family": tasks_per_family,
            "horizon": horizon,
            "obs_dim": obs_dim,
            "action_dim": action_dim,
            "lengths": tuple(lengths),
            "success_step": success_step,
            "step_delay_s": step_delay_s,
            "fail_value": fail_value,
            "fail_step": fail_step,
            "kill_value": kill_value,
            "kill_step": kill_step,
            "make_env_error": make_env_error,
            "name": name,
            "seed": seed,
        }
        self._tasks_per_family = tasks_per_family
        self._lengths = tuple(lengths)

    @property
    def spec(self) -> DistributionSpec:
        return DistributionSpec.of(CountingDistribution, **self._kwargs)

    @property
    def observation_space(self) -> gym.spaces.Box:
        return gym.spaces.Box(-np.inf, np.inf, (self._kwargs["obs_dim"],), np.float64)

    @property
    def action_space(self) -> gym.spaces.Box:
        return gym.spaces.Box(-1.0, 1.0, (self._kwargs["action_dim"],), np.float32)

    def _build_tasks(self, split: Split) -> list[Task]:
        offset = 0 if split == "train" else 100
        out: list[Task] = []
        for f, family in enumerate(self.families):
            for i in range(self._tasks_per_family):
                value = float(offset + f * 10 + i)
                length = self._lengths[i % len(self._lengths)]
                out.append(Task.make(self.name, split, family, len(out), {"value": value, "length": length}))
        return out

    def make_env(self, family: str) -> CountingEnv:
        if family not in self.families:
            raise ValueError(f"unknown family {family!r}; valid: {list(self.families)}")
        k = self._kwargs
        if k["make_env_error"] is not None:
            raise RuntimeError(k["make_env_error"])
        return CountingEnv(
            family,
            k["obs_dim"],
            k["action_dim"],
            k["success_step"],
            k["step_delay_s"],
            k["fail_value"],
            k["fail_step"],
            k["kill_value"],
            k["kill_step"],
        )

    def set_task(self, env: gym.Env[Any, Any], task: Task) -> None:
        assert isinstance(env, CountingEnv)
        if task.family != env.family:
            raise ValueError(f"task {task.id} is of family {task.family!r}, env is {env.family!r}")
        env.value = float(task.param("value"))  # type: ignore[arg-type]
        env.length = int(task.param("length"))  # type: ignore[arg-type]
        env.set_task_calls += 1


def counting_oracle(
    value: float, seed: int, length: int, horizon: int, actions: np.ndarray, success_step: int = 2
) -> dict[str, np.ndarray]:
    """Expected per-step arrays of one CountingEnv episode given the actions taken (``[T, A]``)."""
    steps = horizon if length <= 0 else min(length, horizon)
    t = np.arange(steps, dtype=np.float64)
    rewards = value + t + actions[:steps, 0].astype(np.float64)
    terminated = np.zeros(steps, bool)
    truncated = np.zeros(steps, bool)
    if length > 0 and length <= horizon:
        terminated[-1] = True
    else:
        truncated[-1] = True
    return {
        "length": np.array(steps),
        "t": t,
        "rewards": rewards.astype(np.float32),
        "terminated": terminated,
        "truncated": truncated,
        "success": (t + 1) == success_step,
        "seed_feature": np.array((seed % 1000) / 1000.0),
    }


class ElementwisePolicy:
    """A batch-independent policy (elementwise ops only): ``action = tanh(scale * obs[:, :A] + noise_scale * noise)``.

    A row's output does not depend on which other rows share its batch, so any placement of
    episodes on workers and slots gives bitwise identical episodes.  ``scale`` may be ``[A]``.
    """

    def __init__(self, action_dim: int, scale: float = 0.1, noise_scale: float = 0.5) -> None:
        import torch

        self.device = torch.device("cpu")
        self.action_dim = action_dim
        self.scale = scale
        self.noise_scale = noise_scale
        self.calls = 0
        self.rows_seen = 0

    def initial_state(self, num_slots: int) -> None:
        return None

    def act(self, step: Any, state: Any) -> tuple[Any, Any, dict[str, Any]]:
        import torch

        self.calls += 1
        self.rows_seen += int(step.obs.shape[0])
        a = self.action_dim
        base = step.obs[:, :a] * self.scale
        if base.shape[1] < a:
            base = torch.nn.functional.pad(base, (0, a - base.shape[1]))
        noise = torch.zeros_like(step.noise) if step.deterministic else step.noise * self.noise_scale
        action = torch.tanh(base + noise)
        return action, state, {"noise_used": noise[:, 0].clone()}
