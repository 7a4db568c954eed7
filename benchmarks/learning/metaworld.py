"""Meta-World learning benchmark: meta-train an agent with its named config, then meta-test it on every
held-out goal with the Meta-World protocol, beside the adaptation control and an untrained agent.

    python benchmarks/learning/metaworld.py --agent rl2 --benchmark ML1-reach-v3 --total-env-steps 5000000 \\
        --out runs/rl2-ml1 --json benchmarks/results/ML1-reach/rl2-s0-5M.json
    python benchmarks/learning/metaworld.py --agent maml-trpo --benchmark ML10 --max-minutes 60 --eval-every 2 \\
        --out runs/maml-ml10 --json maml-ml10.json
    python benchmarks/learning/metaworld.py --agent rl2 --config rl2-ml1-tuned --env-success-reward 10 \\
        --target-kl 0.02 --seed 1 --out runs/x --json x.json   # any field flag of `metarl train`
    python benchmarks/learning/metaworld.py ... --eval-only      # only evaluate the run in --out

Training uses ``AGENT-ml1`` / ``AGENT-ml10`` / ``AGENT-ml45`` (the ML1 config with the benchmark named here for
other ML1 tasks), or the named config ``--config`` gives (e.g. ``rl2-ml1-tuned``).  Its fields are overridden by
the same flags as in ``metarl train AGENT`` (``--total-env-steps``, ``--env-success-reward``, ``--target-kl``, ...;
``--help`` lists them), built by the same functions; a budget flag (``--total-env-steps`` or ``--max-minutes``)
replaces the config's budget rather than adding a second one.  A run directory that already holds a run is
resumed to the budget instead of restarted.
Evaluation is ``metarl eval --deterministic`` (10 adaptation episodes, sampled; 3 evaluation episodes on the
mean action; every held-out goal, each counted exactly), the same with sampled evaluation episodes
(``heldout_sampled``), then the adaptation control: RL² with the reward input zeroed (``--no-feedback``);
for MAML, the curve's point 0 (before the inner step) is the control.

The JSON holds: meta-train success and return by env steps (progress.csv), the periodic held-out
meta-tests by env steps (``eval/iter-*.json``: ``eval_tasks`` goals, sampled actions), the final held-out
success with a 95% bootstrap interval over goals, its adaptation curve, the control and the untrained
agent, the wall-clock of training, and the command.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

# Run as a script, this file's folder comes first on sys.path, where this file's name would hide the
# ``metaworld`` package from every import below (and from the worker processes, which inherit sys.path).
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import numpy as np  # noqa: E402

import metarl  # noqa: E402
from metarl.agents.configs import get_config  # noqa: E402
from metarl.config import TrainConfig, add_dataclass_flags, overrides_from_args, replace_checked  # noqa: E402
from metarl.errors import UserError  # noqa: E402
from metarl.evaluation.result import EvalResult, load_eval_result  # noqa: E402
from metarl.evaluation.result import success_ci as goal_success_ci  # noqa: E402
from metarl.evaluation.runner import EvalSettings, evaluate_run  # noqa: E402
from metarl.overrides import add_agent_flags, agent_override_strings, apply_agent_overrides  # noqa: E402
from metarl.run import is_run_dir  # noqa: E402

AGENTS = ("rl2", "maml-trpo")


def config_name(agent: str, benchmark: str) -> str:
    """The named config an agent trains a Meta-World benchmark with."""
    if benchmark.startswith("ML1-"):
        return f"{agent}-ml1"
    if benchmark in ("ML10", "ML45"):
        return f"{agent}-{benchmark.lower()}"
    raise SystemExit(f"metaworld.py: no config for benchmark {benchmark!r}; use ML1-<task>, ML10 or ML45")


def _relative(arg: str) -> str:
    """An absolute path as seen from the working directory, so the JSON names no machine's layout."""
    import os

    return os.path.relpath(arg) if os.path.isabs(arg) else arg


