"""Classic meta-RL task distributions: 2-D point navigation, HalfCheetah velocity/direction, Ant direction.

These are the cheap benchmarks of the MAML and ProMP papers, rebuilt on gymnasium:

============  =========================  ==============================  =======  ====================
name          env                        task                            horizon  train / test tasks
============  =========================  ==============================  =======  ====================
point-nav     :class:`PointNavEnv`       goal ~ U[-0.5, 0.5]²            100      1000 / 100
cheetah-vel   gymnasium HalfCheetah-v5   target velocity ~ U[0, 3]       200      1000 / 100
cheetah-dir   gymnasium HalfCheetah-v5   direction ±1 (forward/back)     200      2 / 2 (the same two)
ant-dir       gymnasium Ant-v5           direction angle ~ U[0, 2π)      200      1000 / 100
============  =========================  ==============================  =======  ====================

Continuous families have fixed, seeded train and test lists drawn from two separate random
streams of ``seed`` (and checked disjoint).  The MuJoCo distributions wrap the unmodified
gymnasium env and recompute the task reward from its ``info`` (``x_velocity``, ``y_velocity`` and
the control/contact/survive terms), so :meth:`~metarl.TaskDistribution.set_task` only changes a
target number: it never rebuilds the simulator.

Every env reports ``info["success"]``: within 0.1 of the goal for point-nav; always ``False`` for
the locomotion tasks, which have no success criterion in the literature (judge them by return).
"""

from __future__ import annotations

import math
from typing import Any, TypeVar

import gymnasium as gym
import numpy as np

from metarl.errors import UserError, check_int
from metarl.tasks import DistributionSpec, Split, Task, TaskDistribution

__all__ = [
    "AntDirDistribution",
    "AntDirEnv",
    "CheetahDirDistribution",
    "CheetahDirEnv",
    "CheetahVelDistribution",
    "CheetahVelEnv",
    "PointNavDistribution",
    "PointNavEnv",
]

_SPLIT_STREAM = {"train": 0, "test": 1}  # independent random streams per split: SeedSequence([seed, stream])


def _finite_action(action: Any, space: gym.spaces.Box, env_name: str) -> np.ndarray:
    """``action`` as float64, checked for shape and finiteness, clipped to ``space``."""
    a = np.asarray(action, dtype=np.float64)
    if a.shape != space.shape:
        raise UserError(f"{env_name}: action has shape {a.shape}, expected {space.shape}")
    if not np.all(np.isfinite(a)):
        raise UserError(f"{env_name}: action must be finite, got {a.tolist()}")
    return np.clip(a, space.low, space.high)


# ----------------------------------------------------------------------------------------------
# Shared machinery: seeded task lists
# ----------------------------------------------------------------------------------------------
class _SeededDistribution(TaskDistribution):
    """A one-family distribution whose train/test lists are drawn from ``seed`` by :meth:`_draw_params`."""

    source = "classic"

    def __init__(self, seed: int = 0, num_train: int = 1000, num_test: int = 100, max_episode_steps: int = 200):
        self.seed = check_int("seed", seed, 0)
        self.num_train = check_int("num_train", num_train)
        self.num_test = check_int("num_test", num_test)
        self.max_episode_steps = check_int("max_episode_steps", max_episode_steps)
        self.families = (self.name,)

    def _draw_params(self, rng: np.random.Generator, n: int) -> list[dict[str, Any]]:
        """``n`` task parameter dicts drawn from ``rng``."""
        raise NotImplementedError

    def _build_tasks(self, split: Split) -> list[Task]:
        sizes = {"train": self.num_train, "test": self.num_test}
        drawn: dict[str, list[Task]] = {}
        for s in ("train", "test"):
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, _SPLIT_STREAM[s]]))
            params = self._draw_params(rng, sizes[s])
            drawn[s] = [Task.make(self.name, s, self.name, i, p) for i, p in enumerate(params)]
        keys = {s: [t.params for t in drawn[s]] for s in drawn}
        all_keys = keys["train"] + keys["test"]
        if len(set(all_keys)) != len(all_keys):  # continuous draws: never happens; refuse rather than leak
            raise RuntimeError(f"{self.name}: seed {self.seed} drew duplicate tasks across or within splits")
        return drawn[split]

    @property
    def spec(self) -> DistributionSpec:
        return DistributionSpec.of(
            type(self),
            seed=self.seed,
            num_train=self.num_train,
            num_test=self.num_test,
            max_episode_steps=self.max_episode_steps,
        )


