"""A gymnasium ``VectorEnv`` over metarl's worker processes and a task distribution.

>>> from metarl.envs import make_distribution
>>> from metarl.integrations.gymnasium import TaskVectorEnv
>>> envs = TaskVectorEnv(make_distribution("ML10"), split="train", envs_per_family=1)   # doctest: +SKIP
>>> obs, info = envs.reset(seed=0)                                                        # doctest: +SKIP
>>> obs, reward, terminated, truncated, info = envs.step(envs.action_space.sample())    # doctest: +SKIP

Semantics:

* ``num_envs = envs_per_family * (number of families in the task list)``; env ``i`` always runs
  family ``info["family"][i]`` (envs are built once, in worker processes, and switched between
  tasks with ``set_task``).
* Every episode gets a task drawn uniformly from the split's tasks of its env's family, and an env
  seed, from a generator seeded by ``reset(seed=...)`` (or the constructor's ``seed``).
* Autoreset is gymnasium 1.x's ``AutoresetMode.SAME_STEP`` (``metadata["autoreset_mode"]``): when
  an episode ends, ``step`` returns the first observation of the env's next episode (already on its
  new task) and puts the last observation of the ended one in ``info["final_obs"]`` and its info
  (``task_id``, ``success``) in ``info["final_info"]``, masked by ``info["_final_obs"]``.
* ``info["task_id"]`` (and ``info["family"]``) name the task each returned observation belongs to;
  ``info["success"]`` is the step's success flag.
* Observations are float32.  Episodes are truncated at the distribution's ``max_episode_steps``.
  Non-finite or wrong-shape actions raise ``ValueError`` before any env is stepped.  If a worker
  process dies, it is restarted and its envs' episodes end with ``truncated=True`` and
  ``info["worker_restarted"]`` set.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from metarl.rollout.pool import PoolBackend
from metarl.rollout.vector import VectorCore
from metarl.tasks import Split, Task, TaskDistribution


def float32_box(space: gym.spaces.Box) -> gym.spaces.Box:
    """``space`` with float32 dtype and bounds (metarl's workers exchange float32 observations)."""
    return gym.spaces.Box(space.low.astype(np.float32), space.high.astype(np.float32), space.shape, np.float32)


class TaskVectorEnv(VectorEnv[np.ndarray, np.ndarray, np.ndarray]):
    """Gymnasium ``VectorEnv`` over metarl's workers; tasks resampled per episode (see the module docstring).

    Args:
        distribution: a metarl task distribution.
        split: ``"train"`` or ``"test"``: the tasks episodes are drawn from (unless ``tasks`` is given).
        tasks: an explicit list of tasks to draw from.
        envs_per_family: envs per family of the task list.
        num_workers: worker processes.
        seed: default seed of the task/env-seed generator.
        backend: ``"process"`` (default) or ``"inline"``.
    """

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}  # noqa: RUF012

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
        self.distribution = distribution
        self.num_envs = self.core.num_envs
        self.single_observation_space = float32_box(distribution.observation_space)
        self.single_action_space = distribution.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._families = np.array(self.core.layout.slot_family, dtype=object)
        self._obs_shape = tuple(self.single_observation_space.shape)

    def _obs(self, flat: np.ndarray) -> np.ndarray:
        return flat.reshape((self.num_envs, *self._obs_shape))

    def _task_info(self) -> dict[str, Any]:
        mask = np.ones(self.num_envs, bool)
        return {
            "task_id": np.array(self.core.task_ids(), dtype=object),
            "_task_id": mask,
            "family": self._families.copy(),
            "_family": mask.copy(),
        }

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """Start a new episode in every env, each on a freshly drawn task of its family."""
        super().reset(seed=seed)
        obs = self.core.reset(seed)
        return self._obs(obs), self._task_info()

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        """Step every env; ended episodes restart on a new task in the same step (``SAME_STEP``)."""
        out = self.core.step(actions)
        info = self._task_info()
        info["success"] = out.success
        info["_success"] = np.ones(self.num_envs, bool)
        ended = out.terminated | out.truncated
        if ended.any():
            info["final_obs"] = self._obs(out.final_obs)
            info["_final_obs"] = ended
            info["final_info"] = {
                "task_id": np.array([t.id if t is not None else "" for t in out.ended_tasks], dtype=object),
                "_task_id": ended,
                "success": out.success & ended,
                "_success": ended,
            }
            info["_final_info"] = ended
        if out.worker_restarted.any():
            info["worker_restarted"] = out.worker_restarted
            info["_worker_restarted"] = out.worker_restarted
        return self._obs(out.obs), out.reward.astype(np.float64), out.terminated, out.truncated, info

    def close_extras(self, **kwargs: Any) -> None:
        self.core.close()
