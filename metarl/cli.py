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

from metarl.errors import UserError
from metarl.stops import Terminated

EXIT_USER_ERROR = 2


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
    from metarl.rollout import RolloutEngine
    from metarl.rollout.policies import RandomPolicy

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


def _train_target(argv: Sequence[str]) -> tuple[str | None, str | None]:
    """The AGENT and ``--config`` NAME of ``metarl train AGENT --config NAME ...``, needed before parsing: the
    agent's flags are added to the parser, with the config's values as their defaults in help."""
    args = list(argv)
    agent = args[1] if len(args) >= 2 and args[0] == "train" and not args[1].startswith("-") else None
    config = args[args.index("--config") + 1] if "--config" in args[:-1] else None
    if agent is None and config is not None:
        from metarl.agents.configs import NAMED_CONFIGS

        named = NAMED_CONFIGS.get(config)
        agent = named.train.agent if named else None
    return agent, config


def _add_train_parser(sub: Any, argv: Sequence[str]) -> None:
    from metarl.agents import AGENTS
    from metarl.overrides import add_config_flags, shown_config

    train = sub.add_parser(
        "train",
        help="meta-train an agent (`metarl train rl2 --config rl2-point-nav`)",
        description="Meta-train an agent. Flags override the named config's fields; help shows its values.",
    )
    train.add_argument("agent", nargs="?", help=f"agent to train: one of {sorted(AGENTS)}")
    train.add_argument("--config", default=None, help="named reference config (see `metarl configs`)")
    train.add_argument("--out", default=None, help="run directory (default: runs/CONFIG-TIMESTAMP)")
    train.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    train.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue a run from its latest checkpoint")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        metavar="S",
        help="train one run per seed, under OUT/seed-S (then `metarl compare OUT`)",
    )
    train.add_argument("--jobs", type=int, default=1, help="with --seeds: runs at a time, each in its own process")
    agent, config = _train_target(argv)
    shown = shown_config(agent, config) if "-h" in argv or "--help" in argv else None
    add_config_flags(train, agent, shown)
    train.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    from metarl.config import TrainConfig, overrides_from_args
    from metarl.overrides import apply_overrides, named_config
    from metarl.training import resume, train, train_seeds

    progress = not args.no_progress
    if args.resume:
        train_overrides = overrides_from_args(args, TrainConfig)
        extra = sorted(set(train_overrides) - {"total_env_steps", "iterations", "max_minutes"})
        if args.seeds:
            raise UserError("--resume continues one run; resume each seed's run directory on its own")
        if extra or args.agent or args.config:
            given = extra + (["agent"] if args.agent else []) + (["--config"] if args.config else [])
            raise UserError(f"--resume continues a run as configured; only budgets can change, but got {given}")
        print(f"run continued in {resume(args.resume, progress=progress, **train_overrides)}")
        return 0
    named = named_config(args.agent, args.config)
    train_cfg, agent_cfg = apply_overrides(named, args)
    if args.seeds:
        root, run_dirs = train_seeds(train_cfg, agent_cfg, args.seeds, out=args.out, config_name=named.name,
                                     jobs=args.jobs, overwrite=args.overwrite, progress=progress)  # fmt: skip
        for run_dir in run_dirs:
            print(f"run saved in {run_dir}")
        print(f"compare them with: metarl compare {root} --out {root / 'compare'}")
        return 0
    run_dir = train(
        train_cfg, agent_cfg, out=args.out, config_name=named.name, overwrite=args.overwrite, progress=progress
    )
    print(f"run saved in {run_dir}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """IQM and mean with 95% bootstrap intervals across runs; Markdown and PNGs in --out."""
    from pathlib import Path

    from metarl.evaluation.compare import compare

    paths = [Path(p) for p in args.paths]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise UserError(f"no such run directory or result file: {missing}")
    written = compare(paths, Path(args.out), reps=args.reps, seed=args.seed, latest=args.latest,
                      say=lambda note: print(f"note: {note}"))  # fmt: skip
    for path in written:
        print(f"wrote {path}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Meta-test a trained run on held-out tasks; write the EvalResult JSON, report.md and PNGs."""
    from pathlib import Path

    from metarl.evaluation.runner import EvalSettings, evaluate_and_write

    settings = EvalSettings(
        split=args.split, adaptation_episodes=args.adaptation_episodes, eval_episodes=args.eval_episodes,
        tasks_per_family=args.tasks_per_family, deterministic=args.deterministic, seed=args.seed,
        workers=args.workers, untrained=args.untrained, feedback=not args.no_feedback,
    )  # fmt: skip
    result, written, problem = evaluate_and_write(
        Path(args.run_dir), settings, checkpoint=Path(args.checkpoint) if args.checkpoint else None,
        json_path=Path(args.json) if args.json else None, video_dir=Path(args.video) if args.video else None,
    )  # fmt: skip
    if problem:
        print(f"metarl: {problem}", file=sys.stderr)
    unit = result.curve["unit"].replace("_", " ")
    print(
        f"{result.agent} on {len(result.per_task)} {result.split} task(s) of {result.distribution}: "
        f"success {result.success_mean:.3f}, return {result.return_mean:.2f} "
        f"(after {result.curve['x'][-1]} {unit}; {result.eval_episodes_per_task} evaluation episodes per task)"
    )
    for path in written:
        print(f"wrote {path}")
    return 0


def cmd_configs(args: argparse.Namespace) -> int:
    from metarl.agents.configs import NAMED_CONFIGS

    if args.name is not None:
        return _show_config(args.name, args.json)
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


def _show_config(name: str, as_json: bool) -> int:
    """``metarl configs NAME``: every setting of one named config, as the flag that overrides it and its value."""
    from metarl.agents.configs import get_config
    from metarl.config import to_dict
    from metarl.overrides import config_settings

    named = get_config(name)
    if as_json:
        print(json.dumps({"name": named.name, "description": named.description, "train": to_dict(named.train),
                          "agent": to_dict(named.agent)}, indent=2))  # fmt: skip
        return 0
    print(f"{named.name}: {named.description}")
    print(f"metarl train {named.train.agent} --config {named.name} runs with these settings; a flag overrides one")
    for title, settings in config_settings(named):
        print(f"\n{title}:")
        print("\n".join(f"  {flag:<28} {'not set' if value == 'None' else value}" for flag, value in settings))
    return 0


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    from metarl import __version__
    from metarl.cli_baseline import add_baseline_parser

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

    _add_train_parser(sub, argv)
    ev = sub.add_parser(
        "eval",
        help="meta-test a trained run on held-out tasks (JSON, report.md, PNGs in RUN_DIR/eval/)",
        description="Meta-test a trained run: for each task a fresh adaptation, then exactly N evaluation episodes.",
    )
    ev.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by `metarl train`")
    ev.add_argument("--split", default="test", choices=["test", "train"], help="which tasks (default: held-out)")
    ev.add_argument(
        "--adaptation-episodes",
        type=int,
        metavar="K",
        help="adaptation episodes per task (Meta-World default 10, else the run's)",
    )
    ev.add_argument(
        "--eval-episodes",
        type=int,
        metavar="N",
        help="evaluation episodes per task (Meta-World default 3, else the run's)",
    )
    ev.add_argument(
        "--tasks-per-family",
        type=int,
        metavar="M",
        help="evaluate M tasks per family, drawn with --seed (default: all tasks)",
    )
    mode = ev.add_mutually_exclusive_group()
    mode.add_argument(
        "--deterministic",
        action="store_true",
        default=None,
        help="evaluation episodes take the mean action (adaptation episodes stay sampled, as they explore); "
        "the default on Meta-World, whose protocol it is",
    )
    mode.add_argument(
        "--sampled",
        dest="deterministic",
        action="store_false",
        help="evaluation episodes sample their actions (the default outside Meta-World)",
    )
    ev.add_argument(
        "--no-feedback",
        action="store_true",
        help="the adaptation control: RL² sees reward 0 throughout the trial (JSON key feedback: false); "
        "MAML's control is its curve's point 0",
    )
    ev.add_argument("--seed", type=int, default=0, help="seed of the task subsample, env resets and action noise")
    ev.add_argument("--checkpoint", default=None, metavar="PATH", help="a checkpoint file (default: the latest)")
    ev.add_argument(
        "--json",
        metavar="PATH",
        help="write the EvalResult here (default: RUN_DIR/eval/final.json; with --no-feedback "
        "RUN_DIR/eval/no-feedback.json)",
    )
    ev.add_argument("--workers", type=int, default=None, help="rollout workers (default: the run's)")
    ev.add_argument(
        "--video",
        metavar="DIR",
        help="also record one evaluation episode per task as a GIF in DIR (needs an OpenGL backend)",
    )
    ev.add_argument(
        "--untrained",
        action="store_true",
        help="evaluate a freshly initialised agent of the run's config instead (the 'untrained' baseline)",
    )
    ev.set_defaults(func=cmd_eval)

    cmp = sub.add_parser(
        "compare",
        help="compare evaluated runs: IQM and mean with 95%% bootstrap CIs, Markdown and PNGs",
        description="Compare runs (run dirs, their parents, or EvalResult JSON files) per benchmark and agent.",
    )
    cmp.add_argument("paths", nargs="+", metavar="RUN_DIR", help="run directories, parents of runs, or result JSONs")
    cmp.add_argument("--out", required=True, metavar="DIR", help="where compare.md and the PNGs go")
    cmp.add_argument("--reps", type=int, default=2000, help="bootstrap replicates")
    cmp.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    cmp.add_argument(
        "--latest",
        action="store_true",
        help="a run directory without eval/final.json is read from its last periodic evaluation (eval/latest.json) "
        "instead of refused; compare says which",
    )
    cmp.set_defaults(func=cmd_compare)

    add_baseline_parser(sub)

    configs = sub.add_parser("configs", help="list the named reference configs, or every setting of one")
    configs.add_argument("name", nargs="?", metavar="NAME", help="a named config: print every setting it holds")
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
    except Terminated as exc:
        print(f"metarl: {exc}", file=sys.stderr)
        return Terminated.exit_code
    except UserError as exc:  # the user's input: one line; anything else is a bug and keeps its traceback
        if os.environ.get("METARL_DEBUG"):
            raise
        print(f"metarl: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
