"""check_task_distribution: validate a (user's) distribution up front with clear messages.

Every error names the problem and the fix, so a user sees what to change before a long run
fails in a worker process.  The check is cheap: it builds one env per family and runs a few
short rollouts with at most two tasks of each family.
"""

from __future__ import annotations

import json
import math
import numbers
import pickle
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from metarl.errors import UserError, UserTypeError, check_int
from metarl.tasks import SPLITS, Split, Task, TaskDistribution

__all__ = ["check_task_distribution"]


def check_task_distribution(dist: TaskDistribution, *, seed: int = 0, steps: int = 5) -> None:
    """Validate ``dist`` against the :class:`~metarl.TaskDistribution` contract; raise on the first problem.

    Checks, in order: the type and the ``name``/``families``/``max_episode_steps`` attributes;
    the task lists (non-empty, fields consistent); that every task hashes, pickles and survives a
    JSON round trip; that train and test are disjoint unless ``overlapping_splits``; that
    ``dist.spec`` pickles and rebuilds the same distribution; and, for each family, that its env
    has Box spaces with finite action bounds, that ``reset(seed=...)`` is deterministic, that
    ``set_task`` changes the env's behaviour and fully determines it, and that observations,
    rewards, flags and ``info["success"]`` are well-formed for ``steps`` steps.

    Raises ``TypeError`` for wrong types and ``ValueError`` for wrong values; messages say how to
    fix the distribution.
    """
    if not isinstance(dist, TaskDistribution):
        raise UserTypeError(
            f"expected a metarl.TaskDistribution, got {type(dist).__name__}; subclass metarl.TaskDistribution "
            "and implement _build_tasks, make_env, set_task and spec (or wrap a gymnasium env with "
            "metarl.envs.GymTaskDistribution)"
        )
    check_int("seed", seed, 0)
    check_int("steps", steps, 1)
    _check_attributes(dist)
    tasks = {split: _check_split(dist, split) for split in SPLITS}
    _check_families_have_tasks(dist, tasks)
    _check_serialisable(dist, tasks)
    _check_overlap(dist, tasks)
    _check_spec(dist, tasks)
    for family in dist.families:
        chosen = _pick_tasks(family, tasks)
        _check_family(dist, family, chosen, seed=seed, steps=steps)


# ------------------------------------------------------------------------------------------------
# Static checks
# ------------------------------------------------------------------------------------------------
def _check_attributes(dist: TaskDistribution) -> None:
    cls = type(dist).__name__
    name = getattr(dist, "name", None)
    if not isinstance(name, str) or not name.strip():
        raise UserError(f'{cls}.name must be a non-empty string (set `name = "my-tasks"`), got {name!r}')
    families = getattr(dist, "families", None)
    if not isinstance(families, tuple) or not families:
        raise UserError(
            f"distribution {name!r}: `families` must be a non-empty tuple of env family names "
            f"(e.g. families = ({name!r},)), got {families!r}"
        )
    bad = [f for f in families if not isinstance(f, str) or not f]
    if bad:
        raise UserError(f"distribution {name!r}: every family must be a non-empty string, got {bad!r}")
    if len(set(families)) != len(families):
        raise UserError(f"distribution {name!r}: `families` has duplicates: {list(families)}; list each once")
    horizon = getattr(dist, "max_episode_steps", None)
    if isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)) or horizon <= 0:
        raise UserError(
            f"distribution {name!r}: `max_episode_steps` must be a positive integer (the episode horizon), "
            f"got {horizon!r}"
        )


def _check_split(dist: TaskDistribution, split: Split) -> tuple[Task, ...]:
    tasks = dist.tasks(split)
    if len(tasks) == 0:
        raise UserError(
            f"distribution {dist.name!r} has no {split!r} tasks; _build_tasks({split!r}) must return at least one Task"
        )
    for position, task in enumerate(tasks):
        where = f"distribution {dist.name!r}, {split!r} task at position {position}"
        if not isinstance(task, Task):
            raise UserTypeError(
                f"{where} is a {type(task).__name__}, not a metarl.Task; build tasks with Task.make(...)"
            )
        if task.distribution != dist.name:
            raise UserError(
                f"{where} ({task.id}) names distribution {task.distribution!r}; build it with "
                f"Task.make({dist.name!r}, ...)"
            )
        if task.split != split:
            raise UserError(
                f"{where} ({task.id}) has split {task.split!r}; _build_tasks({split!r}) must return tasks "
                f"with split={split!r}"
            )
        if task.family not in dist.families:
            raise UserError(
                f"{where} ({task.id}) has unknown family {task.family!r}; valid families: {list(dist.families)} "
                "(add it to `families` or fix the task)"
            )
        if task.index != position:
            raise UserError(
                f"{where} ({task.id}) has index {task.index}; a task's index must be its position in tasks({split!r})"
            )
    return tasks


