"""MAML per-task inference: one vmapped call over stacked adapted weights vs a Python loop over tasks.

Every task of a MAML meta-batch has its own adapted weights, yet the rollout engine makes one
policy call per step.  ``TaskPolicy`` groups the rows by task, pads, and applies the stacked
weights with one ``torch.func.vmap``; ``LoopTaskPolicy`` is the reference loop (one forward per
task present).  Both are timed side by side on the same rows (rows of a task in random order),
after checking they return the same actions.

    python benchmarks/dev/maml_inference.py                 # 20 and 45 tasks, 2x64 and 2x512, CPU (+ CUDA if present)
    python benchmarks/dev/maml_inference.py --quick --json out.json

Targets (issue: MAML family): >= 5x at 45 tasks with the 2x64 policy on CPU; >= 10x on CUDA.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from metarl.agents.maml import GaussianMLPPolicy, LoopTaskPolicy, TaskPolicy  # noqa: E402
from metarl.rollout.types import StepBatch  # noqa: E402

OBS_DIM, ACT_DIM = 39, 4  # Meta-World


def make_step(num_tasks: int, rows_per_task: int, device: torch.device, seed: int = 0) -> StepBatch:
    """One engine call: ``rows_per_task`` rows of every task, shuffled."""
    g = torch.Generator().manual_seed(seed)
    task = torch.arange(num_tasks).repeat_interleave(rows_per_task)
    task = task[torch.randperm(task.numel(), generator=g)]
    r = task.numel()
    return StepBatch(
        obs=torch.randn(r, OBS_DIM, generator=g).to(device),
        prev_action=torch.zeros(r, ACT_DIM, device=device),
        prev_reward=torch.zeros(r, device=device),
        prev_done=torch.zeros(r, dtype=torch.bool, device=device),
        episode_start=torch.zeros(r, dtype=torch.bool, device=device),
        trial_start=torch.zeros(r, dtype=torch.bool, device=device),
        slot=torch.arange(r, device=device),
        task=task.to(device),
        noise=torch.randn(r, ACT_DIM, generator=g).to(device),
    )


def time_call(fn: Callable[[], object], device: torch.device, repeats: int, inner: int) -> float:
    """Median seconds per call over ``repeats`` blocks of ``inner`` calls (synchronised on CUDA)."""
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) / inner)
    return statistics.median(times)


def measure(
    num_tasks: int, hidden: tuple[int, ...], rows_per_task: int, device: torch.device, repeats: int, inner: int
) -> dict[str, float | int | str]:
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(OBS_DIM, ACT_DIM, hidden).to(device)
    stacked = {
        k: v.detach() + 0.01 * torch.randn(num_tasks, *v.shape, device=device) for k, v in policy.named_parameters()
    }
    step = make_step(num_tasks, rows_per_task, device)
    vmapped, loop = TaskPolicy(policy, stacked), LoopTaskPolicy(policy, stacked)
    a1, _, _ = vmapped.act(step, None)
    a2, _, _ = loop.act(step, None)
    torch.testing.assert_close(a1, a2, rtol=1e-4, atol=1e-5)  # same actions, or the timing means nothing
    for _ in range(3):  # warm-up
        vmapped.act(step, None)
        loop.act(step, None)
    t_vmap = t_loop = 0.0
    for order in range(2):  # alternate which one runs first, then take the better of each
        first, second = (vmapped, loop) if order == 0 else (loop, vmapped)
        ta = time_call(lambda p=first: p.act(step, None), device, repeats, inner)
        tb = time_call(lambda p=second: p.act(step, None), device, repeats, inner)
        tv, tl = (ta, tb) if order == 0 else (tb, ta)
        t_vmap = tv if order == 0 else min(t_vmap, tv)
        t_loop = tl if order == 0 else min(t_loop, tl)
    return {
        "device": device.type,
        "tasks": num_tasks,
        "hidden": "x".join(map(str, hidden)),
        "rows": num_tasks * rows_per_task,
        "vmap_us": t_vmap * 1e6,
        "loop_us": t_loop * 1e6,
        "speedup": t_loop / t_vmap,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--rows-per-task", type=int, nargs="+", default=[1, 10], help="rows of each task per call")
    parser.add_argument("--device", nargs="+", default=None, help="devices (default: cpu, and cuda when present)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on CPU")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    repeats, inner = (5, 20) if args.quick else (9, 50)
    rows = []
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {args.threads} CPU thread(s)")
    header = f"{'device':<6} {'tasks':>5} {'policy':>8} {'rows':>5} {'vmap µs':>9} {'loop µs':>9} {'loop/vmap':>9}"
    print(header)
    print("-" * len(header))
    for dev_name in devices:
        device = torch.device(dev_name)
        for hidden in ((64, 64), (512, 512)):
            for num_tasks in (20, 45):
                for rpt in args.rows_per_task:
                    row = measure(num_tasks, hidden, rpt, device, repeats, inner)
                    rows.append(row)
                    print(
                        f"{row['device']:<6} {row['tasks']:>5} {row['hidden']:>8} {row['rows']:>5} "
                        f"{row['vmap_us']:>9.0f} {row['loop_us']:>9.0f} {row['speedup']:>8.1f}x"
                    )
    targets = [r for r in rows if r["device"] == "cpu" and r["tasks"] == 45 and r["hidden"] == "64x64"]
    worst = min(float(r["speedup"]) for r in targets) if targets else float("nan")
    print(f"\ntarget >= 5x at 45 tasks, 2x64, CPU: worst {worst:.1f}x -> {'PASS' if worst >= 5 else 'FAIL'}")
    cuda = [r for r in rows if r["device"] == "cuda" and r["tasks"] == 45]
    if cuda:
        worst_cuda = min(float(r["speedup"]) for r in cuda)
        print(f"target >= 10x at 45 tasks on CUDA: worst {worst_cuda:.1f}x -> {'PASS' if worst_cuda >= 10 else 'FAIL'}")
    else:
        print("CUDA: not available here, not measured")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "threads": args.threads}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
