"""MAML-TRPO inner step-size sweep on a Meta-World ML1 task: one short run per ``--inner-lr`` value, then the
pre- and post-adaptation success and return of every iteration (the meta-training batches) side by side.

    python benchmarks/learning/maml_inner_lr_sweep.py --lrs 1e-4 0.005 0.02 0.1 --total-env-steps 300000 \\
        --out runs/maml-sweep --json benchmarks/results/maml-ml1-inner-lr-sweep.json

metarl's inner step is ``lr x`` the per-task mean policy gradient with standardised advantages.  The
metaworld-algorithms step (one mean over all tasks' samples, advantages divided by their variance, lr 0.1)
equals ``0.1 / (meta_batch x sigma_A)`` in that convention; the script reports sigma_A
(``inner/advantage_std``) and that equivalent value from the runs themselves.  Runs one after another.
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
    parser.add_argument("--lrs", type=float, nargs="+", required=True, help="inner step sizes (metarl's convention)")
    parser.add_argument("--benchmark", default="ML1-reach-v3")
    parser.add_argument("--total-env-steps", type=int, required=True, help="budget of each run")
    parser.add_argument("--out", type=Path, required=True, help="parent of the run directories (lr-<value>)")
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--torch-threads", type=int, default=2)
    args = parser.parse_args()

    named = get_config("maml-trpo-ml1")
    runs: dict[str, Any] = {}
    for lr in args.lrs:
        run = args.out / f"lr-{lr:g}"
        train = dataclasses.replace(
            named.train, benchmark=args.benchmark, seed=args.seed, total_env_steps=args.total_env_steps,
            eval_every=0, torch_threads=args.torch_threads,
        )  # fmt: skip
        agent = dataclasses.replace(named.agent, inner_lr=lr)
        started = time.monotonic()
        if is_run_dir(run):
            metarl.resume(run, total_env_steps=args.total_env_steps, progress=False)
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
    sigma = float(np.nanmean([s for r in runs.values() for s in r["advantage_std"]]))
    meta_batch = named.train.meta_batch
    figures = {
        "benchmark": args.benchmark,
        "config": named.name,
        "meta_batch": meta_batch,
        "total_env_steps_per_run": args.total_env_steps,
        "runs": runs,
        "advantage_std_mean": sigma,
        "reference_equivalent_inner_lr": 0.1 / (meta_batch * sigma),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"reference-equivalent inner lr: 0.1 / ({meta_batch} x {sigma:.1f}) = {0.1 / (meta_batch * sigma):.2e}")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
