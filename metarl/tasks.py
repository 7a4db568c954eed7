"""Core task types: :class:`Task`, :class:`TaskDistribution` and :class:`DistributionSpec`.

A *task* is one MDP of a distribution (a goal, a target velocity, a Meta-World goal of one env
class).  A *distribution* knows its fixed train and test task lists, builds envs (one per worker
slot, once) and switches an env between tasks of the same family cheaply with :meth:`set_task`.

Workers never receive a distribution object: they rebuild it from its :class:`DistributionSpec`
(an importable factory plus keyword arguments), so everything a distribution needs must be
importable by module path.
"""

from __future__ import annotations

import abc
import base64
import importlib
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal, TypeAlias

import gymnasium as gym
import numpy as np

from metarl.errors import UserError, UserTypeError

Split: TypeAlias = Literal["train", "test"]
SPLITS: tuple[Split, ...] = ("train", "test")

ParamValue: TypeAlias = "bool | int | float | str | bytes | tuple[ParamValue, ...] | None"


def check_split(split: object) -> Split:
    """Return ``split`` if it is ``"train"`` or ``"test"``, else raise a ValueError naming both."""
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; choose one of {list(SPLITS)}")
    return split


def _freeze(value: Any, key: str) -> ParamValue:
    """Turn a task parameter into a hashable, JSON-representable value (arrays become tuples)."""
    if isinstance(value, np.ndarray):
        return tuple(_freeze(v, key) for v in value.tolist())
    if isinstance(value, np.generic):
        return _freeze(value.item(), key)
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v, key) for v in value)
    if value is None or isinstance(value, (bool, int, str, bytes)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise UserError(f"task parameter {key!r} must be finite, got {value!r}")
        return value
    raise UserTypeError(
        f"task parameter {key!r} has type {type(value).__name__}; use bool, int, float, str, "
        "bytes, None, or a tuple/list/ndarray of those"
    )


def _to_json(value: ParamValue) -> Any:
    if isinstance(value, bytes):
        return {"__bytes__": base64.b64encode(value).decode("ascii")}
    if isinstance(value, tuple):
        return [_to_json(v) for v in value]
    return value


def _from_json(value: Any) -> ParamValue:
    if isinstance(value, dict):
        if set(value) != {"__bytes__"}:
            raise UserError(f"malformed task parameter {value!r}")
        return base64.b64decode(value["__bytes__"])
    if isinstance(value, list):
        return tuple(_from_json(v) for v in value)
    return value


@dataclass(frozen=True)
class Task:
    """One task of a distribution: frozen, hashable, picklable and JSON-serialisable.

    Two equal tasks give the same env behaviour under the same seed.
    """

    distribution: str
    """Name of the distribution the task belongs to (e.g. ``"ML10"``)."""
    split: Split
    """``"train"`` or ``"test"``."""
    family: str
    """Env family the task runs in (a Meta-World class such as ``"reach-v3"``, or ``"point-nav"``)."""
    index: int
    """Position of the task in ``distribution.tasks(split)``."""
    params: tuple[tuple[str, ParamValue], ...] = field(default=())
    """The parameters that define the task, as sorted ``(name, value)`` pairs."""

    @classmethod
    def make(cls, distribution: str, split: Split, family: str, index: int, params: Mapping[str, Any]) -> Task:
        """Build a task from a plain mapping of parameters (arrays are converted to tuples)."""
        frozen = tuple(sorted((str(k), _freeze(v, str(k))) for k, v in params.items()))
        return cls(distribution, check_split(split), family, int(index), frozen)

    @property
    def id(self) -> str:
        """Stable human-readable identifier, e.g. ``"ML10/test/door-close-v3/7"``."""
        return f"{self.distribution}/{self.split}/{self.family}/{self.index}"

    def param(self, name: str) -> ParamValue:
        """The value of parameter ``name``."""
        for key, value in self.params:
            if key == name:
                return value
        raise KeyError(f"task {self.id} has no parameter {name!r}; it has {[k for k, _ in self.params]}")

    def to_json(self) -> dict[str, Any]:
        """A JSON-compatible dict (bytes are base64-encoded)."""
        return {
            "distribution": self.distribution,
            "split": self.split,
            "family": self.family,
            "index": self.index,
            "params": {k: _to_json(v) for k, v in self.params},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Task:
        """Inverse of :meth:`to_json`."""
        try:
            params = {k: _from_json(v) for k, v in data["params"].items()}
            return cls.make(data["distribution"], data["split"], data["family"], data["index"], params)
        except (KeyError, TypeError, AttributeError) as exc:
            raise UserError(f"malformed task record {dict(data)!r}: {exc}") from exc


@dataclass(frozen=True)
class DistributionSpec:
    """A picklable recipe that rebuilds a distribution in another process.

    ``factory`` is an importable ``"module:qualname"`` path; ``kwargs`` must be picklable.
    """

    factory: str
    kwargs: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(cls, factory: Callable[..., Any], **kwargs: Any) -> DistributionSpec:
        """Spec for ``factory(**kwargs)``; ``factory`` must be importable (module level)."""
        return cls(importable_path(factory, what="distribution factory"), tuple(sorted(kwargs.items())))

    def build(self) -> TaskDistribution:
        """Import the factory and call it."""
        factory = resolve_importable(self.factory)
        dist = factory(**dict(self.kwargs))
        if not isinstance(dist, TaskDistribution):
            raise UserTypeError(f"factory {self.factory} returned {type(dist).__name__}, not a TaskDistribution")
        return dist


def importable_path(obj: Callable[..., Any], *, what: str) -> str:
    """Return ``"module:qualname"`` for a module-level function or class, or explain why not.

    Worker processes rebuild distributions by importing this path, so lambdas, closures and
    functions defined in ``__main__`` of an interactive session cannot be used.
    """
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not callable(obj) or module is None or qualname is None:
        raise UserTypeError(f"{what} must be a module-level function or class, got {obj!r}")
    if "<lambda>" in qualname or "<locals>" in qualname:
        raise UserTypeError(
            f"{what} {qualname!r} is a lambda or a closure; worker processes rebuild distributions by "
            f"importing it, so define it as a module-level function (def ... at the top of a module)"
        )
    path = f"{module}:{qualname}"
    try:
        found = resolve_importable(path)
    except (ImportError, AttributeError) as exc:
        raise UserTypeError(f"{what} {path} cannot be imported again ({exc}); define it at module level") from exc
    if found is not obj:
        raise UserTypeError(f"{what} {path} does not resolve to the object given; define it at module level")
    return path


def resolve_importable(path: str) -> Any:
    """Import ``"module:qualname"``."""
    module_name, _, qualname = path.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


class TaskDistribution(abc.ABC):
    """A distribution of tasks with fixed train and test lists.

    Subclasses set ``name``, ``max_episode_steps`` and ``families`` and implement
    :meth:`_build_tasks`, :meth:`make_env`, :meth:`set_task` and :meth:`spec`.  Spaces default to
    those of an env of the first family; override them when that is expensive.

    Env contract (checked by :func:`metarl.check_task_distribution`): ``make_env(family)`` returns a
    gymnasium env whose ``step`` returns ``(obs, reward, terminated, truncated, info)`` and whose
    ``info`` may hold ``"success"``; ``set_task(env, task)`` must be called before ``reset``;
    ``reset(seed=s)`` with the same task and seed gives the same observation.
    """

    name: str
    max_episode_steps: int
    families: tuple[str, ...]
    overlapping_splits: bool = False
    """True only where train and test share tasks on purpose (``cheetah-dir``)."""
    notes: str = ""
    """One line shown by ``metarl envs list`` (e.g. a correction to the upstream split)."""
    source: str = "user"
    """Where the distribution comes from: ``metaworld``, ``classic``, ``custom``, or a package name."""

    # -- to implement ------------------------------------------------------------------------
    @abc.abstractmethod
    def _build_tasks(self, split: Split) -> list[Task]:
        """The fixed task list of ``split`` (called once per split, then cached)."""

    @abc.abstractmethod
    def make_env(self, family: str) -> gym.Env[Any, Any]:
        """Build one env of ``family`` (once per worker slot)."""

    @abc.abstractmethod
    def set_task(self, env: gym.Env[Any, Any], task: Task) -> None:
        """Switch ``env`` to ``task`` cheaply; never rebuild the env."""

    @property
    @abc.abstractmethod
    def spec(self) -> DistributionSpec:
        """How a worker process rebuilds this distribution."""

    # -- provided ----------------------------------------------------------------------------
    @cached_property
    def _spaces(self) -> tuple[gym.spaces.Box, gym.spaces.Box]:
        env = self.make_env(self.families[0])
        try:
            obs_space, act_space = env.observation_space, env.action_space
        finally:
            env.close()
        if not isinstance(obs_space, gym.spaces.Box) or not isinstance(act_space, gym.spaces.Box):
            raise UserTypeError(
                f"distribution {self.name!r}: observation and action spaces must be gymnasium Box, got "
                f"{type(obs_space).__name__} and {type(act_space).__name__}"
            )
        return obs_space, act_space

    @property
    def observation_space(self) -> gym.spaces.Box:
        return self._spaces[0]

    @property
    def action_space(self) -> gym.spaces.Box:
        return self._spaces[1]

    def tasks(self, split: Split) -> tuple[Task, ...]:
        """The fixed list of tasks of ``split`` (``"train"`` or ``"test"``)."""
        split = check_split(split)
        cache: dict[str, tuple[Task, ...]] = self.__dict__.setdefault("_task_cache", {})
        if split not in cache:
            cache[split] = tuple(self._build_tasks(split))
        return cache[split]

    def reset(self, env: gym.Env[Any, Any], seed: int) -> tuple[Any, dict[str, Any]]:
        """Reset ``env`` (already switched to its task) with ``seed``."""
        return env.reset(seed=seed)

    def validate_task(self, task: object, split: Split | None = None) -> Task:
        """Refuse a task of another distribution, another split, or an unknown family."""
        if not isinstance(task, Task):
            raise UserTypeError(f"expected a metarl Task, got {type(task).__name__}")
        if task.distribution != self.name:
            raise UserError(f"task {task.id} belongs to distribution {task.distribution!r}, not {self.name!r}")
        if split is not None and task.split != split:
            raise UserError(f"task {task.id} is from the {task.split!r} split, expected {split!r}")
        if task.family not in self.families:
            raise UserError(f"task {task.id} has unknown family {task.family!r}; valid: {list(self.families)}")
        return task

    def sample(self, n: int, split: Split = "train", rng: np.random.Generator | int | None = None) -> list[Task]:
        """``n`` tasks of ``split``, balanced across families.

        Each family's tasks are shuffled and taken in rounds, one per family per round (family
        order shuffled once), so the first ``len(families) * k`` tasks hold ``k`` of each family
        while every family has ``k`` tasks.  Without replacement while possible: a family that
        runs out is skipped until every task has been used once, then the whole cycle repeats.
        """
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n <= 0:
            raise UserError(f"number of tasks to sample must be a positive integer, got {n!r}")
        rng = np.random.default_rng(rng)
        by_family: dict[str, list[Task]] = {}
        for task in self.tasks(split):
            by_family.setdefault(task.family, []).append(task)
        if not by_family:
            raise UserError(f"distribution {self.name!r} has no {split!r} tasks to sample")
        families = list(by_family)
        order = [families[i] for i in rng.permutation(len(families))]
        shuffled = [[by_family[f][i] for i in rng.permutation(len(by_family[f]))] for f in order]
        one_cycle = [lst[r] for r in range(max(map(len, shuffled))) for lst in shuffled if r < len(lst)]
        return [one_cycle[i % len(one_cycle)] for i in range(n)]

    def describe(self) -> dict[str, Any]:
        """The row shown by ``metarl envs list``."""
        return {
            "name": self.name,
            "train_tasks": len(self.tasks("train")),
            "test_tasks": len(self.tasks("test")),
            "families": list(self.families),
            "obs_dim": int(np.prod(self.observation_space.shape)),
            "action_dim": int(np.prod(self.action_space.shape)),
            "horizon": self.max_episode_steps,
            "source": self.source,
            "overlapping_splits": self.overlapping_splits,
            "notes": self.notes,
        }

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


def families_of(tasks: Iterable[Task]) -> list[str]:
    """Families in order of first appearance."""
    seen: dict[str, None] = {}
    for t in tasks:
        seen.setdefault(t.family, None)
    return list(seen)
