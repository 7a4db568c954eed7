"""Learning evidence for MAML-TRPO (issue: MAML family): pre- and post-adaptation return on held-out tasks.

Trains ``metarl train maml-trpo --config maml-trpo-point-nav`` as it ships (or with the budget
given here), prints the held-out pre/post-adaptation returns of its periodic meta-tests over
training, then evaluates the final policy on every held-out goal: return before adaptation
(0 inner steps) and after 1 inner step on ``adaptation_episodes`` fresh episodes per goal.

Bar (point-nav): post-adaptation return >= -15 and more than 3 above the pre-adaptation return
(standing still scores about -38, flying straight to the goal about -1 to -3).

    python benchmarks/learning/maml_point_nav.py                      # the shipped budget
    python benchmarks/learning/maml_point_nav.py --run RUN_DIR        # only evaluate an existing run
    python benchmarks/learning/maml_point_nav.py --config maml-trpo-cheetah-dir --max-minutes 20   # no bar
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

import metarl
from metarl.agents.configs import get_config
from metarl.config import TrainConfig, from_dict
from metarl.rollout import RolloutEngine
from metarl.run import make_run_distribution

POST_BAR, GAIN_BAR = -15.0, 3.0


def training_curve(run: Path) -> list[dict[str, float]]:
    """Held-out pre/post returns of the run's periodic meta-tests."""
    rows = []
    for path in sorted((run / "eval").glob("iter-*.json")):
        data = json.loads(path.read_text())
        ret, succ = data["curve"]["return"], data["curve"]["success"]
        rows.append(
            {"iteration": data["iteration"], "env_steps": data["env_steps"], "pre": ret[0], "post": ret[-1],
             "pre_success": succ[0], "post_success": succ[-1]}
        )  # fmt: skip
    return rows


def final_evaluation(run: Path, eval_episodes: int, seed: int) -> dict[str, float | int]:
    train = from_dict(TrainConfig, json.loads((run / "config.json").read_text())["train"])
    agent = metarl.load(run)
    dist = make_run_distribution(train)
    tasks = list(dist.tasks("test"))
    slots = max(1, -(-len(tasks) * train.adaptation_episodes // len(dist.families)))
    engine = RolloutEngine(dist, num_workers=train.workers, slots_per_family=slots, seed=seed, backend=train.backend)
    with engine:
        out = agent.meta_test(engine, tasks, train.adaptation_episodes, eval_episodes, deterministic=False)
    curve = out.curve_return.mean(0).tolist()
    return {
        "tasks": len(tasks),
        "adaptation_episodes": train.adaptation_episodes,
        "eval_episodes": eval_episodes,
        "pre": curve[0],
        "post": curve[-1],
        "pre_success": float(out.curve_success[:, 0].mean()),
        "post_success": float(out.curve_success[:, -1].mean()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="maml-trpo-point-nav", help="named config to train")
    parser.add_argument("--run", type=Path, default=None, help="evaluate this run instead of training one")
    parser.add_argument("--out", type=Path, default=None, help="run directory (default: a temporary one)")
    parser.add_argument("--max-minutes", type=float, default=None, help="wall-clock budget for training")
    parser.add_argument("--total-env-steps", type=int, default=None, help="env-step budget (default: the config's)")
    parser.add_argument("--eval-episodes", type=int, default=4, help="evaluation episodes per held-out task")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(1)

    started = time.monotonic()
    run = args.run
    if run is None:
        cfg = get_config(args.config)
        changes = {"max_minutes": args.max_minutes, "total_env_steps": args.total_env_steps}
        changes = {k: v for k, v in changes.items() if v is not None}
        if "max_minutes" in changes and "total_env_steps" not in changes:
            changes["total_env_steps"] = None  # the wall clock alone decides
        train = dataclasses.replace(cfg.train, **changes)
        out = args.out or Path(tempfile.mkdtemp(prefix=f"{cfg.name}-")) / "run"
        print(f"training {cfg.name} into {out} ...", flush=True)
        run = metarl.train(train, cfg.agent, out=out, config_name=cfg.name, progress=False)
    train_minutes = (time.monotonic() - started) / 60
    curve = training_curve(run)
    print(f"\nheld-out meta-tests during training ({run}):")
    print(f"{'iteration':>9} {'env steps':>11} {'pre':>8} {'post':>8} {'pre succ':>8} {'post succ':>9}")
    for r in curve:
        print(
            f"{r['iteration']:>9} {r['env_steps']:>11,} {r['pre']:>8.2f} {r['post']:>8.2f} "
            f"{r['pre_success']:>8.2f} {r['post_success']:>9.2f}"
        )
    final = final_evaluation(run, args.eval_episodes, seed=1234)
    state = torch.load(run / "checkpoints" / "latest.pt", weights_only=True)
    iterations, env_steps = state["run"]["iteration"], state["run"]["env_steps"]
    print(
        f"\nfinal policy on all {final['tasks']} held-out tasks ({final['adaptation_episodes']} adaptation episodes, "
        f"{final['eval_episodes']} evaluation episodes each): pre {final['pre']:.2f}, post {final['post']:.2f} "
        f"(success {final['pre_success']:.2f} -> {final['post_success']:.2f})"
    )
    print(f"training: {iterations} iterations, {env_steps:,} env steps, {train_minutes:.1f} min wall clock")
    result: dict[str, object] = {"run": str(run), "iterations": iterations, "env_steps": env_steps,
                                 "train_minutes": train_minutes, "curve": curve, "final": final}  # fmt: skip
    status = 0
    name = json.loads((run / "config.json").read_text()).get("config_name")
    if name == "maml-trpo-point-nav" or (name or "").endswith("point-nav"):
        ok = final["post"] >= POST_BAR and final["post"] - final["pre"] > GAIN_BAR
        print(f"bar: post >= {POST_BAR} and post - pre > {GAIN_BAR} -> {'PASS' if ok else 'FAIL'}")
        result["pass"] = ok
        status = 0 if ok else 1
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return status


if __name__ == "__main__":
    sys.exit(main())