def success_ci(result: EvalResult, seed: int = 0) -> dict[str, float]:
    """Mean held-out success with a 95% bootstrap interval over goals."""
    ci = goal_success_ci(result, seed=seed)
    return {"mean": ci.point, "low": ci.low, "high": ci.high, "goals": len(result.per_task)}


def summary(result: EvalResult) -> dict[str, Any]:
    return {
        "success": success_ci(result),
        "return": result.return_mean,
        "curve": result.curve,
        "per_family": result.per_family,
        "env_steps": result.env_steps,
        "feedback": result.extra.get("feedback", True),
        "adaptation_episodes": result.adaptation_episodes,
        "eval_episodes_per_task": result.eval_episodes_per_task,
        "eval_seed": result.seed,
    }


def training_curves(run: Path) -> dict[str, Any]:
    with (run / "progress.csv").open() as fh:
        rows = list(csv.DictReader(fh))

    def col(name: str) -> list[float]:
        return [float(r[name]) for r in rows if r.get(name) not in (None, "")]

    periodic = []
    for path in sorted((run / "eval").glob("iter-*.json")):
        r = load_eval_result(path)
        periodic.append({"env_steps": r.env_steps, "success": r.success_mean, "return": r.return_mean,
                         "curve_success": r.curve["success"], "goals": len(r.per_task)})  # fmt: skip
    maml = "charts/post_adaptation_success" in (rows[0] if rows else {})
    return {
        "env_steps": col("charts/env_steps"),
        # RL²: over the whole trial; MAML: after the inner step (pre-adaptation under train_pre_*)
        "train_success": col("charts/post_adaptation_success" if maml else "charts/success_rate"),
        "train_return": col("charts/post_adaptation_return" if maml else "charts/episode_return"),
        **(
            {
                "train_pre_success": col("charts/pre_adaptation_success"),
                "train_pre_return": col("charts/pre_adaptation_return"),
            }
            if maml
            else {}
        ),
        # RL² with exploit episodes: success in them, which predicts the held-out mean-action score
        **(
            {"train_exploit_success": col("charts/exploit_success_rate")}
            if rows and "charts/exploit_success_rate" in rows[0]
            else {}
        ),
        "entropy": col("losses/entropy"),
        "iteration_s": col("time/iteration_s"),
        "periodic_heldout": periodic,
    }


def _canonical(parser: argparse.ArgumentParser, benchmark: str) -> str:
    """The registered spelling of a benchmark name, checked up front with the list of valid ones."""
    from metarl.envs import canonical_name

    try:
        return canonical_name(benchmark)
    except UserError as exc:
        parser.error(str(exc))


