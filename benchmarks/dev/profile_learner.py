"""Where the learner's time goes: RL²'s PPO update and MAML-TRPO's inner step + TRPO step, profiled on batches
shaped like one ``rl2-ml10`` / ``maml-trpo-ml10`` iteration (no simulator: the learner's cost depends on the
shapes, not on what the numbers mean).

    python benchmarks/dev/profile_learner.py                    # both agents, the reference shapes, every core
    python benchmarks/dev/profile_learner.py --threads 1 --agents rl2 --top 20
    python benchmarks/dev/profile_learner.py --quick            # meta-batch 2: a smoke run, not a profile

For each agent it prints the wall-clock of each phase of the update and torch.profiler's operators sorted by
their own CPU time (``self``: time inside the operator, not its callees), with the share of the phase. RL²'s
batch is 20 trials of 10 x 500 steps with random observations, actions and rewards in Meta-World's ranges;
``target_kl`` is off so that every profile takes the reference's full 250 Adam steps.  MAML's batches are
20 tasks x 10 episodes x 500 steps before and after the inner step.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks._common` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch

from benchmarks._common import ACT_DIM, OBS_DIM, format_table, machine_info, package_versions


def synthetic_trajectories(
    tasks: int, episodes: int, horizon: int, episodes_per_trial: int, seed: int, rl2: bool
) -> Any:
    """Trajectories of ``tasks`` x ``episodes`` full episodes with Meta-World-like value ranges."""
    from metarl.rollout.types import Trajectories
    from metarl.tasks import Task

    g = torch.Generator().manual_seed(seed)
    shape = (tasks, episodes, horizon)
    extras = {}
    if rl2:  # behaviour log-probabilities of a unit Gaussian, a value estimate
        extras = {"log_prob": -0.5 * torch.randn(*shape, generator=g).pow(2) - 3.7, "value": torch.zeros(shape)}
    else:
        extras = {"log_prob": -0.5 * torch.randn(*shape, generator=g).pow(2) - 3.7}
    return Trajectories(
        tasks=[Task("synthetic", "train", "synthetic", i) for i in range(tasks)],
        obs=torch.rand(*shape, OBS_DIM, generator=g) * 2 - 1,
        actions=(torch.rand(*shape, ACT_DIM, generator=g) * 2 - 1),
        rewards=torch.rand(*shape, generator=g) * 10,
        terminated=torch.zeros(shape, dtype=torch.bool),
        truncated=torch.zeros(shape, dtype=torch.bool).index_fill_(2, torch.tensor([horizon - 1]), True),
        success=torch.zeros(shape, dtype=torch.bool),
        valid=torch.ones(shape, dtype=torch.bool),
        final_obs=torch.zeros(tasks, episodes, OBS_DIM),
        lengths=torch.full((tasks, episodes), horizon, dtype=torch.int64),
        episode_seeds=torch.zeros(tasks, episodes, dtype=torch.int64),
        extras=extras,
        episodes_per_trial=episodes_per_trial,
    )


def profiled(fn: Callable[[], Any]) -> tuple[float, Any, Any]:
    """(wall seconds, torch.profiler result, what ``fn`` returned) of one call of ``fn``."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        result = fn()
        wall = time.perf_counter() - t0
    return wall, prof, result


def top_ops(prof: Any, wall: float, top: int) -> list[dict[str, Any]]:
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    return [
        {"op": e.key, "calls": int(e.count), "self_s": e.self_cpu_time_total / 1e6,
         "share": e.self_cpu_time_total / 1e6 / wall}
        for e in rows
    ]  # fmt: skip


