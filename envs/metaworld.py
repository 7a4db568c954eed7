"""Meta-World task distributions: ``ML1-<env>``, ``ML10``, ``ML25`` and ``ML45``.

Tasks are Meta-World's own: its train goals, held-out test goals and held-out test classes for
the given seed (``metaworld.ML10(seed=seed)`` etc.), wrapped as metarl :class:`~metarl.Task`\\ s whose
``mw_data`` parameter holds Meta-World's opaque task bytes (pickles made by Meta-World, which is
how Meta-World itself ships tasks).  One correction to the upstream split: metaworld 3.1.1's ML25
lists ``basketball-v3`` as both a train and a test class (its 50 test goals differ from its 50
train goals, but the class is trained on), so metarl drops it from ML25's test split (4 held-out
classes, 200 tasks).  Every task list is checked when built or loaded: 50 goals per class, no
task in both splits.  ML1 builds its test goals with ``seed + 1``, as Meta-World does, so the test
goals of seed ``s`` are the train goals of seed ``s + 1``.

Task lists are built lazily (only :meth:`MetaWorldDistribution.tasks` builds a benchmark) and
cached on disk (:mod:`metarl.envs.cache`), so worker processes that only call ``make_env`` and
``set_task`` never pay the ~23 s it takes to build ML45.

Env contract (what :meth:`MetaWorldDistribution.make_env` returns, a :class:`MetaWorldTaskEnv`):
observations are float64 arrays of shape (39,), actions float arrays of shape (4,) in [-1, 1];
episodes end by truncation at 500 steps (``terminated`` is set on success only with
``terminate_on_success=True``); ``info["success"]`` is a bool.  Meta-World's reset is
deterministic given the task (it ignores ``reset(seed=...)``; after ``set_task`` nothing in any v3
class's reset draws from ``env.np_random`` or the global numpy generator), so the same task and seed
give the same first observation and the same rewards for the same actions.
"""

from __future__ import annotations

from collections import Counter
from importlib import metadata
from typing import Any, SupportsFloat

import gymnasium as gym
import metaworld
import metaworld.types
import numpy as np
from metaworld import env_dict

from metarl.envs.cache import KeyValue, TaskLists, load_or_build_tasks
from metarl.errors import UserError, check_number
from metarl.tasks import SPLITS, DistributionSpec, Split, Task, TaskDistribution

BENCHMARKS: tuple[str, ...] = ("ML1", "ML10", "ML25", "ML45")
REWARD_VERSIONS: tuple[str, ...] = ("v1", "v2")
RENDER_MODES: tuple[str, ...] = ("rgb_array", "depth_array", "human")
HORIZON = 500
"""Meta-World's episode length (``SawyerXYZEnv.max_path_length``)."""
GOALS_PER_CLASS = 50
"""Meta-World builds 50 goals per env class for each split."""
TASKS_FORMAT = 1
"""Version of how metarl derives its task lists from Meta-World's; part of the cache key."""

_BENCHMARK_CLASSES: dict[str, Any] = {
    "ML10": env_dict.ML10_V3,
    "ML25": env_dict.ML25_V3,
    "ML45": env_dict.ML45_V3,
}
# Held-out classes Meta-World also trains on; metarl removes them from the test split.
_DROPPED_TEST_CLASSES: dict[str, tuple[str, ...]] = {"ML25": ("basketball-v3",)}
_NOTES: dict[str, str] = {
    "ML25": (
        "metaworld 3.1.1 lists basketball-v3 as both a train and a test class; metarl drops it from the "
        "test split (4 held-out classes, 200 tasks)"
    ),
}


