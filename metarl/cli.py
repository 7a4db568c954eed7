"""The ``metarl`` command line.  Thin: parses arguments, calls the Python API, prints results.

User errors (bad names, bad values, missing files) print one line on stderr and exit with code 2;
set ``METARL_DEBUG=1`` to see the traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

EXIT_USER_ERROR = 2


class UserError(Exception):
    """An error caused by the user's input; printed as one line."""


def _table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    cells = [[str(r.get(key, "")) for key, _ in columns] for r in rows]
    widths = [max([len(title)] + [len(c[i]) for c in cells]) for i, (_, title) in enumerate(columns)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*(title for _, title in columns)), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*c) for c in cells]
    return "\n".join(line.rstrip() for line in lines)


def _family_summary(families: list[str]) -> str:
    if len(families) <= 2:
        return ", ".join(families)
    return f"{len(families)} classes"


def cmd_envs_list(args: argparse.Namespace) -> int:
    from metarl.envs import list_distributions, make_distribution

    names = list_distributions()
    if args.filter:
        names = [n for n in names if args.filter.lower() in n.lower()]
        if not names:
            raise UserError(f"no distribution name contains {args.filter!r}; run `metarl envs list` for all")
    rows = []
    for name in names:
        try:
            row = make_distribution(name).describe()
        except Exception as exc:  # a broken plug-in must not hide the others
            row = {"name": name, "notes": f"cannot be built: {type(exc).__name__}: {exc}"}
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        if "families" in row:
            row["families_short"] = _family_summary(row["families"])
        if row.get("overlapping_splits"):
            row["notes"] = (row.get("notes") or "train and test splits overlap").strip()
    print(
        _table(
            rows,
            [
                ("name", "name"),
                ("train_tasks", "train"),
                ("test_tasks", "test"),
                ("families_short", "families"),
                ("obs_dim", "obs"),
                ("action_dim", "act"),
                ("horizon", "horizon"),
                ("source", "source"),
            ],
        )
    )
    notes = [(r["name"], r["notes"]) for r in rows if r.get("notes")]
    if notes:
        print("\nNotes:")
        for name, note in notes:
            print(f"  {name}: {note}")
    return 0


def cmd_rollout(args: argparse.Namespace) -> int:
    """Roll a random (or zero) policy on held-out tasks through the rollout engine; print per-task figures."""
    import numpy as np

    from metarl.envs import make_distribution
    from metarl.policies import RandomPolicy
    from metarl.rollout import RolloutEngine

    if args.episodes <= 0 or args.tasks <= 0 or args.workers <= 0:
        raise UserError("--episodes, --tasks and --workers must be positive integers")
    dist = make_distribution(args.benchmark, seed=args.seed)
    tasks = dist.sample(args.tasks, args.split, rng=np.random.default_rng(args.seed))
    policy = RandomPolicy(dist.action_space)
    with RolloutEngine(dist, num_workers=args.workers, seed=args.seed, backend=args.backend) as engine:
        traj = engine.collect(policy, tasks, episodes_per_task=args.episodes)
    returns = traj.episode_returns.mean(dim=1)
    success = traj.episode_success.float().mean(dim=1)
    rows = [
        {"task": t.id, "return": f"{float(r):.2f}", "success": f"{float(s):.2f}"}
        for t, r, s in zip(traj.tasks, returns, success, strict=True)
    ]
    print(_table(rows, [("task", "task"), ("return", "mean return"), ("success", "success rate")]))
    print(
        f"\n{traj.num_steps} env steps, {len(tasks)} {args.split} task(s) x {args.episodes} episode(s); "
        f"random policy: mean return {float(returns.mean()):.2f}, success {float(success.mean()):.2f}"
    )
    return 0


def _agent_from_argv(argv: Sequence[str]) -> str | None:
    """The AGENT of ``metarl train AGENT ...`` (needed before parsing, to add its flags)."""
    args = list(argv)
    if len(args) >= 2 and args[0] == "train" and not args[1].startswith("-"):
        return args[1]
    if "--config" in args[:-1]:
        from metarl.agents.configs import NAMED_CONFIGS

        cfg = NAMED_CONFIGS.get(args[args.index("--config") + 1])
        return cfg.train.agent if cfg else None
    return None


def _agent_sections(agent: str | None) -> list[type]:
    """The dataclasses whose fields become flags for ``agent`` (nested configs flattened)."""
    import dataclasses

    from metarl.agents import AGENTS, agent_config_class

    if agent is None or agent not in AGENTS:
        return []
    top = agent_config_class(agent)
    nested = [f.default.__class__ for f in dataclasses.fields(top) if dataclasses.is_dataclass(f.default)]
    return [top, *nested]


