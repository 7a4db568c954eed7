"""Training benchmark: whole iterations of ``rl2-ml10`` and ``maml-trpo-ml10``, old learner path vs best, beside
the simulator's limit on the same tasks.

For each agent it runs one full meta-iteration (sampling, then the update) at the reference settings, in a
fresh process per measurement (so that its peak memory is its own), in two ways:

``sync_1t``   the old path: learner on one torch thread, float32, sampling then learning.
``best``      the current defaults: learner on every core this process may use (or CUDA with ``--device``),
              plus the opt-in flags whose check passed (``BEST_FLAGS``: RL²'s bfloat16 autocast, MAML's
              ``hvp_subsample`` 0.25).
``overlap``   (RL², with ``--overlap``) the defaults plus ``--overlap true``: two iterations, the second measured,
              where the batch is sampled in a background thread during the first's update; its sampling
              seconds are the wait for that collect after the update (what sampling adds to the iteration).

and, in the same rounds, ``limit``: ``--workers`` bare processes stepping the ML10 train tasks' envs round-robin
with random actions, no policy and no IPC (``benchmarks/speed/sampler.py``'s limit), as steps/s.  Rounds alternate
the order (forward, reversed, ...) and every figure is the median over rounds.  Printed and written
(``--json``): sampling and learning seconds, learning seconds per 100k samples, end-to-end steps/s and its
ratio to ``limit``, and the learner process's peak memory (max RSS of the driver, where the update runs).

    python benchmarks/speed/training.py --quick                    # a few minutes: meta-batch 2, 2 episodes/task
    python benchmarks/speed/training.py --rounds 3 --json training.json   # the reference settings (about an hour
                                                                     # on 2 cores, mostly MAML's 1-thread TRPO)

``--quick`` shrinks the meta-batch and the episodes per task and says so in the table and the JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks._common` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks._common import (
    alternating_orders,
    format_table,
    machine_info,
    median,
    ml10_train_envs,
    package_versions,
)

AGENTS = {"rl2": "rl2-ml10", "maml": "maml-trpo-ml10", "rl2-transformer": "rl2-transformer-ml10"}
DEFAULT_AGENTS = ("rl2", "maml")  # rl2-transformer on request: --agents rl2 rl2-transformer measures it beside RL²'s
PATHS = ("sync_1t", "best")
# Opt-in agent flags the best path turns on, each because the check its issue asks for passed.  RL²'s bfloat16
# autocast: an ML1-reach learning run with it matched float32 at equal env steps
# (benchmarks/results/ablations/ML1-reach/rl2-kl02-noact-bf16-s0-1M.json: held-out 0.60 with the mean
# action, 0.91 sampled, at 1M steps; float32's run: 0.48 and 0.83).  MAML's hvp_subsample 0.25: the TRPO step
# with the curvature from a quarter of the tasks points the same way as the full one (cosine 0.998, norm ratio
# 1.03, same KL and surrogate gain; benchmarks/dev/profile_learner.py --agents maml), and an ML1-reach learning run
# with it matched the full curvature's (benchmarks/results/ablations/ML1-reach/maml-trpo-hvp025-s0-1M.json: 0.18 -> 0.92
# over the inner step at 1M steps; full: 0.10 -> 0.94).  --overlap has no learning run yet, so it stays out
# (measured apart as rl2_overlap).
BEST_FLAGS: dict[str, list[str]] = {
    "rl2": ["ppo.autocast_bf16=True"],
    "maml": ["hvp_subsample=0.25"],
    "rl2-transformer": [],
}  # no learning run yet: float32, as its config ships
# The named ML10 configs ship with the best flags on, so the old path turns them off explicitly.
OLD_FLAGS: dict[str, list[str]] = {
    "rl2": ["ppo.autocast_bf16=False"],
    "maml": ["hvp_subsample=1.0"],
    "rl2-transformer": [],
}


def with_field(config: Any, assignment: str) -> Any:
    """``config`` with one (possibly nested, dotted) field replaced by a Python literal: ``ppo.autocast_bf16=True``
    (the notation the learning benchmark's JSONs record their agent overrides in)."""
    import ast

    path, _, text = assignment.partition("=")
    if not text:
        raise ValueError("expected FIELD=VALUE")
    head, _, rest = path.partition(".")
    if head not in {f.name for f in dataclasses.fields(config)}:
        raise ValueError(f"{type(config).__name__} has no field {head!r}")
    if rest:
        return dataclasses.replace(config, **{head: with_field(getattr(config, head), f"{rest}={text}")})
    return dataclasses.replace(config, **{head: ast.literal_eval(text)})


def with_flags(agent: Any, flags: Sequence[str]) -> Any:
    """``agent`` with each ``FIELD=VALUE`` of ``flags`` applied."""
    for flag in flags:
        agent = with_field(agent, flag)
    return agent


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """One training iteration as ``spec`` says, in this process; returns its figures."""
    import csv

    import torch

    import metarl
    from metarl.agents.configs import get_config

    named = get_config(spec["config"])
    overlap = bool(spec.get("overlap"))
    changes: dict[str, Any] = {"iterations": 2 if overlap else 1, "overlap": overlap, "total_env_steps": None,
                               "max_minutes": None, "eval_every": 0, "checkpoint_every": 1, "workers": spec["workers"],
                               "torch_threads": spec["threads"], "device": spec["device"]}  # fmt: skip
    if spec.get("meta_batch"):
        changes["meta_batch"] = spec["meta_batch"]
    if spec.get("episodes_per_task"):
        changes["episodes_per_task"] = spec["episodes_per_task"]
    train = dataclasses.replace(named.train, **changes)
    agent = with_flags(named.agent, spec.get("flags", []))
    if spec.get("episodes_per_task") and hasattr(agent, "episodes_per_trial"):  # RL²: one trial per task
        agent = dataclasses.replace(agent, episodes_per_trial=spec["episodes_per_task"])
    with tempfile.TemporaryDirectory() as tmp:
        run = metarl.train(train, agent, out=Path(tmp) / "run", progress=False)
        with (run / "progress.csv").open() as fh:
            rows = list(csv.DictReader(fh))
    row = rows[-1]  # the measured iteration; charts/env_steps counts from the run's start
    before = float(rows[-2]["charts/env_steps"]) if len(rows) > 1 else 0.0
    out = {
        "env_steps": float(row["charts/env_steps"]) - before,
        # with --overlap the batch was collected during the previous update: what is left is the wait for it
        "sampling_s": float(row["time/sampling_s"]) + float(row.get("time/sampling_wait_s") or 0.0),
        "learning_s": float(row["time/learning_s"]),
        "iteration_s": float(row["time/iteration_s"]),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "threads": torch.get_num_threads(),
        "flags": spec.get("flags", []),
        "autocast_bf16": bool(getattr(getattr(agent, "ppo", None), "autocast_bf16", False)),  # as trained
    }
    if torch.cuda.is_available() and spec["device"].startswith("cuda"):
        out["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                          check=False, timeout=7200)  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"measurement {spec} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure_limit(workers: int, episodes: int) -> float:
    """steps/s of ``workers`` bare processes stepping one env of each ML10 train class (two per class)."""
    from benchmarks.speed.sampler import LimitPool, alternate_assignment

    bench = ml10_train_envs(per_class=2)
    pool = LimitPool(bench, alternate_assignment(bench.num_envs, workers))
    try:
        return pool.measure(episodes, strict=False).steps_per_s
    finally:
        pool.close()


def summarise(samples: dict[str, list[dict[str, Any]]], limit: list[float]) -> dict[str, Any]:
    out: dict[str, Any] = {"limit": median(limit)}
    for key, runs in samples.items():
        steps = median([r["env_steps"] for r in runs])
        sampling, learning = median([r["sampling_s"] for r in runs]), median([r["learning_s"] for r in runs])
        out[key] = steps / (sampling + learning)
        out[f"{key}_sampling_s"] = sampling
        out[f"{key}_learning_s"] = learning
        out[f"{key}_learning_s_per_100k"] = learning * 100_000 / steps
        out[f"{key}_peak_rss_mib"] = max(r["peak_rss_mib"] for r in runs)
        out[f"{key}_threads"] = runs[0]["threads"]
        out[f"{key}_env_steps"] = steps
        out[f"{key}_autocast_bf16"] = all(r.get("autocast_bf16", False) for r in runs)
        out[f"{key}_flags"] = runs[0].get("flags", [])
    return out


def table(figures: dict[str, Any], note: str) -> str:
    rows = []
    for agent in AGENTS:
        for path in (*PATHS, "overlap"):
            key = f"{agent}_{path}"
            if key not in figures:
                continue
            rows.append([
                key, f"{figures[f'{key}_env_steps']:,.0f}", str(figures[f"{key}_threads"]),
                f"{figures[f'{key}_sampling_s']:.1f}", f"{figures[f'{key}_learning_s']:.1f}",
                f"{figures[f'{key}_learning_s_per_100k']:.1f}", f"{figures[key]:,.0f}",
                f"{figures[key] / figures['limit']:.2f}", f"{figures[f'{key}_peak_rss_mib']:,.0f}",
            ])  # fmt: skip
        sync, best = f"{agent}_sync_1t_learning_s_per_100k", f"{agent}_best_learning_s_per_100k"
        if sync in figures and best in figures and figures[best] > 0:
            rows.append([f"{agent}: learning speed-up", "", "", "", "", f"{figures[sync] / figures[best]:.2f}x",
                         "", "", ""])  # fmt: skip
    header = ["path", "env steps", "threads", "sampling s", "learning s", "learn s/100k", "steps/s", "/ limit",
              "peak MiB"]  # fmt: skip
    return f"limit: {figures['limit']:,.0f} steps/s{note}\n" + format_table(header, rows)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (figures are medians)")
    parser.add_argument("--agents", nargs="+", choices=list(AGENTS), default=list(DEFAULT_AGENTS))
    parser.add_argument("--workers", type=int, default=None, help="rollout workers (default: the cores available)")
    parser.add_argument("--device", default="cpu", help="device of the best path: cpu, cuda (old path: cpu)")
    parser.add_argument("--overlap", action="store_true", help="also measure RL² with --overlap true (rl2_overlap)")
    parser.add_argument("--quick", action="store_true", help="meta-batch 2, 2 episodes per task, 1 round")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rounds < 1 or (args.workers is not None and args.workers < 1):
        parser.error(f"--rounds and --workers must be positive, got {args.rounds} and {args.workers}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    from metarl.config import available_cores

    workers = args.workers or available_cores()
    rounds = 1 if args.quick else args.rounds
    shrink = {"meta_batch": 2, "episodes_per_task": 2} if args.quick else {}
    paths = {a: [*PATHS, *(["overlap"] if args.overlap and a == "rl2" else [])] for a in args.agents}
    methods = ["limit", *[f"{a}_{p}" for a in args.agents for p in paths[a]]]
    samples: dict[str, list[dict[str, Any]]] = {m: [] for m in methods if m != "limit"}
    limit: list[float] = []
    for order in alternating_orders(methods, rounds):
        for method in order:
            if method == "limit":
                limit.append(measure_limit(workers, episodes=1))
                continue
            agent, path = method.split("_", 1)
            spec = {"config": AGENTS[agent], "workers": workers, **shrink,
                    "threads": 1 if path == "sync_1t" else None,
                    "device": "cpu" if path == "sync_1t" else args.device, "overlap": path == "overlap",
                    "flags": OLD_FLAGS[agent] if path == "sync_1t" else BEST_FLAGS[agent]}  # fmt: skip
            samples[method].append(run_child(spec))
            print(f"  {method}: {samples[method][-1]}", file=sys.stderr, flush=True)
    figures = summarise(samples, limit)
    note = " (--quick: meta-batch 2, 2 episodes per task, 1 round; not the reference settings)" if args.quick else ""
    print(table(figures, note))
    if args.json:
        meta = {"quick": bool(args.quick), "rounds": rounds, "workers": workers, "device": args.device,
                "best_flags": BEST_FLAGS,
                "cores": available_cores(), "machine": machine_info(), "versions": package_versions(),
                "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])}  # fmt: skip
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**figures, "meta": meta}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("MUJOCO_GL", "disable")
    sys.exit(main())