def named_config(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[str, Any]:
    """The named config to train with: ``--config``, else the agent's config for the benchmark."""
    benchmark = getattr(args, "TrainConfig.benchmark")
    if args.config is None and benchmark is None:
        parser.error("name a --benchmark (ML1-<task>-v3, ML10 or ML45) or a --config")
    name = args.config or config_name(args.agent, _canonical(parser, benchmark))
    try:
        named = get_config(name)
    except ValueError as exc:
        parser.error(f"--config: {exc}")
    if named.train.agent != args.agent:
        parser.error(f"--config {name} trains {named.train.agent!r}, not --agent {args.agent!r}")
    return name, named


def train_config(parser: argparse.ArgumentParser, args: argparse.Namespace, named: Any) -> tuple[Any, dict[str, Any]]:
    """The named config's train settings with the command line's field flags (``metarl train``'s), and those flags."""
    given = overrides_from_args(args, TrainConfig)
    changes = dict(given)
    if "benchmark" in changes:
        changes["benchmark"] = _canonical(parser, changes["benchmark"])
    for budget, other in (("total_env_steps", "max_minutes"), ("max_minutes", "total_env_steps")):
        if budget in given and other not in given:  # the budget given replaces the config's
            changes[other] = None
    if args.quick:
        changes.update(meta_batch=2, iterations=1, total_env_steps=None, max_minutes=None, eval_every=0)
    try:
        return replace_checked(named.train, changes), given
    except UserError as exc:  # a flag's value out of range
        parser.error(str(exc))


def agent_config(parser: argparse.ArgumentParser, args: argparse.Namespace, agent_cfg: Any) -> tuple[Any, list[str]]:
    """The named config's agent settings with the command line's agent field flags (applied as ``metarl train``
    applies them), and those flags as ``FIELD=VALUE``, the notation the result JSON records."""
    try:
        return apply_agent_overrides(args.agent, agent_cfg, args), agent_override_strings(args.agent, agent_cfg, args)
    except UserError as exc:
        parser.error(str(exc))


def _agent_from_argv(argv: list[str]) -> str | None:
    """``--agent`` (needed before parsing, to add the agent's field flags)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--agent", default=None)
    known, _ = pre.parse_known_args(argv)
    return known.agent if known.agent in AGENTS else None


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    """The benchmark's own flags, then ``metarl train``'s field flags for the ``--agent`` in ``argv``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agent", required=True, choices=AGENTS)
    parser.add_argument(
        "--config", default=None,
        help="the named config to train with (default: AGENT-ml1, AGENT-ml10 or AGENT-ml45 by the benchmark), "
        "e.g. rl2-ml1-tuned",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, required=True, help="run directory (resumed if it holds a run)")
    parser.add_argument("--json", type=Path, required=True, help="where the figures go")
    parser.add_argument("--eval-only", action="store_true", help="evaluate the run in --out; do not train")
    parser.add_argument("--checkpoint", type=Path, default=None, help="with --eval-only: this checkpoint file")
    parser.add_argument("--no-untrained", action="store_true", help="skip the untrained agent's evaluation")
    parser.add_argument(
        "--goals-per-family", type=int, default=None, metavar="N",
        help="final held-out evaluations on N goals per held-out family, drawn with the eval seed "
        "(metarl eval --tasks-per-family N; default: every goal)",
    )  # fmt: skip
    parser.add_argument(
        "--quick", action="store_true",
        help="smoke test: meta-batch 2, one iteration, periodic tests off, 2 held-out goals per family (not a result)",
    )  # fmt: skip
    # the field flags of `metarl train AGENT`, built by the same functions
    add_dataclass_flags(parser, TrainConfig, title="training (metarl train's flags)", skip=("agent",))
    add_agent_flags(parser, _agent_from_argv(argv))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    name, named = named_config(parser, args)
    train_cfg, train_overrides = train_config(parser, args, named)
    agent_cfg, overrides = agent_config(parser, args, named.agent)
    if args.goals_per_family is not None and args.goals_per_family < 1:
        parser.error(f"--goals-per-family must be a positive integer, got {args.goals_per_family}")
    goals = 2 if args.quick else args.goals_per_family  # per family; None: every held-out goal

    started = time.monotonic()
    if args.checkpoint is not None and not args.eval_only:
        parser.error("--checkpoint evaluates an existing run: give --eval-only too")
    if not args.eval_only:
        try:
            if is_run_dir(args.out):
                budgets = {k: v for k, v in train_overrides.items() if k in ("total_env_steps", "max_minutes")}
                metarl.resume(args.out, progress=False, **budgets)
            else:
                metarl.train(train_cfg, agent_cfg, out=args.out, config_name=name, progress=False)
        except UserError as exc:  # settings the agent refuses (e.g. episodes per task vs. per trial)
            parser.error(str(exc))
    train_minutes = (time.monotonic() - started) / 60
    run = args.out

    trained = json.loads((run / "config.json").read_text())["train"]
    figures: dict[str, Any] = {
        "agent": args.agent,
        "benchmark": trained["benchmark"],
        "config": name,
        "seed": trained["seed"],
        "command": " ".join([Path(sys.executable).name, _relative(sys.argv[0]), *(_relative(a) for a in argv)]),
        "host": {"machine": platform.machine(), "processor": platform.processor(), "python": platform.python_version()},
        "train_wall_minutes_this_call": train_minutes,
        "quick": args.quick,
        "checkpoint": _relative(str(args.checkpoint)) if args.checkpoint else "latest",
        "overrides": overrides,  # the agent field flags, FIELD=VALUE
        "train_overrides": train_overrides,  # the training field flags given
        "overlap": trained["overlap"],  # as trained, resumes too
        "meta_batch": trained["meta_batch"],
        "episodes_per_task": trained["episodes_per_task"],
        "env_success_reward": trained.get("env_success_reward", 0.0),
        "goals_per_family": goals,  # null: every held-out goal
    }
    curves = training_curves(run)
    figures["training"] = curves
    figures["train_wall_minutes"] = sum(curves["iteration_s"]) / 60  # summed over resumes; periodic tests excluded

    timings = {}
    t0 = time.monotonic()
    ckpt = args.checkpoint
    final = evaluate_run(run, EvalSettings(deterministic=True, tasks_per_family=goals), checkpoint=ckpt)
    final.save(run / "eval" / "final.json")
    timings["eval_s"] = time.monotonic() - t0
    figures["heldout"] = summary(final)
    t0 = time.monotonic()  # the same protocol with sampled evaluation episodes (metarl eval without --deterministic)
    sampled = evaluate_run(run, EvalSettings(deterministic=False, tasks_per_family=goals), checkpoint=ckpt)
    sampled.save(run / "eval" / "sampled.json")
    timings["sampled_s"] = time.monotonic() - t0
    figures["heldout_sampled"] = summary(sampled)
    if args.agent == "rl2":
        t0 = time.monotonic()
        control = evaluate_run(
            run, EvalSettings(deterministic=True, feedback=False, tasks_per_family=goals), checkpoint=ckpt
        )
        control.save(run / "eval" / "no_feedback.json")
        timings["control_s"] = time.monotonic() - t0
        figures["control"] = {"kind": "no reward input (--no-feedback)", **summary(control)}
    else:
        figures["control"] = {
            "kind": "curve point 0 (no inner step)",
            "success": final.curve["success"][0],
            "return": final.curve["return"][0],
        }
    if not args.no_untrained:
        untrained = evaluate_run(run, EvalSettings(deterministic=True, untrained=True, tasks_per_family=goals))
        figures["untrained"] = summary(untrained)
    figures["eval_timings_s"] = timings
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(figures, indent=2) + "\n")

    h, c = figures["heldout"], figures["control"]
    env_steps = int(h["env_steps"])  # behind the evaluated checkpoint
    print(
        f"{args.agent} on {figures['benchmark']}: {env_steps:,} env steps, "
        f"{figures['train_wall_minutes']:.1f} min training"
    )
    tail = curves["train_success"][-5:]
    print(f"  meta-train success (last {len(tail)} iterations): {np.mean(tail) if tail else float('nan'):.3f}")
    s = h["success"]
    print(f"  held-out success ({s['goals']} goals): {s['mean']:.3f} [{s['low']:.3f}, {s['high']:.3f}] "
          f"return {h['return']:.1f}")  # fmt: skip
    hs = figures["heldout_sampled"]["success"]
    print(f"  held-out success, sampled evaluation episodes: {hs['mean']:.3f} [{hs['low']:.3f}, {hs['high']:.3f}]")
    print(f"  adaptation curve (success by adaptation {h['curve']['unit']}): "
          + " ".join(f"{v:.2f}" for v in h["curve"]["success"]))  # fmt: skip
    cs = c["success"]["mean"] if isinstance(c["success"], dict) else c["success"]
    print(f"  control ({c['kind']}): success {cs:.3f}; gap {s['mean'] - cs:+.3f}")
    if "untrained" in figures:
        print(f"  untrained agent: success {figures['untrained']['success']['mean']:.3f}")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
