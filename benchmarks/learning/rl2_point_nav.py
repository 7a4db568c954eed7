"""Learning evidence for RL² on point-nav (issue: RL² agent).

Trains ``metarl train rl2 --config rl2-point-nav`` as it ships (or with the budget given here),
then runs one trial on each of the held-out goals and prints the per-episode return curve.

Bar: the mean return of the last episode of a held-out trial is >= -10 (standing still scores
about -38, flying straight to the goal about -1 to -3) and no worse than the first episode's.

    python benchmarks/learning/rl2_point_nav.py                  # the shipped budget
    python benchmarks/learning/rl2_point_nav.py --max-minutes 14 # a wall-clock budget
    python benchmarks/learning/rl2_point_nav.py --run RUN_DIR    # only evaluate an existing run
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import metarl
from metarl.agents.configs import get_config
from metarl.envs import make_distribution
from metarl.rollout import RolloutEngine

BAR = -10.0


def evaluate_trials(run: Path, num_tasks: int, seed: int) -> dict[str, object]:
    agent = metarl.load(run)
    cfg = get_config("rl2-point-nav")
    k = cfg.agent.episodes_per_trial
    dist = make_distribution("point-nav", seed=cfg.train.seed)
    tasks = list(dist.tasks("test"))[:num_tasks]
    with RolloutEngine(dist, num_workers=1, seed=seed, backend="inline") as engine:
        rollouts = agent.meta_test(engine, tasks, adaptation_episodes=k - 1, eval_episodes=1, deterministic=False)
    curve = rollouts.curve_return.mean(0).tolist()  # [k]: episode 1..k of the trial
    return {"curve_return": curve, "curve_success": rollouts.curve_success.mean(0).tolist(), "tasks": len(tasks)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=None, help="evaluate this run instead of training one")
    parser.add_argument("--out", type=Path, default=None, help="run directory (default: a temporary one)")
    parser.add_argument("--max-minutes", type=float, default=None, help="wall-clock budget for training")
    parser.add_argument("--total-env-steps", type=int, default=None, help="env-step budget (default: the config's)")
    parser.add_argument("--test-tasks", type=int, default=100, help="held-out goals to evaluate on")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args()

    started = time.monotonic()
    run = args.run
    if run is None:
        cfg = get_config("rl2-point-nav")
        train = cfg.train
        if args.max_minutes is not None or args.total_env_steps is not None:
            import dataclasses

            train = dataclasses.replace(
                train, max_minutes=args.max_minutes, total_env_steps=args.total_env_steps or train.total_env_steps
            )
        out = args.out or Path(tempfile.mkdtemp(prefix="rl2-point-nav-"))
        run = metarl.train(train, cfg.agent, out=out, config_name=cfg.name, overwrite=True)
    train_s = time.monotonic() - started
    ckpt_run = json.loads((run / "eval" / "latest.json").read_text()) if (run / "eval/latest.json").exists() else {}
    figures = evaluate_trials(run, args.test_tasks, seed=12345)
    curve = figures["curve_return"]
    assert isinstance(curve, list)
    import csv

    with (run / "progress.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    env_steps = int(float(rows[-1]["charts/env_steps"])) if rows else 0
    print(f"run: {run}")
    print(
        f"budget: {len(rows)} iterations, {env_steps:,} env steps, "
        f"{train_s / 60:.1f} min wall (training + periodic eval)"
    )
    print("held-out trial, mean return per episode:")
    for i, r in enumerate(curve):
        print(f"  episode {i + 1}: {r:8.2f}")
    first, last = curve[0], curve[-1]
    ok = last >= BAR and last >= first
    print(f"last episode {last:.2f} (bar >= {BAR}) and first episode {first:.2f}: {'PASS' if ok else 'FAIL'}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    **figures,
                    "env_steps": env_steps,
                    "iterations": len(rows),
                    "wall_minutes": train_s / 60,
                    "pass": ok,
                    "periodic_eval": ckpt_run,
                },
                indent=2,
            )
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