def profile_rl2(meta_batch: int, threads: int, top: int, seed: int, bf16: bool = False) -> dict[str, Any]:
    from metarl.agents.configs import get_config
    from metarl.agents.rl2 import RL2Agent, ppo_update

    named = get_config("rl2-ml10")
    cfg = dataclasses.replace(named.agent, ppo=dataclasses.replace(named.agent.ppo, target_kl=None, autocast_bf16=bf16))
    episodes = named.train.episodes_per_task
    agent = RL2Agent(OBS_DIM, ACT_DIM, cfg, episodes_per_task=episodes, seed=seed)
    traj = synthetic_trajectories(meta_batch, episodes, 500, cfg.episodes_per_trial, seed, rl2=True)
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    out = ppo_update(agent.policy, agent.optimizer, traj, cfg.ppo)
    wall = time.perf_counter() - t0
    # the operators of one epoch only: torch.profiler keeps every event of the run (each GRU time step's
    # kernels, 250 Adam steps x 250 steps), and post-processing a whole update's took over 24 GB
    prof_wall, prof, _ = profiled(
        lambda: ppo_update(agent.policy, agent.optimizer, traj, dataclasses.replace(cfg.ppo, epochs=1))
    )
    return {
        "env_steps": int(traj.num_steps),
        "phases_s": {"ppo_update": wall},
        "profiled": f"one epoch of the update ({prof_wall:.2f} s); shares are of that epoch",
        "adam_steps": out["optimizer_steps"],
        "autocast_bf16": bf16,
        "s_per_adam_step": wall / out["optimizer_steps"],
        "top": top_ops(prof, prof_wall, top),
    }


