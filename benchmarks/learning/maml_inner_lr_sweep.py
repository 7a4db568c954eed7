"""MAML-TRPO inner step-size sweep on a Meta-World ML1 task: one short run per ``--inner-lr`` value, then the
pre- and post-adaptation success and return of every iteration (the meta-training batches) side by side.

    python benchmarks/learning/maml_inner_lr_sweep.py --lrs 1e-4 0.005 0.02 0.1 --total-env-steps 300000 \\
        --out runs/maml-sweep --json benchmarks/results/maml-ml1-inner-lr-sweep.json

metarl's inner step is ``lr x`` the per-task mean policy gradient with standardised advantages.  The
metaworld-algorithms step (one mean over all tasks' samples, advantages divided by their variance, lr 0.1)
equals ``0.1 / (meta_batch x sigma_A)`` in that convention; the script reports sigma_A
(``inner/advantage_std``) and that equivalent value from the runs themselves.  Runs one after another;
on a machine with more cores, start one process per value (``--workers``, ``--torch-threads``) and combine
their JSON files afterwards with ``--merge A.json B.json ... --json ALL.json``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import numpy as np  # noqa: E402

import metarl  # noqa: E402
from metarl.agents.configs import get_config  # noqa: E402
from metarl.run import is_run_dir  # noqa: E402


def read_rows(run: Path) -> list[dict[str, float]]:
    with (run / "progress.csv").open() as fh:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(fh)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lrs", type=float, nargs="+", help="inner step sizes (metarl's convention)")
    parser.add_argument("--merge", type=Path, nargs="+", help="combine these sweep JSON files into --json instead")
    parser.add_argument("--benchmark", default="ML1-reach-v3")
    parser.add_argument("--total-env-steps", type=int, help="budget of each run")
    parser.add_argument("--max-minutes", type=float, help="wall-clock budget of each run (stops at an iteration end)")
    parser.add_argument("--out", type=Path, help="parent of the run directories (lr-<value>)")
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--torch-threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="rollout worker processes of each run")
    parser.add_argument("--device", default="cpu", help="device of the learner (cpu, cuda, auto)")
    args = parser.parse_args()
    named = get_config("maml-trpo-ml1")
    if args.merge:
        return write(args, named.train.meta_batch, merged(args.merge))
    if not args.lrs or args.total_env_steps is None or args.out is None:
        parser.error("give --lrs, --total-env-steps and --out (or --merge FILES)")

    runs: dict[str, Any] = {}
    for lr in args.lrs:
        run = args.out / f"lr-{lr:g}"
        train = dataclasses.replace(
            named.train, benchmark=args.benchmark, seed=args.seed, total_env_steps=args.total_env_steps,
            eval_every=0, torch_threads=args.torch_threads, workers=args.workers, device=args.device,
            max_minutes=args.max_minutes,
        )  # fmt: skip
        agent = dataclasses.replace(named.agent, inner_lr=lr)
        started = time.monotonic()
        if is_run_dir(run):
            metarl.resume(run, total_env_steps=args.total_env_steps, max_minutes=args.max_minutes, progress=False)
        else:
            metarl.train(train, agent, out=run, config_name=named.name, progress=False)
        rows = read_rows(run)
        key = f"{lr:g}"
        runs[key] = {
            "inner_lr": lr,
            "env_steps": [r["charts/env_steps"] for r in rows],
            "pre_success": [r["charts/pre_adaptation_success"] for r in rows],
            "post_success": [r["charts/post_adaptation_success"] for r in rows],
            "pre_return": [r["charts/pre_adaptation_return"] for r in rows],
            "post_return": [r["charts/post_adaptation_return"] for r in rows],
            "advantage_std": [r.get("inner/advantage_std", float("nan")) for r in rows],
            "trpo_accepted": [r.get("trpo/accepted", float("nan")) for r in rows],
            "wall_minutes": (time.monotonic() - started) / 60,
        }
        r = runs[key]
        gap = np.array(r["post_success"]) - np.array(r["pre_success"])
        rgap = np.array(r["post_return"]) - np.array(r["pre_return"])
        r["mean_success_gap"], r["mean_return_gap"] = float(gap.mean()), float(rgap.mean())
        print(
            f"inner_lr {lr:g}: {len(rows)} iterations; post - pre success per iteration "
            + " ".join(f"{g:+.2f}" for g in gap)
            + f"; return gap {rgap.mean():+.1f}; sigma_A {np.nanmean(r['advantage_std']):.1f}",
            flush=True,
        )
    return write(
        args,
        named.train.meta_batch,
        {"benchmark": args.benchmark, "runs": runs, "commands": [" ".join([Path(sys.executable).name, *sys.argv])]},
    )


def merged(paths: list[Path]) -> dict[str, Any]:
    parts = [json.loads(p.read_text()) for p in paths]
    runs = {k: v for part in parts for k, v in part["runs"].items()}
    return {"benchmark": parts[0]["benchmark"], "runs": runs, "commands": [c for p in parts for c in p["commands"]]}


def write(args: argparse.Namespace, meta_batch: int, figures: dict[str, Any]) -> int:
    runs = figures["runs"]
    sigma = float(np.nanmean([s for r in runs.values() for s in r["advantage_std"]]))
    figures = {
        **figures,
        "config": "maml-trpo-ml1",
        "meta_batch": meta_batch,
        "advantage_std_mean": sigma,
        "reference_equivalent_inner_lr": 0.1 / (meta_batch * sigma),
        "best_by_mean_success_gap": max(runs, key=lambda k: runs[k]["mean_success_gap"]),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"reference-equivalent inner lr: 0.1 / ({meta_batch} x {sigma:.1f}) = {0.1 / (meta_batch * sigma):.2e}")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
