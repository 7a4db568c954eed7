"""GymTaskDistribution: wrap any gymnasium env with task sampling and task application functions.

>>> dist = GymTaskDistribution("pendulum-gravity", "Pendulum-v1", sample_gravity, apply_gravity)

``sample_gravity(rng) -> {"g": ...}`` draws the parameters of one task and
``apply_gravity(env, params)`` applies them to an env built once per worker slot.  Both (and an
env factory, when one is given instead of an env id) must be module-level functions: worker
processes rebuild the distribution from its :attr:`~GymTaskDistribution.spec` by importing them.
See ``examples/custom_distribution.py`` for a complete example.
"""

from __future__ import annotations

import keyword
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeAlias

import gymnasium as gym
import numpy as np

from metarl.errors import UserError, check_int
from metarl.tasks import (
    DistributionSpec,
    ParamValue,
    Split,
    Task,
    TaskDistribution,
    importable_path,
    resolve_importable,
)

__all__ = ["ApplyTask", "EnvFactory", "GymTaskDistribution", "SampleTask"]

SampleTask: TypeAlias = Callable[[np.random.Generator], Mapping[str, Any]]
"""``sample_task(rng) -> {name: value}``: the parameters of one task, drawn from ``rng`` only."""
ApplyTask: TypeAlias = Callable[[gym.Env[Any, Any], dict[str, ParamValue]], None]
"""``apply_task(env, params) -> None``: apply a task's parameters to an env (arrays come back as tuples)."""
EnvFactory: TypeAlias = Callable[[], gym.Env[Any, Any]]
"""A module-level callable returning a fresh gymnasium env (called with ``**env_kwargs``)."""

_SPLIT_STREAM = {"train": 0, "test": 1}


def _is_import_path(text: str) -> bool:
    """``"pkg.module:qualname"`` with a Python-identifier qualname (gymnasium's ``"module:Env-v0"`` is not one)."""
    module, sep, qualname = text.partition(":")
    parts = [*module.split("."), *qualname.split(".")]
    return bool(sep) and all(p.isidentifier() and not keyword.iskeyword(p) for p in parts)


def _callable_path(obj: Callable[..., Any] | str, what: str) -> tuple[str, Callable[..., Any]]:
    """``(path, callable)`` for a module-level callable or its ``"module:qualname"`` path."""
    if isinstance(obj, str):
        if not _is_import_path(obj):
            raise UserError(f"{what} must be a module-level function or a 'module:qualname' path, got {obj!r}")
        try:
            found = resolve_importable(obj)
        except (ImportError, AttributeError) as exc:
            raise UserError(f"{what} {obj!r} cannot be imported: {exc}") from exc
        if not callable(found):
            raise TypeError(f"{what} {obj!r} resolves to {type(found).__name__}, which is not callable")
        return obj, found
    if not callable(obj):
        raise TypeError(f"{what} must be a module-level function, got {type(obj).__name__}")
    return importable_path(obj, what=what), obj