_W = TypeVar("_W", bound=gym.Env[Any, Any])


def _find_env(env: gym.Env[Any, Any], cls: type[_W], dist_name: str) -> _W:
    """The ``cls`` layer of ``env`` (``env`` itself or one of the wrappers it is wrapped in)."""
    layer: Any = env
    while True:
        if isinstance(layer, cls):
            return layer
        if not isinstance(layer, gym.Wrapper):
            raise TypeError(
                f"set_task for {dist_name!r} expects an env built by its make_env() (a {cls.__name__}, "
                f"possibly wrapped), got {env!r}"
            )
        layer = layer.env


# ----------------------------------------------------------------------------------------------
# point-nav
# ----------------------------------------------------------------------------------------------
class PointNavEnv(gym.Env[np.ndarray, np.ndarray]):
    """2-D point navigation of the MAML paper (original code: ``point_env_randgoal``).

    The point starts at the origin; the action is its velocity, clipped to [-0.1, 0.1]²; after
    the move the reward is −(L2 distance to the goal); the episode terminates when the point is
    within 0.01 of the goal on both axes, and is truncated after ``max_episode_steps`` steps
    (``truncated`` is False on a terminating step).  Observation: the position, float32 [2].
    ``info["success"]``: L2 distance to the goal below ``success_radius`` (0.1) after the move;
    ``info["distance"]``: that distance.  The position is kept in float64 (the original used
    float32; the dynamics are otherwise identical).  Start and dynamics are deterministic, so
    the reset seed only seeds ``np_random``.
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 (gymnasium convention)
    success_radius = 0.1
    goal_tolerance = 0.01

    def __init__(self, goal: tuple[float, float] = (0.0, 0.0), max_episode_steps: int = 100):
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)
        self._action_box = gym.spaces.Box(-0.1, 0.1, shape=(2,), dtype=np.float32)
        self.action_space = self._action_box
        self.max_episode_steps = check_int("max_episode_steps", max_episode_steps)
        self._goal = np.zeros(2)
        self.set_goal(goal)
        self._position = np.zeros(2)  # [2] float64
        self._elapsed = 0

    @property
    def goal(self) -> tuple[float, float]:
        return (float(self._goal[0]), float(self._goal[1]))

    def set_goal(self, goal: Any) -> None:
        g = np.asarray(goal, dtype=np.float64)
        if g.shape != (2,) or not np.all(np.isfinite(g)):
            raise UserError(f"point-nav goal must be two finite numbers, got {goal!r}")
        self._goal = g

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._position = np.zeros(2)
        self._elapsed = 0
        return self._position.astype(np.float32), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        velocity = _finite_action(action, self._action_box, "point-nav")
        self._position = self._position + velocity
        dx, dy = self._position - self._goal
        distance = math.hypot(dx, dy)
        terminated = bool(abs(dx) < self.goal_tolerance and abs(dy) < self.goal_tolerance)
        self._elapsed += 1
        truncated = (not terminated) and self._elapsed >= self.max_episode_steps
        info = {"success": distance < self.success_radius, "distance": distance}
        return self._position.astype(np.float32), -distance, terminated, truncated, info


class PointNavDistribution(_SeededDistribution):
    """``point-nav``: 2-D navigation to a goal drawn uniformly from [-0.5, 0.5]², horizon 100.

    Exactly the MAML paper's 2-D navigation (see :class:`PointNavEnv`).  Task parameter:
    ``goal`` = (gx, gy).  Options: ``num_train`` (1000), ``num_test`` (100), ``max_episode_steps`` (100).
    """

    name = "point-nav"
    notes = "MAML 2-D navigation: goal U[-0.5,0.5]^2, reward -distance, success within 0.1"

    def __init__(self, seed: int = 0, num_train: int = 1000, num_test: int = 100, max_episode_steps: int = 100):
        super().__init__(seed, num_train, num_test, max_episode_steps)

    def _draw_params(self, rng: np.random.Generator, n: int) -> list[dict[str, Any]]:
        goals = rng.uniform(-0.5, 0.5, size=(n, 2))
        return [{"goal": g} for g in goals]

    def make_env(self, family: str) -> gym.Env[Any, Any]:
        self._check_family(family)
        return PointNavEnv(max_episode_steps=self.max_episode_steps)

    def set_task(self, env: gym.Env[Any, Any], task: Task) -> None:
        self.validate_task(task)
        _find_env(env, PointNavEnv, self.name).set_goal(task.param("goal"))

    def _check_family(self, family: str) -> None:
        if family not in self.families:
            raise UserError(f"unknown family {family!r} for {self.name!r}; valid: {list(self.families)}")


# ----------------------------------------------------------------------------------------------
# MuJoCo locomotion: thin wrappers over the gymnasium envs
# ----------------------------------------------------------------------------------------------
class _TaskRewardEnv(gym.Wrapper[np.ndarray, np.ndarray, np.ndarray, np.ndarray]):
    """Wraps a gymnasium MuJoCo env and replaces its reward by a task reward computed from ``info``.

    Actions are checked (shape, finite) and clipped to the action space before the step, as
    pytorch-maml-rl's action wrapper does, so control costs use the clipped action.  ``info``
    keeps gymnasium's entries; ``reward_forward`` is replaced by the task's forward term and
    ``success`` (always False) is added.
    """

    def __init__(self, env: gym.Env[np.ndarray, np.ndarray], target: float):
        super().__init__(env)
        self.target = float(target)

    def set_target(self, target: float) -> None:
        if not math.isfinite(target):
            raise UserError(f"{type(self).__name__}: target must be finite, got {target!r}")
        self.target = float(target)

    def _task_reward(self, info: dict[str, Any]) -> tuple[float, float]:
        """``(reward, forward_term)`` of the current task from the inner env's ``info``."""
        raise NotImplementedError

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        assert isinstance(self.action_space, gym.spaces.Box)
        clipped = _finite_action(action, self.action_space, type(self).__name__).astype(self.action_space.dtype)
        obs, _, terminated, truncated, info = self.env.step(clipped)
        reward, forward = self._task_reward(info)
        info = {**info, "reward_forward": forward, "success": False}
        return obs, reward, bool(terminated), bool(truncated), info