def _check_families_have_tasks(dist: TaskDistribution, tasks: dict[Split, tuple[Task, ...]]) -> None:
    used = {t.family for split_tasks in tasks.values() for t in split_tasks}
    unused = [f for f in dist.families if f not in used]
    if unused:
        raise UserError(
            f"distribution {dist.name!r}: families {unused} have no train or test task; remove them from "
            "`families` or add tasks for them"
        )


def _check_overlap(dist: TaskDistribution, tasks: dict[Split, tuple[Task, ...]]) -> None:
    if dist.overlapping_splits:
        return
    train = {(t.family, t.params): t for t in tasks["train"]}
    shared = [t for t in tasks["test"] if (t.family, t.params) in train]
    if shared:
        example = shared[0]
        raise UserError(
            f"distribution {dist.name!r}: train and test splits share {len(shared)} task(s) (e.g. {example.id} "
            f"equals {train[(example.family, example.params)].id}); held-out tasks must be unseen: draw test "
            "tasks from a separate random stream and drop duplicates, or set overlapping_splits = True if the "
            "overlap is intended"
        )


def _check_serialisable(dist: TaskDistribution, tasks: dict[Split, tuple[Task, ...]]) -> None:
    for split_tasks in tasks.values():
        for task in split_tasks:
            try:
                hash(task)
            except TypeError as exc:
                raise UserTypeError(
                    f"task {task.id} of {dist.name!r} is not hashable ({exc}); build tasks with Task.make(...), "
                    "which freezes parameters (arrays and lists become tuples)"
                ) from exc
            try:
                restored = pickle.loads(pickle.dumps(task))
            except Exception as exc:
                raise UserError(f"task {task.id} of {dist.name!r} cannot be pickled ({exc})") from exc
            if restored != task:
                raise UserError(f"task {task.id} of {dist.name!r} changes when pickled and unpickled")
            try:
                text = json.dumps(task.to_json())
                back = Task.from_json(json.loads(text))
            except (TypeError, ValueError) as exc:
                raise UserError(
                    f"task {task.id} of {dist.name!r} is not JSON round-trippable ({exc}); task parameters must be "
                    "bool, int, finite float, str, bytes, None or tuples of those"
                ) from exc
            if back != task:
                raise UserError(
                    f"task {task.id} of {dist.name!r} is not JSON round-trippable: Task.from_json(task.to_json()) "
                    f"gives {back!r}; use plain bool/int/float/str/bytes parameters (no subclasses)"
                )


def _check_spec(dist: TaskDistribution, tasks: dict[Split, tuple[Task, ...]]) -> None:
    fix = (
        "workers rebuild distributions from `spec`: return DistributionSpec.of(<module-level factory>, "
        "**picklable_kwargs) that builds an equal distribution"
    )
    try:
        spec = dist.spec
        restored = pickle.loads(pickle.dumps(spec))
        rebuilt = restored.build()
    except Exception as exc:
        raise UserError(
            f"distribution {dist.name!r}: its spec cannot rebuild it ({type(exc).__name__}: {exc}); {fix}"
        ) from exc
    if rebuilt.name != dist.name:
        raise UserError(f"distribution {dist.name!r}: its spec rebuilds a distribution named {rebuilt.name!r}; {fix}")
    if tuple(rebuilt.families) != tuple(dist.families) or rebuilt.max_episode_steps != dist.max_episode_steps:
        raise UserError(
            f"distribution {dist.name!r}: its spec rebuilds families {rebuilt.families} and horizon "
            f"{rebuilt.max_episode_steps}, not {dist.families} and {dist.max_episode_steps}; {fix}"
        )
    for split in SPLITS:
        if tuple(rebuilt.tasks(split)) != tasks[split]:
            raise UserError(
                f"distribution {dist.name!r}: its spec rebuilds different {split!r} tasks (seeded lists must "
                f"depend only on the spec's arguments); {fix}"
            )


def _pick_tasks(family: str, tasks: dict[Split, tuple[Task, ...]]) -> list[Task]:
    """Up to two tasks of ``family`` with different parameters (train first, then test)."""
    chosen: list[Task] = []
    for split in SPLITS:
        for task in tasks[split]:
            if task.family == family and all(task.params != c.params for c in chosen):
                chosen.append(task)
                if len(chosen) == 2:
                    return chosen
    return chosen


