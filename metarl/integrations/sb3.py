"""A stable-baselines3 ``VecEnv`` over metarl's worker processes and a task distribution.

>>> from stable_baselines3 import PPO
>>> from metarl.envs import make_distribution
>>> from metarl.integrations.sb3 import TaskVecEnv
>>> venv = TaskVecEnv(make_distribution("ML10"), split="train", envs_per_family=1)   # doctest: +SKIP
>>> PPO("MlpPolicy", venv).learn(100_000)                                          # doctest: +SKIP

Follows SB3's ``VecEnv`` contract (``stable_baselines3/common/vec_env/base_vec_env.py``): ``dones``
are ``terminated or truncated``; when an episode ends, the env is reset at once (into a newly drawn
task of its family) and the step's info holds ``"terminal_observation"`` (the ended episode's last
observation) and ``"TimeLimit.truncated"`` (``truncated and not terminated``, so SB3 bootstraps).
Every info holds ``"task_id"`` (the task the step was taken in), ``"success"`` and, at episode
ends, ``"episode": {"r", "l", "t"}`` as SB3's ``Monitor`` writes it, so SB3 logs returns.  The
envs live in worker processes: ``get_attr``/``set_attr``/``env_method`` reach only what the
adapter knows (``render_mode``, ``task_id``, ``family``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

from metarl.integrations.gymnasium import float32_box
from metarl.rollout.pool import PoolBackend
from metarl.rollout.vector import VectorCore
from metarl.tasks import Split, Task, TaskDistribution


class TaskVecEnv(VecEnv):
    """SB3 ``VecEnv`` over metarl's workers; tasks resampled per episode (see the module docstring).

    Arguments as for :class:`metarl.integrations.gymnasium.TaskVectorEnv`.
    """

    def __init__(
        self,
        distribution: TaskDistribution,
        split: Split = "train",
        tasks: Sequence[Task] | None = None,
        envs_per_family: int = 1,
        num_workers: int = 2,
        seed: int = 0,
        backend: PoolBackend = "process",
    ) -> None:
        self.core = VectorCore(
            distribution, split, tasks, envs_per_family=envs_per_family, num_workers=num_workers, seed=seed,
            backend=backend,
        )  # fmt: skip
        self._obs_shape = tuple(distribution.observation_space.shape)
        super().__init__(self.core.num_envs, float32_box(distribution.observation_space), distribution.action_space)
        self._actions: np.ndarray | None = None
        self._returns = np.zeros(self.num_envs, np.float64)
        self._lengths = np.zeros(self.num_envs, np.int64)
        self._t0 = time.time()

    def _obs(self, flat: np.ndarray) -> np.ndarray:
        return flat.reshape((self.num_envs, *self._obs_shape))

    def reset(self) -> VecEnvObs:
        seed = self._seeds[0]
        obs = self.core.reset(seed)
        ids = self.core.task_ids()
        self.reset_infos = [{"task_id": ids[i]} for i in range(self.num_envs)]
        self._returns[:] = 0.0
        self._lengths[:] = 0
        self._reset_seeds()
        self._reset_options()
        return self._obs(obs)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise RuntimeError("step_wait() called without step_async()")
        ids = self.core.task_ids()
        actions, self._actions = self._actions, None
        out = self.core.step(actions)
        dones = out.terminated | out.truncated
        self._returns += out.reward
        self._lengths += 1
        infos: list[dict[str, Any]] = []
        for i in range(self.num_envs):
            info: dict[str, Any] = {"task_id": ids[i], "success": bool(out.success[i])}
            if dones[i]:
                info["terminal_observation"] = out.final_obs[i].reshape(self._obs_shape)
                info["TimeLimit.truncated"] = bool(out.truncated[i] and not out.terminated[i])
                info["episode"] = {
                    "r": float(self._returns[i]),
                    "l": int(self._lengths[i]),
                    "t": round(time.time() - self._t0, 6),
                }
                if out.worker_restarted[i]:
                    info["worker_restarted"] = True
            infos.append(info)
        self._returns[dones] = 0.0
        self._lengths[dones] = 0
        return self._obs(out.obs), out.reward.astype(np.float32), dones, infos

    def close(self) -> None:
        self.core.close()

    # -- attribute access: the envs live in worker processes ----------------------------------------
    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        idx = list(self._get_indices(indices))
        if attr_name == "render_mode":
            return [None for _ in idx]
        if attr_name == "task_id":
            ids = self.core.task_ids()
            return [ids[i] for i in idx]
        if attr_name == "family":
            return [self.core.layout.slot_family[i] for i in idx]
        raise AttributeError(
            f"TaskVecEnv cannot read {attr_name!r}: its envs live in worker processes; available: "
            "'render_mode', 'task_id', 'family'"
        )

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        raise AttributeError(f"TaskVecEnv cannot set {attr_name!r}: its envs live in worker processes")

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **kwargs: Any
    ) -> list[Any]:
        raise AttributeError(f"TaskVecEnv cannot call {method_name!r}: its envs live in worker processes")

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]
