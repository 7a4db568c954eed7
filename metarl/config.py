"""Frozen configuration dataclasses, their field docstrings, named reference configs, and CLI flags
generated from them.

A config names its agent and benchmark (``rl2-ml10``), so ``metarl train rl2 --config rl2-ml10``
needs nothing else; flags override fields.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import itertools
import math
import os
import textwrap
import types
import typing
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any, TypeVar

from metarl.errors import UserError, check_int_field, check_number

T = TypeVar("T")


Backend = typing.Literal["process", "inline", "ray"]
"""Rollout backends: worker processes, every env in the driver, or Ray actors."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """What every training run needs, whatever the agent."""

    agent: str = "rl2"
    """Agent to train (see `metarl configs`)."""
    benchmark: str = "point-nav"
    """Task distribution (see `metarl envs list`)."""
    seed: int = 0
    """Seed of the task lists, task sampling, networks and envs."""
    max_episode_steps: int | None = None
    """Episode horizon, for distributions whose factory takes one (point-nav, cheetah-*, ant-dir);
    default: the distribution's own."""
    env_success_reward: float = 0.0
    """Meta-World only (the distribution's ``success_reward`` option): added to the env reward at every
    successful step, so the agent both sees success in its reward input and learns from it; held-out success
    is counted as before, returns include it (0: Meta-World's reward)."""
    total_env_steps: int | None = None
    """Training budget in env steps (pre- and post-adaptation included, evaluation excluded);
    training stops at the first iteration boundary at or past it."""
    iterations: int | None = None
    """Training budget in meta-iterations."""
    max_minutes: float | None = None
    """Wall-clock budget; the run checkpoints and stops at the first iteration boundary past it."""
    meta_batch: int = 10
    """Tasks sampled per meta-iteration."""
    episodes_per_task: int = 10
    """Episodes collected per task per meta-iteration (MAML family: per rollout phase, i.e. before
    each inner step and after adaptation)."""
    repeat_tasks: bool = False
    """Allow a meta-batch larger than the train split: tasks then repeat within a meta-batch, each
    copy with its own episodes (as ProMP and learn2learn do on HalfCheetah forward/backward)."""
    workers: int | None = None
    """Rollout worker processes (default: the cores this process may use, ``os.sched_getaffinity``)."""
    slots_per_family: int | None = None
    """Env slots per env family in the rollout engine; default: one per task of a meta-batch."""
    backend: Backend = "process"
    """Rollout backend: process, inline, or ray (Ray actors, each with its own worker processes)."""
    ray_address: str | None = None
    """With --backend ray: the cluster to join (auto, or HOST:PORT); default: a local Ray on 127.0.0.1."""
    ray_actors: int | None = None
    """With --backend ray: actors, each running --workers worker processes (default: Ray CPUs / workers)."""
    device: str = "auto"
    """Device of the policy and its updates: auto, cpu or cuda."""
    torch_threads: int | None = None
    """Threads for the learner's torch ops on CPU (default: the cores this process may use; sampling
    drops to one inference thread and gives them back).  Exact resume holds for the same count."""
    overlap: bool = False
    """Sample the next iteration's batch in a background thread while the learner updates (one iteration of
    policy lag; PPO agents only).  Pays where the cores outnumber the rollout workers plus learner threads;
    off by default until a learning run shows no loss."""
    checkpoint_every: int = 10
    """Write a checkpoint every this many iterations (and always at exit)."""
    eval_every: int = 10
    """Run a meta-test on held-out tasks every this many iterations (0 = never during training)."""
    eval_tasks: int = 10
    """Held-out tasks per periodic meta-test (class-balanced, fixed across the run)."""
    eval_episodes: int = 3
    """Evaluation episodes per task after adaptation in periodic meta-tests."""
    adaptation_episodes: int = 2
    """Adaptation episodes per task in periodic meta-tests."""

    def __post_init__(self) -> None:
        positive = ("meta_batch", "episodes_per_task", "checkpoint_every")
        for name in (*positive, "eval_tasks", "eval_episodes"):
            check_int_field(self, name)
        for name in ("eval_every", "adaptation_episodes", "seed"):
            check_int_field(self, name, 0)
        optional = ("total_env_steps", "iterations", "slots_per_family", "max_episode_steps", "ray_actors")
        for name in (*optional, "workers", "torch_threads"):
            if getattr(self, name) is not None:
                check_int_field(self, name)
        check_number("env_success_reward", self.env_success_reward, 0.0, 1e6)
        if self.max_minutes is not None and not (math.isfinite(self.max_minutes) and self.max_minutes > 0):
            raise UserError(f"max_minutes must be a positive number, got {self.max_minutes!r}")
        for name in ("repeat_tasks", "overlap"):
            if not isinstance(getattr(self, name), bool):
                raise UserError(f"{name} must be true or false, got {getattr(self, name)!r}")
        check_choice("backend", self.backend, typing.get_args(Backend))
        check_choice("device", self.device, ("auto", "cpu", "cuda"), prefix_ok=("cuda:",))