def _class_lists(benchmark: str, env_name: str | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(train classes, test classes) in Meta-World's order, after metarl's corrections."""
    if benchmark == "ML1":
        if env_name is None:
            raise UserError("ML1 needs an environment name, e.g. ML1-reach-v3 (see `metarl envs list`)")
        return (env_name,), (env_name,)
    classes = _BENCHMARK_CLASSES[benchmark]
    dropped = _DROPPED_TEST_CLASSES.get(benchmark, ())
    return tuple(classes["train"]), tuple(c for c in classes["test"] if c not in dropped)


class MetaWorldTaskEnv(gym.Wrapper[Any, Any, Any, Any]):
    """A Meta-World env of one class, switched between tasks by :meth:`MetaWorldDistribution.set_task`.

    Thin by design (it sits on the sampler's hot path).  It turns Meta-World's bare assertion
    failures into errors that say what to do, makes ``info["success"]`` a bool, and sets
    ``terminated`` on success when the distribution was built with ``terminate_on_success=True``.
    Meta-World itself truncates episodes at 500 steps.
    """

    def __init__(
        self,
        env: gym.Env[Any, Any],
        family: str,
        reward_version: str,
        terminate_on_success: bool,
        success_reward: float = 0.0,
    ) -> None:
        super().__init__(env)
        self.family = family
        """The Meta-World env class, e.g. ``"reach-v3"``."""
        self.reward_version = reward_version
        self.terminate_on_success = terminate_on_success
        self.success_reward = float(success_reward)
        """Added to the reward of every successful step (0: Meta-World's reward)."""
        self.task: Task | None = None
        """The task set by :meth:`MetaWorldDistribution.set_task` (None before the first)."""
        self.horizon: int = int(env.unwrapped.max_path_length)  # type: ignore[attr-defined]
        self._action_shape: tuple[int, ...] = tuple(env.action_space.shape or ())
        # Steps left in the episode; -1 until reset() after a set_task, 0 once the horizon is reached.
        self._steps_left = -1

    def _set_metaworld_task(self, task: Task, data: bytes) -> None:
        self.env.unwrapped.set_task(metaworld.types.Task(env_name=self.family, data=data))  # type: ignore[attr-defined]
        self.task = task
        self._steps_left = -1

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset to the start of the current task (Meta-World's reset does not depend on ``seed``)."""
        if self.task is None:
            raise RuntimeError(f"this {self.family} env has no task yet: call dist.set_task(env, task) before reset()")
        obs, info = self.env.reset(seed=seed, options=options)
        self._steps_left = self.horizon
        return obs, info

    def step(self, action: Any) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        """Step Meta-World; ``action`` must have shape (4,)."""
        if self._steps_left <= 0:
            raise self._cannot_step()
        if getattr(action, "shape", None) != self._action_shape:
            action = self._checked_action(action)
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._steps_left -= 1
        success = bool(info["success"])
        info["success"] = success
        if success and self.success_reward:
            reward = float(reward) + self.success_reward
        if success and self.terminate_on_success:
            terminated = True
        return obs, reward, terminated, truncated, info

    def _checked_action(self, action: Any) -> np.ndarray:
        array = np.asarray(action)
        if array.shape != self._action_shape:
            raise UserError(f"action for {self.family} must have shape {self._action_shape}, got {array.shape}")
        return array

    def _cannot_step(self) -> RuntimeError:
        if self.task is None:
            return RuntimeError(f"this {self.family} env has no task yet: call dist.set_task(env, task) before reset()")
        if self._steps_left < 0:
            return RuntimeError(
                f"call reset() after set_task() and before step() ({self.family} env, task {self.task.id})"
            )
        return RuntimeError(f"episode already ended at {self.horizon} steps; call reset()")


def _find_task_env(env: gym.Env[Any, Any]) -> MetaWorldTaskEnv:
    """The :class:`MetaWorldTaskEnv` in ``env``'s wrapper chain."""
    inner: Any = env
    while not isinstance(inner, MetaWorldTaskEnv):
        if not isinstance(inner, gym.Wrapper):
            raise TypeError(
                f"expected an env made by MetaWorldDistribution.make_env, got {type(env).__name__}; "
                "build envs with dist.make_env(family)"
            )
        inner = inner.env
    return inner


OBS_DIM = 39
"""Observation size of every Meta-World v3 env (goal hidden, as in the ML benchmarks)."""
ACTION_DIM = 4
"""Action size of every Meta-World v3 env (xyz motion and gripper)."""


class MetaWorldDistribution(TaskDistribution):
    """Meta-World's ML1, ML10, ML25 and ML45 meta-learning benchmarks (v3 envs, goals hidden).

    Args:
        benchmark: ``"ML1"``, ``"ML10"``, ``"ML25"`` or ``"ML45"``.
        env_name: the env class for ML1 (e.g. ``"reach-v3"``); must be None otherwise.
        seed: fixes Meta-World's train and test goals (``metaworld.ML10(seed=seed)``).
        reward_version: ``"v2"`` (default, as Meta-World+) or ``"v1"``.
        terminate_on_success: set ``terminated=True`` on the first successful step (off by
            default: training and evaluation episodes both run the full 500 steps).
        success_reward: added to the reward of every step where ``info["success"]`` holds (0, the
            default: Meta-World's reward).  Reward shaping that makes the success region visible in
            the reward an agent sees and learns from; success itself is counted as before.

    Train tasks: 50 goals per train class.  Test tasks: 50 held-out goals per test class (ML1:
    held-out goals of the same class, built with ``seed + 1`` as Meta-World does; ML10/ML45: 5
    held-out classes; ML25: 4 held-out classes, see the module docstring).
    """

    source = "metaworld"
    max_episode_steps = HORIZON

    def __init__(
        self,
        benchmark: str,
        env_name: str | None = None,
        seed: int = 0,
        reward_version: str = "v2",
        terminate_on_success: bool = False,
        success_reward: float = 0.0,
    ) -> None:
        if not isinstance(benchmark, str) or benchmark.upper() not in BENCHMARKS:
            raise UserError(f"unknown Meta-World benchmark {benchmark!r}; choose one of {list(BENCHMARKS)}")
        benchmark = benchmark.upper()
        if benchmark == "ML1":
            if env_name not in env_dict.ALL_V3_ENVIRONMENTS:
                raise UserError(
                    f"unknown Meta-World env {env_name!r} for ML1; choose one of {sorted(env_dict.ALL_V3_ENVIRONMENTS)}"
                )
        elif env_name is not None:
            raise UserError(f"env_name is only for ML1 (got env_name={env_name!r} with benchmark {benchmark!r})")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32 - 1:
            raise UserError(f"seed must be an integer in [0, 2**32 - 2], got {seed!r}")
        if reward_version not in REWARD_VERSIONS:
            raise UserError(f"unknown reward_version {reward_version!r}; choose one of {list(REWARD_VERSIONS)}")
        if not isinstance(terminate_on_success, (bool, np.bool_)):
            raise UserError(f"terminate_on_success must be True or False, got {terminate_on_success!r}")
        check_number("success_reward", success_reward, 0.0, 1e6)

        self.benchmark = benchmark
        self.env_name = env_name
        self.seed = int(seed)
        self.reward_version = reward_version
        self.terminate_on_success = bool(terminate_on_success)
        self.success_reward = float(success_reward)
        self.name = f"ML1-{env_name}" if benchmark == "ML1" else benchmark
        self.train_classes, self.test_classes = _class_lists(benchmark, env_name)
        self.families = self.train_classes + tuple(c for c in self.test_classes if c not in self.train_classes)
        self.notes = _NOTES.get(benchmark, "")

    @property
    def spec(self) -> DistributionSpec:
        return DistributionSpec.of(
            MetaWorldDistribution,
            benchmark=self.benchmark,
            env_name=self.env_name,
            seed=self.seed,
            reward_version=self.reward_version,
            terminate_on_success=self.terminate_on_success,
            success_reward=self.success_reward,
        )

    # -- tasks ---------------------------------------------------------------------------------
    def _build_tasks(self, split: Split) -> list[Task]:
        return list(self._task_lists()[split])

    def _task_lists(self) -> TaskLists:
        lists: TaskLists | None = self.__dict__.get("_lists")
        if lists is None:
            label, key = self._cache_key()
            lists = load_or_build_tasks(label, key, self._build_from_metaworld, self._check_task_lists)
            self.__dict__["_lists"] = lists
        return lists

    def _cache_key(self) -> tuple[str, dict[str, KeyValue]]:
        """(file label, key) of the on-disk task cache: everything the task lists depend on."""
        key: dict[str, KeyValue] = {
            "kind": "metaworld",
            "benchmark": self.benchmark,
            "env_name": self.env_name,
            "seed": self.seed,
            "metaworld": metadata.version("metaworld"),
            "numpy": np.__version__,  # the task bytes are pickles holding numpy arrays
            "tasks_format": TASKS_FORMAT,
        }
        return f"metaworld-{self.name}-seed{self.seed}", key

    def _build_from_metaworld(self) -> dict[Split, list[Task]]:
        """Build Meta-World's benchmark for ``seed`` (slow: ~1 s for ML1, ~7 s for ML10, ~23 s for ML45)."""
        if self.benchmark == "ML1":
            bench = metaworld.ML1(self.env_name, seed=self.seed)
        else:
            bench = {"ML10": metaworld.ML10, "ML25": metaworld.ML25, "ML45": metaworld.ML45}[self.benchmark](
                seed=self.seed
            )
        train = [t for t in bench.train_tasks if t.env_name in self.train_classes]
        test = [t for t in bench.test_tasks if t.env_name in self.test_classes]
        return {
            "train": [self._task("train", i, t) for i, t in enumerate(train)],
            "test": [self._task("test", i, t) for i, t in enumerate(test)],
        }

    def _task(self, split: Split, index: int, mw_task: Any) -> Task:
        return Task.make(self.name, split, mw_task.env_name, index, {"mw_data": mw_task.data})

    def _check_task_lists(self, lists: TaskLists) -> None:
        """Raise ValueError unless ``lists`` are this distribution's: sizes, families, indices, disjoint splits."""
        expected = {"train": self.train_classes, "test": self.test_classes}
        for split in SPLITS:
            tasks = lists[split]
            counts = Counter(t.family for t in tasks)
            want = dict.fromkeys(expected[split], GOALS_PER_CLASS)
            if dict(counts) != want:
                raise UserError(f"{self.name} {split} tasks per class are {dict(counts)}, expected {want}")
            for i, task in enumerate(tasks):
                if (task.distribution, task.split, task.index) != (self.name, split, i):
                    raise UserError(f"task {task.id} at position {i} of {self.name}/{split} is mislabelled")
                if not isinstance(task.param("mw_data"), bytes):
                    raise UserError(f"task {task.id} has no Meta-World task bytes")
        train = {(t.family, t.param("mw_data")) for t in lists["train"]}
        test = {(t.family, t.param("mw_data")) for t in lists["test"]}
        if len(train) != len(lists["train"]) or len(test) != len(lists["test"]):
            raise UserError(f"{self.name} has duplicate tasks within a split")
        if train & test:
            raise UserError(f"{self.name} train and test splits share {len(train & test)} tasks")

    def describe(self) -> dict[str, Any]:
        """The ``metarl envs list`` row; task counts come from the class lists, so no benchmark is built."""
        return {
            "name": self.name,
            "train_tasks": GOALS_PER_CLASS * len(self.train_classes),
            "test_tasks": GOALS_PER_CLASS * len(self.test_classes),
            "families": list(self.families),
            "obs_dim": OBS_DIM,  # every v3 class; tests check it against a built env
            "action_dim": ACTION_DIM,
            "horizon": self.max_episode_steps,
            "source": self.source,
            "overlapping_splits": self.overlapping_splits,
            "notes": self.notes,
        }

    # -- envs ----------------------------------------------------------------------------------
    def make_env(self, family: str, render_mode: str | None = None) -> MetaWorldTaskEnv:
        """Build one env of Meta-World class ``family`` (~0.1 s); switch its task with :meth:`set_task`.

        ``render_mode`` is ``None`` (default), ``"rgb_array"``, ``"depth_array"`` or ``"human"``.
        """
        if family not in self.families:
            raise UserError(f"unknown family {family!r} for {self.name}; valid: {list(self.families)}")
        if render_mode is not None and render_mode not in RENDER_MODES:
            raise UserError(f"unknown render_mode {render_mode!r}; choose None or one of {list(RENDER_MODES)}")
        env_cls = env_dict.ALL_V3_ENVIRONMENTS[family]
        env = env_cls(reward_function_version=self.reward_version, render_mode=render_mode)
        return MetaWorldTaskEnv(env, family, self.reward_version, self.terminate_on_success, self.success_reward)

    def set_task(self, env: gym.Env[Any, Any], task: Task) -> None:
        """Switch ``env`` (from :meth:`make_env`) to ``task``, a task of the same Meta-World class; then reset it."""
        task = self.validate_task(task)
        task_env = _find_task_env(env)
        if task.family != task_env.family:
            raise UserError(
                f"task of family {task.family} given to an env of family {task_env.family}; Meta-World cannot "
                f"switch an env across classes: use an env made by dist.make_env({task.family!r})"
            )
        if (task_env.reward_version, task_env.terminate_on_success) != (self.reward_version, self.terminate_on_success):
            raise UserError(
                f"env was built with reward_version={task_env.reward_version!r}, terminate_on_success="
                f"{task_env.terminate_on_success} but {self.name} uses reward_version={self.reward_version!r}, "
                f"terminate_on_success={self.terminate_on_success}; build it with this distribution's make_env"
            )
        data = task.param("mw_data")
        if not isinstance(data, bytes):
            raise UserError(f"task {task.id} has no Meta-World task bytes (parameter 'mw_data')")
        task_env._set_metaworld_task(task, data)
