"""``metarl baseline ...``: the non-meta-learning baselines' subcommands (parsed here, run by
:func:`metarl.evaluation.baselines.run_baseline`), apart from :mod:`metarl.cli` to keep it small."""

from __future__ import annotations

import argparse
from typing import Any

SB3_DESCRIPTION = """\
Non-meta-learning SB3 baselines on the held-out tasks, written as an evaluated run directory that
`metarl compare` sets beside the meta-learners:

  (default)                   one agent per held-out task, trained from scratch on the adaptation budget
                              (--adaptation-episodes K x horizon env steps unless --total-env-steps)
  --multitask                 one PPO pre-trained on the training tasks, evaluated zero-shot
  --multitask --fine-tune     pre-training + fine-tuning (label sb3-ppo-pretrain-finetune): one PPO
                              (policy and value 2x512 tanh, as MAML-TRPO on Meta-World) pre-trained on the
                              training tasks for --total-env-steps (tasks resampled per episode; saved as
                              RUN_DIR/pretrained.zip, the tasks it saw in RUN_DIR/pretrain_tasks.json); then
                              for each held-out task and each K of --fine-tune-episodes a fresh copy
                              (optimizer state reset) trains on that task for exactly K x horizon env steps in
                              4 or more PPO updates, and is scored on the evaluation episodes; curve points at
                              0 (zero-shot) and each K.  --jobs tasks fine-tune at a time, one process each.

Evaluation episodes take the mean action (Meta-World's protocol) unless --stochastic.
Example: metarl baseline sb3 --benchmark ML1-reach-v3 --multitask --fine-tune --total-env-steps 2000000 \\
         --fine-tune-episodes 10 50 --out runs/ft-ml1-reach"""


def cmd_baseline(args: argparse.Namespace) -> int:
    """Non-meta-learning SB3 baselines on held-out tasks, written as an evaluated run directory."""
    from pathlib import Path

    from metarl.evaluation.baselines import BaselineSettings, run_baseline

    settings = BaselineSettings(
        benchmark=args.benchmark, algo=args.algo, multitask=args.multitask, total_env_steps=args.total_env_steps,
        tasks_per_family=args.tasks_per_family, adaptation_episodes=args.adaptation_episodes,
        eval_episodes=args.eval_episodes, seed=args.seed, deterministic=not args.stochastic,
        fine_tune=args.fine_tune, jobs=args.jobs, envs_per_family=args.envs_per_family,
        fine_tune_episodes=tuple(args.fine_tune_episodes) if args.fine_tune_episodes is not None else None,
    )  # fmt: skip

    def report(done: int, total: int) -> None:
        print(f"  task {done}/{total} trained and evaluated", flush=True)

    result, written = run_baseline(settings, Path(args.out), overwrite=args.overwrite, progress=report)
    print(f"{result.agent} on {len(result.per_task)} test task(s) of {result.distribution}: "
          f"success {result.success_mean:.3f}, return {result.return_mean:.2f}")  # fmt: skip
    for p in written:
        print(f"wrote {p}")
    return 0


def add_baseline_parser(sub: Any) -> None:
    """The ``baseline`` command and its ``sb3`` subcommand."""
    base = sub.add_parser("baseline", help="non-meta-learning baselines on held-out tasks (for `metarl compare`)")
    base_sub = base.add_subparsers(dest="baseline_kind", metavar="KIND")
    base_sub.required = True
    sb3 = base_sub.add_parser(
        "sb3",
        help="stable-baselines3 from scratch on each held-out task, one multi-task PPO evaluated zero-shot, "
        "or that PPO fine-tuned on each held-out task",
        description=SB3_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sb3.add_argument("--algo", default="ppo", choices=["ppo", "sac"], help="SB3 algorithm")
    sb3.add_argument("--benchmark", required=True, help="distribution name (see `metarl envs list`)")
    sb3.add_argument(
        "--total-env-steps",
        type=int,
        metavar="N",
        help="env steps per task (scratch; default: the adaptation budget) or in all (--multitask, and the "
        "pre-training of --fine-tune; default 1M)",
    )
    sb3.add_argument(
        "--multitask", action="store_true", help="one PPO on the training tasks, zero-shot on the test tasks"
    )
    sb3.add_argument(
        "--fine-tune",
        action="store_true",
        help="with --multitask: fine-tune a copy of the pre-trained PPO on each test task (sb3-ppo-pretrain-finetune)",
    )
    sb3.add_argument(
        "--fine-tune-episodes",
        type=int,
        nargs="+",
        metavar="K",
        help="fine-tuning budgets in adaptation episodes, K x horizon env steps each (default 10)",
    )
    sb3.add_argument(
        "--jobs",
        type=int,
        default=None,
        metavar="J",
        help="--multitask: env workers (default 2), and with --fine-tune test tasks fine-tuned at a time "
        "(default for both: the CPU count)",
    )
    sb3.add_argument(
        "--envs-per-family",
        type=int,
        default=None,
        metavar="E",
        help="--multitask: env slots per family of the (pre-)training PPO (default 1)",
    )
    sb3.add_argument("--tasks-per-family", type=int, default=None, metavar="M", help="M test tasks per family (seeded)")
    sb3.add_argument(
        "--adaptation-episodes",
        type=int,
        metavar="K",
        help="the adaptation budget in episodes (Meta-World default 10, else 10)",
    )
    sb3.add_argument("--eval-episodes", type=int, default=None, metavar="N", help="evaluation episodes per task")
    sb3.add_argument("--seed", type=int, default=0, help="seed of the task lists, the agents and the envs")
    sb3.add_argument("--stochastic", action="store_true", help="evaluate sampled actions (default: deterministic)")
    sb3.add_argument("--out", required=True, metavar="RUN_DIR", help="where eval/final.json and the report go")
    sb3.add_argument("--overwrite", action="store_true", help="replace an existing directory")
    sb3.set_defaults(func=cmd_baseline)