def available_cores() -> int:
    """CPUs this process may run on (``os.sched_getaffinity``; ``os.cpu_count()`` over-counts in containers
    and under taskset)."""
    if hasattr(os, "sched_getaffinity"):
        return max(len(os.sched_getaffinity(0)), 1)
    return os.cpu_count() or 1  # pragma: no cover - macOS, Windows


def rollout_workers(cfg: TrainConfig) -> int:
    """``cfg.workers``, or one worker process per available core."""
    return cfg.workers if cfg.workers is not None else available_cores()


def learner_threads(cfg: TrainConfig) -> int:
    """``cfg.torch_threads``, or one learner thread per available core."""
    return cfg.torch_threads if cfg.torch_threads is not None else available_cores()


def host_worker_default(workers: int, cores: int) -> bool:
    """Whether the driver steps worker 0's envs itself: when it has no core of its own (as many workers as
    cores, at least two), so that no two busy processes share a core; with a spare core, every env stays in
    a worker process and the driver only runs the policy."""
    return workers >= 2 and workers >= cores


def check_choice(name: str, value: object, valid: tuple[str, ...], prefix_ok: tuple[str, ...] = ()) -> str:
    if not isinstance(value, str) or (value not in valid and not value.startswith(prefix_ok)):
        raise UserError(f"unknown {name} {value!r}; choose one of {sorted(valid)}")
    return value


# -- field docstrings ------------------------------------------------------------------------


