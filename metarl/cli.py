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
    from metarl.rollout.policies import RandomPolicy
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
    train.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        metavar="S",
        help="train one run per seed, under OUT/seed-S (then `metarl compare OUT`)",
    )
    train.add_argument("--jobs", type=int, default=1, help="with --seeds: runs at a time, each in its own process")
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
        if args.seeds:
            raise UserError("--resume continues one run; resume each seed's run directory on its own")
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
    if args.seeds:
        return _train_seeds(args, train_cfg, agent_cfg, named.name, progress)
    run_dir = train(
        train_cfg, agent_cfg, out=args.out, config_name=named.name, overwrite=args.overwrite, progress=progress
    )
    print(f"run saved in {run_dir}")
    return 0


def _train_one_seed(train_cfg: Any, agent_cfg: Any, out: str, config_name: str, overwrite: bool, progress: bool) -> str:
    from metarl.training import train

    return str(train(train_cfg, agent_cfg, out=out, config_name=config_name, overwrite=overwrite, progress=progress))


def _train_seeds(args: argparse.Namespace, train_cfg: Any, agent_cfg: Any, config_name: str, progress: bool) -> int:
    """``--seeds S1 S2 ...``: one run per seed under ``OUT/seed-S`` (``--jobs`` at a time, each in its own process)."""
    import dataclasses
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context
    from pathlib import Path

    from metarl.training import default_run_dir

    seeds = list(args.seeds)
    if any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds must be distinct non-negative integers, got {seeds}")
    if args.jobs <= 0:
        raise UserError(f"--jobs must be a positive integer, got {args.jobs}")
    root = Path(args.out) if args.out else default_run_dir(config_name, train_cfg.agent)
    jobs = [(dataclasses.replace(train_cfg, seed=s), root / f"seed-{s}") for s in seeds]
    if args.jobs == 1:
        done = [_train_one_seed(cfg, agent_cfg, str(out), config_name, args.overwrite, progress) for cfg, out in jobs]
    else:
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn")) as pool:
            futures = [
                pool.submit(_train_one_seed, cfg, agent_cfg, str(out), config_name, args.overwrite, False)
                for cfg, out in jobs
            ]
            done = [f.result() for f in futures]
    for run_dir in done:
        print(f"run saved in {run_dir}")
    print(f"compare them with: metarl compare {root} --out {root / 'compare'}")
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    """Non-meta-learning SB3 baselines on held-out tasks, written as an evaluated run directory."""
    from pathlib import Path

    from metarl.envs import canonical_name, make_distribution
    from metarl.evaluation.baselines import sb3_multitask, sb3_scratch
    from metarl.evaluation.report import write_eval_report
    from metarl.evaluation.runner import (
        MW_ADAPTATION_EPISODES,
        MW_EVAL_EPISODES,
        is_metaworld,
        select_tasks,
    )
    from metarl.run import EVAL_DIR, FINAL_EVAL, atomic_write_json, prepare_run_dir, run_metadata

    for name in ("total_env_steps", "tasks_per_family", "adaptation_episodes", "eval_episodes"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    if args.multitask and args.algo != "ppo":
        raise UserError(f"--multitask trains SB3 PPO; got --algo {args.algo}")
    dist = make_distribution(canonical_name(args.benchmark), seed=args.seed)
    mw = is_metaworld(dist)
    k = args.adaptation_episodes or (MW_ADAPTATION_EPISODES if mw else 10)
    n = args.eval_episodes or (MW_EVAL_EPISODES if mw else 3)
    tasks = select_tasks(dist, "test", args.tasks_per_family, args.seed)
    out = prepare_run_dir(Path(args.out), resume=False, overwrite=args.overwrite)
    settings = {
        "kind": "sb3-multitask" if args.multitask else "sb3-scratch", "algo": args.algo,
        "benchmark": dist.name, "seed": args.seed, "tasks": len(tasks), "adaptation_episodes": k,
        "eval_episodes": n, "total_env_steps": args.total_env_steps, "deterministic": not args.stochastic,
    }  # fmt: skip
    atomic_write_json(out / "config.json", {"baseline": settings})
    atomic_write_json(out / "meta.json", run_metadata())
    if args.multitask:
        steps = args.total_env_steps or 1_000_000
        result = sb3_multitask(dist, tasks, total_env_steps=steps, eval_episodes=n, seed=args.seed,
                               deterministic=not args.stochastic)  # fmt: skip
    else:

        def report(done: int, total: int) -> None:
            print(f"  task {done}/{total} trained and evaluated", flush=True)

        result = sb3_scratch(
            dist, tasks, algo=args.algo, adaptation_episodes=k, total_env_steps=args.total_env_steps,
            eval_episodes=n, seed=args.seed, deterministic=not args.stochastic, progress=report,
        )  # fmt: skip
    path = result.save(out / EVAL_DIR / FINAL_EVAL)
    written = write_eval_report(result, out / "eval")
    print(f"{result.agent} on {len(tasks)} test task(s) of {dist.name}: success {result.success_mean:.3f}, "
          f"return {result.return_mean:.2f}")  # fmt: skip
    for p in (path, *written):
        print(f"wrote {p}")
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

    from metarl.evaluation.report import write_eval_report
    from metarl.evaluation.runner import EvalSettings, evaluate_run, evaluated_tasks
    from metarl.run import EVAL_DIR, FINAL_EVAL, NO_FEEDBACK_EVAL, is_run_dir

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise UserError(f"no run directory {str(run_dir)!r}")
    if not is_run_dir(run_dir):
        raise UserError(f"{str(run_dir)!r} is not a metarl run directory (no config.json/meta.json)")
    if "baseline" in json.loads((run_dir / "config.json").read_text()):
        raise UserError(f"{str(run_dir)!r} holds a baseline; its evaluation is already in eval/final.json")
    checkpoint = Path(args.checkpoint) if args.checkpoint else None
    if checkpoint is not None and not checkpoint.is_file():
        raise UserError(f"no checkpoint file {str(checkpoint)!r}")
    for name in ("adaptation_episodes", "eval_episodes", "tasks_per_family", "workers"):
        value = getattr(args, name)
        if value is not None and (value < 0 or (value == 0 and name != "adaptation_episodes")):
            flag = "--" + name.replace("_", "-")
            raise UserError(
                f"{flag} must be {'non-negative' if name == 'adaptation_episodes' else 'positive'}, got {value}"
            )
    settings = EvalSettings(
        split=args.split,
        adaptation_episodes=args.adaptation_episodes,
        eval_episodes=args.eval_episodes,
        tasks_per_family=args.tasks_per_family,
        deterministic=args.deterministic,
        seed=args.seed,
        workers=args.workers,
        untrained=args.untrained,
        feedback=not args.no_feedback,
    )
    if args.untrained and args.checkpoint:
        raise UserError("--untrained evaluates a fresh agent; it takes no --checkpoint")
    if args.untrained and not args.json:
        raise UserError("--untrained needs --json PATH, so the run's own eval/final.json is kept")
    result = evaluate_run(run_dir, settings, checkpoint=checkpoint)
    out = Path(args.json) if args.json else run_dir / EVAL_DIR / (NO_FEEDBACK_EVAL if args.no_feedback else FINAL_EVAL)
    result.save(out)
    # the control's report goes beside the trained agent's, never over it
    report_dir = out.parent if args.json else run_dir / "eval" / ("no-feedback" if args.no_feedback else "")
    written = write_eval_report(result, report_dir)
    if args.video:
        from metarl.evaluation.video import record_videos

        by_id = set(result.per_task)
        tasks = [t for t in evaluated_tasks(run_dir, settings) if t.id in by_id]
        videos, problem = record_videos(
            run_dir, checkpoint, tasks, result.adaptation_episodes, Path(args.video), seed=settings.seed
        )
        if problem:
            print(f"metarl: {problem}", file=sys.stderr)
        written += videos
    unit = result.curve["unit"].replace("_", " ")
    print(
        f"{result.agent} on {len(result.per_task)} {result.split} task(s) of {result.distribution}: "
        f"success {result.success_mean:.3f}, return {result.return_mean:.2f} "
        f"(after {result.curve['x'][-1]} {unit}; {result.eval_episodes_per_task} evaluation episodes per task)"
    )
    print(f"wrote {out}")
    for path in written:
        print(f"wrote {path}")
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
        default=None,
        metavar="K",
        help="adaptation episodes per task (Meta-World default 10, else the run's)",
    )
    ev.add_argument(
        "--eval-episodes",
        type=int,
        default=None,
        metavar="N",
        help="evaluation episodes per task (Meta-World default 3, else the run's)",
    )
    ev.add_argument(
        "--tasks-per-family",
        type=int,
        default=None,
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
        default=None,
        metavar="PATH",
        help="write the EvalResult here (default: RUN_DIR/eval/final.json; with --no-feedback "
        "RUN_DIR/eval/no-feedback.json)",
    )
    ev.add_argument("--workers", type=int, default=None, help="rollout workers (default: the run's)")
    ev.add_argument(
        "--video",
        default=None,
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

    base = sub.add_parser("baseline", help="non-meta-learning baselines on held-out tasks (for `metarl compare`)")
    base_sub = base.add_subparsers(dest="baseline_kind", metavar="KIND")
    base_sub.required = True
    sb3 = base_sub.add_parser(
        "sb3",
        help="stable-baselines3 from scratch on each held-out task, or one multi-task PPO evaluated zero-shot",
        description="SB3 from scratch on each held-out task with the adaptation budget (default: adaptation "
        "episodes x horizon env steps), or --multitask: one PPO on the training tasks, evaluated zero-shot.",
    )
    sb3.add_argument("--algo", default="ppo", choices=["ppo", "sac"], help="SB3 algorithm")
    sb3.add_argument("--benchmark", required=True, help="distribution name (see `metarl envs list`)")
    sb3.add_argument(
        "--total-env-steps",
        type=int,
        default=None,
        metavar="N",
        help="env steps per task (scratch; default: the adaptation budget) or in all (--multitask; 1M)",
    )
    sb3.add_argument(
        "--multitask", action="store_true", help="one PPO on the training tasks, zero-shot on the test tasks"
    )
    sb3.add_argument("--tasks-per-family", type=int, default=None, metavar="M", help="M test tasks per family (seeded)")
    sb3.add_argument(
        "--adaptation-episodes",
        type=int,
        default=None,
        metavar="K",
        help="the adaptation budget in episodes (Meta-World default 10, else 10)",
    )
    sb3.add_argument("--eval-episodes", type=int, default=None, metavar="N", help="evaluation episodes per task")
    sb3.add_argument("--seed", type=int, default=0, help="seed of the task lists, the agents and the envs")
    sb3.add_argument("--stochastic", action="store_true", help="evaluate sampled actions (default: deterministic)")
    sb3.add_argument("--out", required=True, metavar="RUN_DIR", help="where eval/final.json and the report go")
    sb3.add_argument("--overwrite", action="store_true", help="replace an existing directory")
    sb3.set_defaults(func=cmd_baseline)

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