# ------------------------------------------------------------------------------------------------
# Dynamic checks (one env per family)
# ------------------------------------------------------------------------------------------------
def _check_spaces(dist: TaskDistribution, family: str, env: gym.Env[Any, Any]) -> tuple[gym.spaces.Box, gym.spaces.Box]:
    where = f"distribution {dist.name!r}, family {family!r}"
    obs_space, act_space = env.observation_space, env.action_space
    for kind, space in (("observation", obs_space), ("action", act_space)):
        if not isinstance(space, gym.spaces.Box):
            raise UserTypeError(
                f"{where}: the {kind} space is {type(space).__name__}; metarl needs gymnasium.spaces.Box "
                f"{kind}s (flatten Dict/Tuple spaces with gymnasium.wrappers.FlattenObservation, or use a Box "
                "action space)"
            )
    assert isinstance(obs_space, gym.spaces.Box) and isinstance(act_space, gym.spaces.Box)
    if not (np.all(np.isfinite(act_space.low)) and np.all(np.isfinite(act_space.high))):
        raise UserError(
            f"{where}: action space bounds must be finite, got low={act_space.low.tolist()} "
            f"high={act_space.high.tolist()}; use a Box with finite low/high (policies and action checks need them)"
        )
    if not np.issubdtype(act_space.dtype, np.floating):
        raise UserTypeError(f"{where}: the action space must have a float dtype, got {act_space.dtype}")
    ref_obs, ref_act = dist.observation_space, dist.action_space
    if obs_space.shape != ref_obs.shape or act_space.shape != ref_act.shape:
        raise UserError(
            f"{where}: env spaces have shapes obs {obs_space.shape} / action {act_space.shape}, but the "
            f"distribution's are {ref_obs.shape} / {ref_act.shape}; every family must share observation and "
            "action shapes (pad observations to a common size)"
        )
    return obs_space, act_space


def _check_family(dist: TaskDistribution, family: str, chosen: Sequence[Task], *, seed: int, steps: int) -> None:
    env = dist.make_env(family)
    try:
        if not isinstance(env, gym.Env):
            raise UserTypeError(
                f"distribution {dist.name!r}: make_env({family!r}) returned {type(env).__name__}, not a gymnasium.Env"
            )
        obs_space, act_space = _check_spaces(dist, family, env)
        rng = np.random.default_rng(seed)
        actions = rng.uniform(act_space.low, act_space.high, size=(steps, *act_space.shape)).astype(act_space.dtype)

        def roll(task: Task) -> _Rollout:
            return _rollout(dist, env, task, obs_space, actions, seed)

        first = roll(chosen[0])
        again = roll(chosen[0])
        if not first.same_as(again):
            raise UserError(
                f"distribution {dist.name!r}, task {chosen[0].id}: reset(seed=...) is not deterministic: the same task "
                f"and seed {seed} with the same actions gave different observations or rewards at step "
                f"{first.first_difference(again)}; seed env.np_random / action noise from the seed passed to reset "
                "(call super().reset(seed=seed) and draw all randomness from self.np_random)"
            )
        if len(chosen) < 2:
            return
        other = roll(chosen[1])
        if first.same_as(other):
            raise UserError(
                f"distribution {dist.name!r}: set_task(env, task) did not change the env's behaviour: tasks "
                f"{chosen[0].id} and {chosen[1].id} gave identical observations and rewards for the same seed and "
                f"{steps} actions; set_task must apply the task's parameters (goal, target, mass, ...) to the env"
            )
        back = roll(chosen[0])
        if not first.same_as(back):
            raise UserError(
                f"distribution {dist.name!r}: set_task(env, task) does not fully determine the env: {chosen[0].id} "
                f"behaves differently after the env ran {chosen[1].id} (first difference at step "
                f"{first.first_difference(back)}); set_task must set every task parameter, and reset must clear "
                "state left by the previous episode"
            )
    finally:
        env.close()


class _Rollout:
    """Observations [T+1, ...] and rewards [T] of one short rollout."""

    def __init__(self) -> None:
        self.obs: list[np.ndarray] = []
        self.rewards: list[float] = []

    def same_as(self, other: _Rollout) -> bool:
        return self.first_difference(other) is None

    def first_difference(self, other: _Rollout) -> int | None:
        """Step index (0 = reset) of the first differing observation or reward, or None."""
        for t in range(max(len(self.obs), len(other.obs))):
            if t >= len(self.obs) or t >= len(other.obs):
                return t
            if self.obs[t].shape != other.obs[t].shape or not np.array_equal(self.obs[t], other.obs[t]):
                return t
            if t > 0 and self.rewards[t - 1] != other.rewards[t - 1]:
                return t
        return None