class GymTaskDistribution(TaskDistribution):
    """A task distribution over any gymnasium env: the env is built once, tasks are applied to it.

    Args:
        name: the distribution's name (also the prefix of task ids).
        env: a registered gymnasium env id (built with ``gymnasium.make(env, **env_kwargs)``), or a
            module-level env factory (called as ``env(**env_kwargs)``), or its ``"module:qualname"``
            path.
        sample_task: module-level ``sample_task(rng) -> dict`` giving one task's parameters (goal,
            gravity, mass, ...) from the ``numpy.random.Generator`` it is given, and nothing else.
            Values: bool, int, float, str, bytes, None, or arrays/tuples of those.
        apply_task: module-level ``apply_task(env, params) -> None`` applying them to an env built by
            :meth:`make_env` (arrays come back as tuples: use ``np.asarray``).  It must set every
            parameter, so that equal tasks behave equally whatever ran before.
        num_train, num_test: sizes of the fixed train and held-out test lists.
        seed: fixes both lists (drawn from separate random streams; duplicates are redrawn, so the
            test tasks never appear in the train list).
        max_episode_steps: the horizon; defaults to the env spec's ``max_episode_steps``.  With an
            env id it is also passed to ``gymnasium.make`` so the env truncates there.
        family: the env family name; defaults to the env id or the factory's name.
        env_kwargs: keyword arguments for ``gymnasium.make`` or the factory (a mapping or
            ``(name, value)`` pairs).

    Every argument may be given as a plain picklable value (functions as paths), which is what
    :attr:`spec` does so that workers can rebuild the distribution.
    """

    source = "custom"

    def __init__(
        self,
        name: str,
        env: str | EnvFactory,
        sample_task: SampleTask | str,
        apply_task: ApplyTask | str,
        *,
        num_train: int = 100,
        num_test: int = 20,
        seed: int = 0,
        max_episode_steps: int | None = None,
        family: str | None = None,
        env_kwargs: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None,
    ):
        if not isinstance(name, str) or not name.strip():
            raise UserError(f"name must be a non-empty string, got {name!r}")
        self.name = name
        for what, value, minimum in (("num_train", num_train, 1), ("num_test", num_test, 1), ("seed", seed, 0)):
            check_int(what, value, minimum)
        self.num_train, self.num_test, self.seed = int(num_train), int(num_test), int(seed)
        self.env_kwargs: dict[str, Any] = dict(env_kwargs or {})
        self._sample_path, self._sample = _callable_path(sample_task, "sample_task")
        self._apply_path, self._apply = _callable_path(apply_task, "apply_task")

        self._env_id: str | None = None
        self._factory: Callable[..., gym.Env[Any, Any]] | None = None
        if isinstance(env, str) and not _is_import_path(env):
            try:
                env_spec = gym.spec(env)
            except gym.error.Error as exc:
                raise UserError(
                    f"unknown gymnasium env id {env!r} ({exc}); pass a registered id or an env factory"
                ) from exc
            self._env_id = env
            self._env_ref = env
            default_family, spec_horizon = env, env_spec.max_episode_steps
        else:
            self._env_ref, self._factory = _callable_path(env, "env factory")
            default_family = self._env_ref.rpartition(":")[2]
            spec_horizon = None if max_episode_steps is not None else self._factory_horizon()

        horizon = max_episode_steps if max_episode_steps is not None else spec_horizon
        if horizon is None:
            raise UserError(
                f"distribution {name!r}: the env declares no max_episode_steps; pass max_episode_steps=<horizon>"
            )
        check_int("max_episode_steps", horizon, 1)
        self._explicit_horizon = max_episode_steps is not None
        self.max_episode_steps = int(horizon)
        if family is not None and (not isinstance(family, str) or not family):
            raise UserError(f"family must be a non-empty string, got {family!r}")
        self.families = (family or default_family,)
        self._tasks = self._draw_tasks()

    # -- tasks -----------------------------------------------------------------------------------
    def _sample_params(self, rng: np.random.Generator) -> tuple[tuple[str, ParamValue], ...]:
        params = self._sample(rng)
        if not isinstance(params, Mapping) or not all(isinstance(k, str) for k in params):
            raise TypeError(
                f"sample_task {self._sample_path} must return a dict of parameter name -> value, got {params!r}"
            )
        try:
            return Task.make(self.name, "train", self.families[0], 0, params).params
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"sample_task {self._sample_path} returned an unusable task: {exc}") from exc

    def _draw_tasks(self) -> dict[Split, list[Task]]:
        """Both fixed lists: train first, then test, each from its own stream; duplicates redrawn."""
        seen: set[tuple[tuple[str, ParamValue], ...]] = set()
        out: dict[Split, list[Task]] = {}
        split: Split
        for split, n in (("train", self.num_train), ("test", self.num_test)):
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, _SPLIT_STREAM[split]]))
            tasks: list[Task] = []
            max_draws = 10 * n + 100
            draws = 0
            while len(tasks) < n:
                if draws == max_draws:
                    raise UserError(
                        f"distribution {self.name!r}: sample_task {self._sample_path} gave only {len(seen)} distinct "
                        f"tasks in {draws} draws for the {split!r} split; it must yield num_train + num_test = "
                        f"{self.num_train + self.num_test} distinct tasks (lower num_train/num_test or sample from a "
                        "larger set)"
                    )
                draws += 1
                params = self._sample_params(rng)
                if params in seen:
                    continue
                seen.add(params)
                tasks.append(Task(self.name, split, self.families[0], len(tasks), params))
            out[split] = tasks
        return out

    def _build_tasks(self, split: Split) -> list[Task]:
        return list(self._tasks[split])

    # -- envs ------------------------------------------------------------------------------------
    def _factory_horizon(self) -> int | None:
        env = self._make()
        try:
            return None if env.spec is None else env.spec.max_episode_steps
        finally:
            env.close()

    def _make(self) -> gym.Env[Any, Any]:
        if self._env_id is not None:
            horizon = self.max_episode_steps if self._explicit_horizon else None
            return gym.make(self._env_id, max_episode_steps=horizon, **self.env_kwargs)
        if self._factory is None:
            raise RuntimeError("internal error: a custom family has neither an env id nor a factory")
        env = self._factory(**self.env_kwargs)
        if not isinstance(env, gym.Env):
            raise TypeError(f"env factory {self._env_ref} returned {type(env).__name__}, not a gymnasium.Env")
        return env

    def make_env(self, family: str) -> gym.Env[Any, Any]:
        if family not in self.families:
            raise UserError(f"unknown family {family!r} for {self.name!r}; valid: {list(self.families)}")
        return self._make()

    def set_task(self, env: gym.Env[Any, Any], task: Task) -> None:
        self.validate_task(task)
        self._apply(env, dict(task.params))

    @property
    def spec(self) -> DistributionSpec:
        return DistributionSpec.of(
            GymTaskDistribution,
            name=self.name,
            env=self._env_ref,
            sample_task=self._sample_path,
            apply_task=self._apply_path,
            num_train=self.num_train,
            num_test=self.num_test,
            seed=self.seed,
            max_episode_steps=self.max_episode_steps,
            family=self.families[0],
            env_kwargs=tuple(sorted(self.env_kwargs.items())),  # a tuple keeps the spec hashable
        )