@cache
def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings (the string literal under each field) of a dataclass, by field name."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body  # type: ignore[attr-defined]
        for node, nxt in itertools.pairwise(body):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _base_type(annotation: Any) -> tuple[Any, bool]:
    """(inner type, optional?) of ``X | None`` / ``Optional[X]`` / ``X``."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def _parser_for(tp: Any, name: str) -> Callable[[str], Any]:
    if typing.get_origin(tp) is typing.Literal:  # the choices are checked by the dataclass, naming them
        return type(typing.get_args(tp)[0])
    if tp is bool:
        return _parse_bool
    if tp in (int, float, str):
        return tp
    raise TypeError(f"config field {name!r} has unsupported type {tp!r}")


def _parse_bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _resolved_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def flag_name(field: str) -> str:
    """The command-line flag of a config field: ``meta_batch`` -> ``--meta-batch``."""
    return "--" + field.replace("_", "-")


def add_dataclass_flags(
    parser: argparse.ArgumentParser, cls: type, *, title: str, skip: tuple[str, ...] = (), values: Any = None
) -> None:
    """Add ``--field-name`` flags for every field of ``cls`` (defaults are ``None`` = not given).

    Help shows the field values of ``values`` (an instance of ``cls``, say a named config's section) as the
    defaults, for they are what a run gets without the flag; without it, the class's own defaults.
    """
    group = parser.add_argument_group(title)
    docs = field_docs(cls)
    hints = _resolved_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        tp, optional = _base_type(hints[f.name])
        if values is not None:
            default = getattr(values, f.name)
        else:
            default = f.default if f.default is not dataclasses.MISSING else None
        help_text = docs.get(f.name, "")
        shown = "" if default is None else f" (default: {show_value(default)})"
        nargs = "+" if typing.get_origin(tp) is tuple else None
        parse = typing.get_args(tp)[0] if nargs else _parser_for(tp, f.name)
        group.add_argument(
            flag_name(f.name),
            dest=f"{cls.__name__}.{f.name}",
            type=parse,
            nargs=nargs,
            default=None,
            metavar=f.name.upper() if not optional else f"{f.name.upper()}",
            help=f"{help_text}{shown}".replace("%", "%%"),
        )


def show_value(value: Any) -> str:
    """A config value as a user writes it after its flag (tuples space-separated)."""
    if isinstance(value, tuple):
        return " ".join(map(str, value))
    return str(value)


def overrides_from_args(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of ``cls`` given on the command line."""
    prefix = f"{cls.__name__}."
    out: dict[str, Any] = {}
    for key, value in vars(args).items():
        if key.startswith(prefix) and value is not None:
            name = key[len(prefix) :]
            out[name] = tuple(value) if isinstance(value, list) else value
    return out


def replace_checked(obj: T, changes: Mapping[str, Any]) -> T:
    """``dataclasses.replace`` that names unknown fields and the valid ones."""
    valid = {f.name for f in dataclasses.fields(obj)}  # type: ignore[arg-type]
    unknown = sorted(set(changes) - valid)
    if unknown:
        raise UserError(f"unknown config field(s) {unknown} for {type(obj).__name__}; valid: {sorted(valid)}")
    return dataclasses.replace(obj, **changes)  # type: ignore[type-var]


def to_dict(obj: Any) -> Any:
    """Dataclass → JSON-compatible dict (tuples become lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple):
        return [to_dict(v) for v in obj]
    return obj


@dataclasses.dataclass(frozen=True)
class RemovedField:
    """A config field that a run's ``config.json`` may still hold after the field left the code.

    ``default`` is the field's old default in :func:`to_dict` form: the setting the code still computes, so a
    saved value equal to it loads and means what it meant.  Any other value is refused, naming ``commit``, the
    last commit that had the field (a run that set it trains and evaluates there).  ``ignored`` marks a field
    that never affected this config's agent (say, a TRPO setting saved in a MAML-PPO run): any value loads.
    """

    default: Any
    commit: str
    ignored: bool = False


_REMOVED: dict[type, dict[str, RemovedField]] = {}


def removed_fields(**fields: RemovedField) -> Callable[[type[T]], type[T]]:
    """Class decorator: the fields that old ``config.json`` files of this config class may still hold."""

    def register(cls: type[T]) -> type[T]:
        _REMOVED[cls] = dict(fields)
        return cls

    return register


def removed_field(cls: type, name: str) -> RemovedField | None:
    """The record of ``name`` as a removed field of ``cls`` (or of a base class), if it is one."""
    for klass in cls.__mro__:
        found = _REMOVED.get(klass, {}).get(name)
        if found is not None:
            return found
    return None


def _drop_removed(cls: type, data: Mapping[str, Any], where: str) -> dict[str, Any]:
    valid = {f.name for f in dataclasses.fields(cls)}
    kept: dict[str, Any] = {}
    unknown = []
    for name, value in data.items():
        if name in valid:
            kept[name] = value
            continue
        record = removed_field(cls, name)
        if record is None:
            unknown.append(name)
        elif not record.ignored and value != record.default:
            raise UserError(
                f"{where}{cls.__name__}.{name} = {value!r}: this setting was removed; only its old default "
                f"{record.default!r} still loads (run this config at commit {record.commit}, the last with it)"
            )
    if unknown:
        raise UserError(f"{where}unknown config field(s) {sorted(unknown)} for {cls.__name__}; valid: {sorted(valid)}")
    return kept


def from_dict(cls: type[T], data: Mapping[str, Any], *, where: str = "") -> T:
    """Inverse of :func:`to_dict` for (nested) frozen dataclasses.

    Fields the code no longer has (see :class:`RemovedField`) load when they hold their old default and are
    refused, naming the last commit that had them, when they do not; ``where`` (say, the file's path) starts
    the messages.
    """
    prefix = f"{where}: " if where else ""
    if not isinstance(data, Mapping):
        raise UserError(f"{prefix}expected a mapping for {cls.__name__}, got {type(data).__name__}")
    hints = _resolved_hints(cls)
    kwargs: dict[str, Any] = {}
    for name, value in _drop_removed(cls, data, prefix).items():
        tp, _ = _base_type(hints[name])
        if dataclasses.is_dataclass(tp):
            kwargs[name] = from_dict(tp, value, where=where)  # type: ignore[arg-type]
        elif typing.get_origin(tp) is tuple and isinstance(value, list):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)