class CheetahVelEnv(_TaskRewardEnv):
    """HalfCheetah-v5 with reward −|x_velocity − target| − 0.05·‖a‖² (ProMP ``HalfCheetahRandVelEnv``)."""

    def _task_reward(self, info: dict[str, Any]) -> tuple[float, float]:
        forward = -abs(float(info["x_velocity"]) - self.target)
        return forward + float(info["reward_ctrl"]), forward


class CheetahDirEnv(_TaskRewardEnv):
    """HalfCheetah-v5 with reward direction·x_velocity − 0.05·‖a‖² (ProMP ``HalfCheetahRandDirecEnv``)."""

    def _task_reward(self, info: dict[str, Any]) -> tuple[float, float]:
        forward = self.target * float(info["x_velocity"])
        return forward + float(info["reward_ctrl"]), forward


class AntDirEnv(_TaskRewardEnv):
    """Ant-v5 with reward (cos θ, sin θ)·(x_velocity, y_velocity) + survive − ctrl − contact.

    ``target`` is the angle θ in radians.  The survive (1.0 while healthy), control (0.5·‖a‖²) and
    contact (5e-4·Σclip(cfrc_ext, −1, 1)²) terms are gymnasium Ant-v5's, which equal ProMP's
    ``AntRandDirec2DEnv``; the episode terminates when the torso leaves z ∈ [0.2, 1.0]
    (gymnasium and pytorch-maml-rl; ProMP used [0, 1]).
    """

    def _task_reward(self, info: dict[str, Any]) -> tuple[float, float]:
        forward = math.cos(self.target) * float(info["x_velocity"]) + math.sin(self.target) * float(info["y_velocity"])
        costs = float(info["reward_ctrl"]) + float(info["reward_contact"])  # both <= 0
        return forward + float(info["reward_survive"]) + costs, forward


class _LocomotionDistribution(_SeededDistribution):
    """Shared code of the MuJoCo distributions: one env per slot, ``set_task`` sets a target number."""

    env_id: str
    wrapper: type[_TaskRewardEnv]
    param_name: str
    env_kwargs: dict[str, Any]

    def make_env(self, family: str) -> gym.Env[Any, Any]:
        if family not in self.families:
            raise UserError(f"unknown family {family!r} for {self.name!r}; valid: {list(self.families)}")
        inner = gym.make(self.env_id, max_episode_steps=self.max_episode_steps, **self.env_kwargs)
        return self.wrapper(inner, target=0.0)

    def set_task(self, env: gym.Env[Any, Any], task: Task) -> None:
        self.validate_task(task)
        value = task.param(self.param_name)
        if not isinstance(value, (int, float)):
            raise TypeError(f"task {task.id}: parameter {self.param_name!r} must be a number, got {value!r}")
        _find_env(env, self.wrapper, self.name).set_target(float(value))