def _rollout(
    dist: TaskDistribution,
    env: gym.Env[Any, Any],
    task: Task,
    obs_space: gym.spaces.Box,
    actions: np.ndarray,
    seed: int,
) -> _Rollout:
    where = f"distribution {dist.name!r}, family {task.family!r}, task {task.id}"
    dist.set_task(env, task)
    result = _Rollout()
    reset_out = dist.reset(env, seed)
    if not (isinstance(reset_out, tuple) and len(reset_out) == 2):
        raise UserTypeError(f"{where}: reset must return (observation, info), got {type(reset_out).__name__}")
    obs, info = reset_out
    result.obs.append(_checked_obs(obs, obs_space, where, 0))
    _check_info(info, where, 0)
    for t, action in enumerate(actions, start=1):
        out = env.step(action)
        if not (isinstance(out, tuple) and len(out) == 5):
            raise UserTypeError(
                f"{where}: step must return (observation, reward, terminated, truncated, info) (gymnasium API), "
                f"got {type(out).__name__} of length {len(out) if isinstance(out, tuple) else '?'}"
            )
        obs, reward, terminated, truncated, info = out
        result.obs.append(_checked_obs(obs, obs_space, where, t))
        result.rewards.append(_checked_reward(reward, where, t))
        for flag_name, flag in (("terminated", terminated), ("truncated", truncated)):
            if not isinstance(flag, (bool, np.bool_)):
                raise UserTypeError(f"{where}: step {t} returned {flag_name}={flag!r}; it must be a bool")
        _check_info(info, where, t)
        if terminated or truncated:
            break
    return result


def _checked_obs(obs: Any, space: gym.spaces.Box, where: str, t: int) -> np.ndarray:
    at = "reset" if t == 0 else f"step {t}"
    if not isinstance(obs, np.ndarray):
        raise UserTypeError(
            f"{where}: observation at {at} is a {type(obs).__name__}; return a numpy array of shape {space.shape} "
            f"and dtype {space.dtype}"
        )
    if obs.shape != space.shape:
        raise UserError(
            f"{where}: observation at {at} has shape {obs.shape}, but observation_space.shape is {space.shape}; "
            "return observations of the declared shape (or fix observation_space)"
        )
    if obs.dtype != space.dtype:
        raise UserError(
            f"{where}: observation at {at} has dtype {obs.dtype}, but observation_space.dtype is {space.dtype}; "
            f"cast observations (obs.astype(np.{space.dtype})) or declare the dtype you return"
        )
    if not np.all(np.isfinite(obs)):
        raise UserError(
            f"{where}: observation at {at} (shape {obs.shape}) is not finite: {obs.tolist()}; observations must "
            "not contain NaN or inf"
        )
    return obs.copy()


def _checked_reward(reward: Any, where: str, t: int) -> float:
    if isinstance(reward, (bool, np.bool_)) or not (
        isinstance(reward, numbers.Real) or (isinstance(reward, np.ndarray) and reward.shape == ())
    ):
        shape = getattr(reward, "shape", None)
        raise UserTypeError(
            f"{where}: reward at step {t} is {reward!r} ({type(reward).__name__}"
            f"{'' if shape is None else f', shape {shape}'}); return a scalar float"
        )
    value = float(reward)
    if not math.isfinite(value):
        raise UserError(f"{where}: reward at step {t} is {value}; rewards must be finite")
    return value


def _check_info(info: Any, where: str, t: int) -> None:
    at = "reset" if t == 0 else f"step {t}"
    if not isinstance(info, dict):
        raise UserTypeError(f"{where}: info at {at} is a {type(info).__name__}; return a dict")
    if t > 0 and "success" in info:
        success = info["success"]
        ok = isinstance(success, (bool, np.bool_))
        if not ok and isinstance(success, (numbers.Real, np.ndarray)):
            value = np.asarray(success)
            ok = value.shape == () and value.dtype.kind in "biuf" and float(value) in (0.0, 1.0)
        if not ok:
            raise UserError(
                f"{where}: info['success'] at {at} is {success!r}; it must be bool-like (True/False, or 0/1 "
                "as Meta-World reports it)"
            )