def profile_maml(meta_batch: int, threads: int, top: int, seed: int, fractions: Sequence[float]) -> dict[str, Any]:
    """The TRPO step timed with the curvature from all tasks and from fractions of them (``hvp_subsample``),
    each from the same θ, and how each step compares with the full one; then the full step profiled."""
    import copy

    from metarl.agents.configs import get_config
    from metarl.agents.maml import MAMLAgent, flat, hvp_tasks, task_batch, trpo_step

    named = get_config("maml-trpo-ml10")
    cfg = named.agent
    episodes = named.train.episodes_per_task
    agent = MAMLAgent(OBS_DIM, ACT_DIM, cfg, episodes_per_task=episodes, seed=seed)
    torch.set_num_threads(threads)
    pre_traj = synthetic_trajectories(meta_batch, episodes, 500, 1, seed, rl2=False)
    post_traj = synthetic_trajectories(meta_batch, episodes, 500, 1, seed + 1, rl2=False)
    phases: dict[str, float] = {}
    t0 = time.perf_counter()
    pre = task_batch(pre_traj, agent.policy, cfg)
    phases["task_batch (baseline, GAE)"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    agent.inner_step(None, pre, meta_batch)
    phases["inner step (collect-time)"] = time.perf_counter() - t0
    post = task_batch(post_traj, agent.policy, cfg)
    start = copy.deepcopy(agent.policy.state_dict())
    theta0 = flat([p.detach() for p in agent.policy.parameters()]).clone()
    steps: dict[float, dict[str, Any]] = {}
    for fraction in [1.0, *[f for f in fractions if f != 1.0]]:  # every one timed without the profiler
        agent.policy.load_state_dict(start)
        tasks = hvp_tasks(meta_batch, fraction, torch.Generator().manual_seed(seed))
        t0 = time.perf_counter()
        losses = trpo_step(agent.policy, [pre], post, cfg, tasks)
        wall = time.perf_counter() - t0
        step = flat([p.detach() for p in agent.policy.parameters()]) - theta0
        steps[fraction] = {
            "trpo_step_s": wall, "step": step, "kl": losses["losses/kl"],
            "surrogate_gain": losses["losses/surrogate_before"] - losses["losses/surrogate_after"],
            "accepted": losses["trpo/accepted"], "step_fraction": losses["trpo/step_fraction"],
        }  # fmt: skip
    full = steps[1.0]
    phases["trpo_step"] = full["trpo_step_s"]
    agent.policy.load_state_dict(start)  # the full step once more, under the profiler (which slows it)
    prof_wall, prof, _ = profiled(lambda: trpo_step(agent.policy, [pre], post, cfg))
    full_norm = float(full["step"].norm())
    subsample = []
    for fraction, r in steps.items():
        norm = float(r["step"].norm())
        subsample.append({
            "hvp_subsample": fraction, "trpo_step_s": r["trpo_step_s"],
            "speedup": full["trpo_step_s"] / r["trpo_step_s"],
            "cosine_to_full_step": float(r["step"] @ full["step"]) / (norm * full_norm) if norm * full_norm > 0
            else float("nan"),
            "norm_ratio": norm / full_norm if full_norm > 0 else float("nan"),
            "kl": r["kl"], "surrogate_gain": r["surrogate_gain"], "accepted": r["accepted"],
            "line_search_fraction": r["step_fraction"],
        })  # fmt: skip
    return {
        "env_steps": int(pre_traj.num_steps + post_traj.num_steps),
        "phases_s": phases,
        "profiled": f"the full TRPO step once more ({prof_wall:.1f} s under the profiler); shares are of that run",
        "top": top_ops(prof, prof_wall, top),
        "hvp_subsample": subsample,
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    from metarl.config import available_cores

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", nargs="+", choices=["rl2", "maml"], default=["rl2", "maml"])
    parser.add_argument("--threads", type=int, default=available_cores(), help="learner threads (default: cores)")
    parser.add_argument("--top", type=int, default=15, help="operators to list per agent")
    parser.add_argument("--quick", action="store_true", help="meta-batch 2 (a smoke run, not a profile)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--hvp-subsample", type=float, nargs="+", default=[0.5, 0.25],
        help="MAML: also time the TRPO step with the curvature from these fractions of the tasks",
    )  # fmt: skip
    parser.add_argument("--bf16", action="store_true", help="RL²: the update under bfloat16 autocast")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)
    if any(not 0 < f <= 1 for f in args.hvp_subsample):
        parser.error(f"--hvp-subsample fractions must be in (0, 1], got {args.hvp_subsample}")
    if args.threads < 1 or args.top < 1:
        parser.error(f"--threads and --top must be positive, got {args.threads} and {args.top}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from metarl.allocator import keep_freed_memory

    kept = keep_freed_memory()  # as metarl train sets it in the learner's process
    meta_batch = 2 if args.quick else 20
    figures: dict[str, Any] = {}
    for agent in args.agents:
        if agent == "rl2":
            res = profile_rl2(meta_batch, args.threads, args.top, args.seed, args.bf16)
        else:
            res = profile_maml(meta_batch, args.threads, args.top, args.seed, args.hvp_subsample)
        figures[agent] = res
        total = sum(res["phases_s"].values())
        precision = " (bfloat16 autocast)" if res.get("autocast_bf16") else ""
        print(f"\n{agent}{precision}: {res['env_steps']:,} samples, {args.threads} thread(s); "
              + ", ".join(f"{k} {v:.2f} s" for k, v in res["phases_s"].items())
              + f"; learning {total * 100_000 / res['env_steps']:.1f} s per 100k samples")  # fmt: skip
        if agent == "rl2":
            ms = res["s_per_adam_step"] * 1000
            print(f"  {res['adam_steps']:.0f} Adam steps, {ms:.0f} ms each; profiled: {res['profiled']}")
        phase = "ppo_update" if agent == "rl2" else "trpo_step"
        rows = [[r["op"], str(r["calls"]), f"{r['self_s']:.2f}", f"{100 * r['share']:.1f}%"] for r in res["top"]]
        print(f"  operators by own CPU time in {phase}:")
        print(format_table(["operator", "calls", "self s", f"of {phase}"], rows))
        if agent == "maml":
            rows = [
                [f"{r['hvp_subsample']:g}", f"{r['trpo_step_s']:.2f}", f"{r['speedup']:.2f}x",
                 f"{r['cosine_to_full_step']:.3f}", f"{r['norm_ratio']:.2f}", f"{r['kl']:.4f}",
                 f"{r['surrogate_gain']:.4f}", f"{r['line_search_fraction']:.2f}"]
                for r in res["hvp_subsample"]
            ]  # fmt: skip
            print("  the TRPO step with the curvature from a fraction of the tasks (same θ, same batch):")
            print(format_table(["hvp_subsample", "trpo_step s", "speed-up", "cos to full step", "norm ratio",
                                "KL after", "surrogate gain", "line-search frac"], rows))  # fmt: skip
    if args.json:
        meta = {"quick": bool(args.quick), "threads": args.threads, "meta_batch": meta_batch, "bf16": args.bf16,
                "allocator_kept": kept,
                "machine": machine_info(), "versions": package_versions(),
                "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])}  # fmt: skip
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**figures, "meta": meta}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