class CheetahVelDistribution(_LocomotionDistribution):
    """``cheetah-vel``: HalfCheetah-v5 running at a target velocity drawn from U[0, 3].

    Reward (ProMP ``half_cheetah_rand_vel``; pytorch-maml-rl ``HalfCheetahVelEnv``):
    −|forward_velocity − target| − 0.05·‖a‖², with gymnasium's ``x_velocity`` and the action
    clipped to [−1, 1].  Horizon 200, as in the MAML paper (learn2learn and pytorch-maml-rl use
    100: pass ``max_episode_steps=100`` to match them).  No success criterion (``info["success"]``
    is always False).  Task parameter: ``velocity``.
    """

    name = "cheetah-vel"
    notes = "HalfCheetah-v5, target velocity U[0,3], reward -|v-target| - 0.05|a|^2, horizon 200 (MAML paper)"
    env_id = "HalfCheetah-v5"
    wrapper = CheetahVelEnv
    param_name = "velocity"
    env_kwargs = {"ctrl_cost_weight": 0.05}  # noqa: RUF012 (read-only class constant)

    def _draw_params(self, rng: np.random.Generator, n: int) -> list[dict[str, Any]]:
        return [{"velocity": v} for v in rng.uniform(0.0, 3.0, size=n)]


class CheetahDirDistribution(_LocomotionDistribution):
    """``cheetah-dir``: HalfCheetah-v5 running forward (direction +1) or backward (−1).

    Reward (ProMP ``half_cheetah_rand_direc``; pytorch-maml-rl ``HalfCheetahDirEnv``):
    direction·forward_velocity − 0.05·‖a‖², action clipped to [−1, 1].  Horizon 200 (MAML paper;
    ``max_episode_steps=100`` matches learn2learn).  There are only two tasks; as in the MAML paper
    they serve as both the train and the test split (``overlapping_splits = True``), so ``seed``
    does not change the task lists.  No success criterion (always False).  Task parameter:
    ``direction`` (±1.0).
    """

    name = "cheetah-dir"
    overlapping_splits = True
    notes = "HalfCheetah-v5 forward/backward; only 2 tasks, used as both train and test split (as in MAML)"
    env_id = "HalfCheetah-v5"
    wrapper = CheetahDirEnv
    param_name = "direction"
    env_kwargs = {"ctrl_cost_weight": 0.05}  # noqa: RUF012 (read-only class constant)

    def __init__(self, seed: int = 0, max_episode_steps: int = 200):
        super().__init__(seed, num_train=2, num_test=2, max_episode_steps=max_episode_steps)

    def _build_tasks(self, split: Split) -> list[Task]:
        return [Task.make(self.name, split, self.name, i, {"direction": d}) for i, d in enumerate((1.0, -1.0))]

    @property
    def spec(self) -> DistributionSpec:
        return DistributionSpec.of(type(self), seed=self.seed, max_episode_steps=self.max_episode_steps)


class AntDirDistribution(_LocomotionDistribution):
    """``ant-dir``: Ant-v5 running in a direction at an angle drawn from U[0, 2π).

    Reward as ProMP's ``ant_rand_direc_2d`` (see :class:`AntDirEnv`): the torso's planar
    velocity projected on the direction, plus gymnasium Ant-v5's survive, control and contact
    terms; terminates when unhealthy.  Horizon 200 (MAML paper).  No success criterion (always
    False).  Task parameter: ``angle`` (radians).
    """

    name = "ant-dir"
    notes = "Ant-v5, direction angle U[0,2pi), reward = velocity along it + survive - ctrl - contact, horizon 200"
    env_id = "Ant-v5"
    wrapper = AntDirEnv
    param_name = "angle"
    env_kwargs: dict[str, Any] = {}  # noqa: RUF012 (read-only class constant)

    def _draw_params(self, rng: np.random.Generator, n: int) -> list[dict[str, Any]]:
        return [{"angle": a} for a in rng.uniform(0.0, 2.0 * math.pi, size=n)]