def _add_train_parser(sub: Any, agent: str | None) -> None:
    import dataclasses

    from metarl.agents import AGENTS
    from metarl.config import TrainConfig, add_dataclass_flags

    train = sub.add_parser(
        "train",
        help="meta-train an agent (`metarl train rl2 --config rl2-point-nav`)",
        description="Meta-train an agent. Flags override the named config's fields.",
    )
    train.add_argument("agent", nargs="?", help=f"agent to train: one of {sorted(AGENTS)}")
    train.add_argument("--config", default=None, help="named reference config (see `metarl configs`)")
    train.add_argument("--out", default=None, help="run directory (default: runs/CONFIG-TIMESTAMP)")
    train.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    train.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue a run from its latest checkpoint")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_dataclass_flags(train, TrainConfig, title="training", skip=("agent",))
    for section in _agent_sections(agent):
        nested = {f.name for f in dataclasses.fields(section) if dataclasses.is_dataclass(f.default)}
        add_dataclass_flags(train, section, title=f"{agent}: {section.__name__}", skip=tuple(nested))
    train.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    import dataclasses

    from metarl.agents.configs import default_config, get_config
    from metarl.config import TrainConfig, overrides_from_args, replace_checked
    from metarl.training import resume, train

    progress = not args.no_progress
    train_overrides = overrides_from_args(args, TrainConfig)
    if args.resume:
        allowed = {"total_env_steps", "iterations", "max_minutes"}
        extra = sorted(set(train_overrides) - allowed)
        if extra or args.agent or args.config:
            given = extra + (["agent"] if args.agent else []) + (["--config"] if args.config else [])
            raise UserError(f"--resume continues a run as configured; only budgets can change, but got {given}")
        run_dir = resume(args.resume, progress=progress, **train_overrides)
        print(f"run continued in {run_dir}")
        return 0
    if args.config is None and args.agent is None:
        raise UserError("name an agent (`metarl train rl2`) or a config (`--config rl2-point-nav`)")
    named = get_config(args.config) if args.config else default_config(args.agent)
    if args.agent and named.train.agent != args.agent:
        raise UserError(f"config {named.name!r} is for agent {named.train.agent!r}, not {args.agent!r}")
    train_cfg = replace_checked(named.train, train_overrides)
    if "benchmark" in train_overrides:  # validate the name up front, with the list of valid ones
        from metarl.envs import canonical_name

        train_cfg = dataclasses.replace(train_cfg, benchmark=canonical_name(train_cfg.benchmark))
    agent_cfg = named.agent
    for section in _agent_sections(train_cfg.agent):
        changes = overrides_from_args(args, section)
        if not changes:
            continue
        if section is type(agent_cfg):
            agent_cfg = replace_checked(agent_cfg, changes)
        else:
            field = next(f.name for f in dataclasses.fields(agent_cfg) if type(getattr(agent_cfg, f.name)) is section)
            agent_cfg = dataclasses.replace(agent_cfg, **{field: replace_checked(getattr(agent_cfg, field), changes)})
    run_dir = train(
        train_cfg, agent_cfg, out=args.out, config_name=named.name, overwrite=args.overwrite, progress=progress
    )
    print(f"run saved in {run_dir}")
    return 0


def cmd_configs(args: argparse.Namespace) -> int:
    from metarl.agents.configs import NAMED_CONFIGS

    rows = []
    for cfg in NAMED_CONFIGS.values():
        budget = f"{cfg.train.total_env_steps:,} steps" if cfg.train.total_env_steps else f"{cfg.train.iterations} it"
        rows.append(
            {"name": cfg.name, "agent": cfg.train.agent, "benchmark": cfg.train.benchmark,
             "budget": budget, "description": cfg.description}
        )  # fmt: skip
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    cols = [("name", "name"), ("agent", "agent"), ("benchmark", "benchmark"), ("budget", "budget"), ("description", "")]
    print(_table(rows, cols))
    return 0


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    from metarl import __version__

    parser = argparse.ArgumentParser(prog="metarl", description="Meta-reinforcement learning on robot control.")
    parser.add_argument("--version", action="version", version=f"metarl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    envs = sub.add_parser("envs", help="task distributions")
    envs_sub = envs.add_subparsers(dest="envs_command", metavar="SUBCOMMAND")
    envs_sub.required = True
    lst = envs_sub.add_parser("list", help="list every task distribution (name, task counts, dims, horizon, source)")
    lst.add_argument("--json", action="store_true", help="print JSON instead of a table")
    lst.add_argument("--filter", default=None, help="only names containing this text (case-insensitive)")
    lst.set_defaults(func=cmd_envs_list)

    roll = sub.add_parser("rollout", help="roll a random policy on held-out tasks through the rollout engine")
    roll.add_argument("--benchmark", default="ML1-reach-v3", help="distribution name (see `metarl envs list`)")
    roll.add_argument("--split", default="test", choices=["train", "test"], help="which task split")
    roll.add_argument("--tasks", type=int, default=2, help="number of tasks, sampled class-balanced")
    roll.add_argument("--episodes", type=int, default=1, help="episodes per task")
    roll.add_argument("--workers", type=int, default=2, help="worker processes")
    roll.add_argument("--backend", default="process", choices=["process", "inline"], help="rollout backend")
    roll.add_argument("--seed", type=int, default=0, help="seed of the task lists, sampling and the envs")
    roll.set_defaults(func=cmd_rollout)

    _add_train_parser(sub, _agent_from_argv(argv))
    configs = sub.add_parser("configs", help="list the named reference configs")
    configs.add_argument("--json", action="store_true", help="print JSON instead of a table")
    configs.set_defaults(func=cmd_configs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        print("metarl: interrupted", file=sys.stderr)
        return 130
    except (UserError, ValueError, FileNotFoundError) as exc:
        if os.environ.get("METARL_DEBUG"):
            raise
        print(f"metarl: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
