"""A named config with field flags on top: the flags generated from an agent's config dataclasses, the merging of
the given ones into a named config, and every setting of a named config as the flag that overrides it.

``metarl train`` is built on these, and so can any other entry point that takes the same flags: one override
syntax everywhere.  A flag is a field's name with dashes (``--meta-batch``, ``--clip-eps``); the fields of an
agent config's nested sections (RL²'s ``policy`` and ``ppo``) are flattened, so each flag names one field.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any, TypeVar

from metarl.config import TrainConfig, add_dataclass_flags, flag_name, overrides_from_args, replace_checked, show_value
from metarl.errors import UserError

T = TypeVar("T")

TRAIN_TITLE = "training"
"""The title of the :class:`TrainConfig` flags in help and in :func:`config_settings`."""


def agent_sections(agent: str | None) -> list[type]:
    """The dataclasses whose fields become flags for ``agent`` (its config, then the nested ones); none for an
    unknown agent (naming it is refused where the command runs, with the valid names)."""
    from metarl.agents import AGENTS, agent_config_class

    if agent is None or agent not in AGENTS:
        return []
    top = agent_config_class(agent)
    nested = [f.default.__class__ for f in dataclasses.fields(top) if dataclasses.is_dataclass(f.default)]
    return [top, *nested]


def _nested_fields(section: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(section) if dataclasses.is_dataclass(f.default))


def _section_value(agent_cfg: Any, section: type) -> Any:
    """The instance of ``section`` inside ``agent_cfg``: the config itself, or its nested field of that type."""
    return agent_cfg if section is type(agent_cfg) else getattr(agent_cfg, _section_field(agent_cfg, section))


def _section_field(agent_cfg: Any, section: type) -> str:
    """The field of ``agent_cfg`` that holds its nested section ``section``."""
    return next(f.name for f in dataclasses.fields(agent_cfg) if type(getattr(agent_cfg, f.name)) is section)


def add_config_flags(parser: argparse.ArgumentParser, agent: str | None, named: Any = None) -> None:
    """``--field`` flags for every :class:`TrainConfig` field but ``agent`` and every field of ``agent``'s config.

    Help shows the values of the named config ``named`` as the defaults (what a run of it gets without the flag),
    else the dataclasses' own defaults.
    """
    note = f" (defaults: config {named.name})" if named is not None else ""
    shown = named.train if named is not None else None
    add_dataclass_flags(parser, TrainConfig, title=TRAIN_TITLE + note, skip=("agent",), values=shown)
    add_agent_flags(parser, agent, shown=named.agent if named is not None else None, note=note)


def add_agent_flags(parser: argparse.ArgumentParser, agent: str | None, shown: Any = None, note: str = "") -> None:
    """``--field`` flags for every field of ``agent``'s config and its nested sections.

    Help shows the values of ``shown`` (an instance of the agent's config, say a named config's) as the defaults,
    else the dataclasses' own defaults; ``note`` ends each group's title.
    """
    for section in agent_sections(agent):
        values = _section_value(shown, section) if shown is not None else None
        title = f"{agent}: {section.__name__}{note}"
        add_dataclass_flags(parser, section, title=title, skip=_nested_fields(section), values=values)


def apply_agent_overrides(agent: str, agent_cfg: T, args: argparse.Namespace) -> T:
    """``agent_cfg`` (a config of ``agent``) with the fields given as flags in ``args`` replaced, nested sections
    included; unknown fields are refused, naming the valid ones."""
    for section in agent_sections(agent):
        changes = overrides_from_args(args, section)
        if not changes:
            continue
        if section is type(agent_cfg):
            agent_cfg = replace_checked(agent_cfg, changes)
        else:
            field = _section_field(agent_cfg, section)
            replaced = replace_checked(getattr(agent_cfg, field), changes)
            agent_cfg = dataclasses.replace(agent_cfg, **{field: replaced})  # type: ignore[type-var]
    return agent_cfg


def agent_override_strings(agent: str, agent_cfg: Any, args: argparse.Namespace) -> list[str]:
    """The agent field flags given in ``args`` as ``FIELD=VALUE`` (nested fields dotted: ``ppo.target_kl=0.02``),
    the notation result JSONs record; ``agent_cfg`` is the config the flags apply to."""
    given: list[str] = []
    for section in agent_sections(agent):
        prefix = "" if section is type(agent_cfg) else f"{_section_field(agent_cfg, section)}."
        given += [f"{prefix}{k}={v!r}" for k, v in overrides_from_args(args, section).items()]
    return given


def named_config(agent: str | None, config: str | None) -> Any:
    """The named config ``config`` (checked to be ``agent``'s when both are given), else ``agent``'s default."""
    if config is None and agent is None:
        raise UserError("name an agent (`metarl train rl2`) or a config (`--config rl2-point-nav`)")
    from metarl.agents.configs import default_config, get_config

    named = get_config(config) if config else default_config(agent)
    if agent and named.train.agent != agent:
        raise UserError(f"config {named.name!r} is for agent {named.train.agent!r}, not {agent!r}")
    return named


def shown_config(agent: str | None, config: str | None) -> Any:
    """The named config whose values ``--help`` shows as the flags' defaults: the one :func:`named_config` would
    train, or None where it would refuse (help then shows the dataclasses' defaults)."""
    try:
        return named_config(agent, config)
    except UserError:
        return None


def apply_overrides(named: Any, args: argparse.Namespace) -> tuple[TrainConfig, Any]:
    """The training and agent configs of the named config ``named`` with the flags given in ``args`` on top; a
    changed ``--benchmark`` is checked up front, naming the valid ones."""
    train_overrides = overrides_from_args(args, TrainConfig)
    train_cfg = replace_checked(named.train, train_overrides)
    if "benchmark" in train_overrides:
        from metarl.envs import canonical_name

        train_cfg = dataclasses.replace(train_cfg, benchmark=canonical_name(train_cfg.benchmark))
    return train_cfg, apply_agent_overrides(train_cfg.agent, named.agent, args)


def config_settings(named: Any) -> list[tuple[str, list[tuple[str, str]]]]:
    """Every setting of the named config ``named`` as ``(section title, [(flag, value), ...])``, in the sections
    of ``metarl train --help``; the training config's ``agent`` is the command's AGENT, not a flag."""
    sections: list[tuple[str, Any, tuple[str, ...]]] = [(TRAIN_TITLE, named.train, ("agent",))]
    agent = named.train.agent
    sections += [
        (f"{agent}: {s.__name__}", _section_value(named.agent, s), _nested_fields(s)) for s in agent_sections(agent)
    ]
    return [
        (
            title,
            [
                (flag_name(f.name), show_value(getattr(cfg, f.name)))
                for f in dataclasses.fields(cfg)
                if f.name not in skip
            ],
        )
        for title, cfg, skip in sections
    ]


LEARNING_TRAIN_FIELDS = (
    "benchmark", "max_episode_steps", "env_success_reward", "meta_batch", "episodes_per_task", "repeat_tasks", "overlap"
)  # fmt: skip
"""The training fields that change what a run learns (the rest set its budget, layout, device or seed)."""


def _field_values(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Every leaf field of a config dataclass, nested sections dotted (``ppo.target_kl``)."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            values.update(_field_values(value, f"{prefix}{f.name}."))
        else:
            values[f"{prefix}{f.name}"] = value
    return values


def run_overrides(train_cfg: TrainConfig, agent_cfg: Any, config_name: str | None) -> list[str] | None:
    """The settings of a run that differ from its named config's (the agent's default config when it names none),
    as ``FIELD=VALUE``, the notation of :func:`agent_override_strings`: the agent's fields and the training fields
    that change what is learned (:data:`LEARNING_TRAIN_FIELDS`). None when the named config no longer exists.

    Two runs of one named config are seeds of one thing only when this is the same for both."""
    from metarl.agents.configs import default_config, get_config

    try:
        named = get_config(config_name) if config_name else default_config(train_cfg.agent)
    except UserError:
        return None
    if named.train.agent != train_cfg.agent:
        return None
    given = {k: getattr(train_cfg, k) for k in LEARNING_TRAIN_FIELDS} | _field_values(agent_cfg)
    base = {k: getattr(named.train, k) for k in LEARNING_TRAIN_FIELDS} | _field_values(named.agent)
    return [f"{k}={v!r}" for k, v in given.items() if base[k] != v]


def recorded_overrides(run_dir: Path) -> list[str] | None:
    """:func:`run_overrides` of the run directory ``run_dir``, read from its ``config.json``; None where that file
    cannot be read as a run's config (a result-only directory, a damaged file)."""
    from metarl.run import read_run_config

    try:
        return run_overrides(*read_run_config(run_dir))
    except UserError:  # RunDirError included
        return None
