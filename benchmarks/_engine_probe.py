"""Quick probe of the rollout engine's speed against the 2-process limit, in one run (development aid).

    python benchmarks/_engine_probe.py [--episodes 2] [--repeats 3] [--workers 2] [--slots 1]
                                       [--policy mlp,gru,rand] [--configs default,nohost,nohost-pin,host-pipe]

``limit``: ``workers`` bare processes, each stepping round-robin exactly the envs the engine gives
its worker, random actions, no policy and no IPC (time = last end - first start).  Engine rows:
``engine.collect`` over the ML10 train tasks (one per class, times ``--slots``) with the MLP
39→256→256→4 and the GRU policy of ``benchmarks/_common.py`` (RL² trials for the GRU).  Each
repeat measures the limit and then every engine row, so ratios compare runs made close together;
figures are medians over repeats.  The machine may be shared: treat figures as noisy.  Also prints
CPU time per env step of the limit processes, the engine's workers and the driver.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import time
from typing import Any

import numpy as np
import torch

from metarl.envs import make_distribution
from metarl.rollout import RolloutEngine
from metarl.rollout.policies import RandomPolicy
from metarl.rollout.types import StepBatch

try:  # the benchmark's own policies, when run from the repository
    from _common import GRUPolicy, MLPPolicy  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover
    GRUPolicy = MLPPolicy = None


class MLP:
    """Fallback MLP 39→256→256→4 (tanh), Gaussian noise."""

    def __init__(self, obs_dim: int = 39, act_dim: int = 4) -> None:
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(obs_dim, 256), torch.nn.Tanh(), torch.nn.Linear(256, 256), torch.nn.Tanh(),
            torch.nn.Linear(256, act_dim),
        )  # fmt: skip
        self.device = torch.device("cpu")

    def initial_state(self, num_slots: int) -> None:
        return None

    def act(self, step: StepBatch, state: Any) -> tuple[torch.Tensor, Any, dict[str, torch.Tensor]]:
        return self.net(step.obs) + 0.3 * step.noise, state, {}


def _limit_worker(families: list[str], steps_per_env: int, barrier: Any, out: Any) -> None:
    torch.set_num_threads(1)
    dist = make_distribution("ML10")
    by_family = {t.family: t for t in dist.tasks("train")}
    envs = []
    for fam in families:
        env = dist.make_env(fam)
        dist.set_task(env, by_family[fam])
        dist.reset(env, 0)
        envs.append(env)
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (steps_per_env, 4)).astype(np.float32)
    horizon = dist.max_episode_steps
    barrier.wait()
    t0 = time.perf_counter()
    c0 = time.process_time()
    n = 0
    for i in range(steps_per_env):
        a = actions[i]
        for env in envs:
            env.step(a)
            n += 1
            if (i + 1) % horizon == 0:
                dist.reset(env, i)
    t1 = time.perf_counter()
    out.put((n, t0, t1, time.process_time() - c0))


def measure_limit(assignment: list[list[str]], steps_per_env: int) -> tuple[float, float]:
    """(steps/s, CPU µs per step) of bare processes stepping ``assignment``'s envs round-robin."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(len(assignment))
    out = ctx.Queue()
    procs = [ctx.Process(target=_limit_worker, args=(fams, steps_per_env, barrier, out)) for fams in assignment]
    for p in procs:
        p.start()
    res = [out.get() for _ in procs]
    for p in procs:
        p.join()
    n = sum(r[0] for r in res)
    return n / (max(r[2] for r in res) - min(r[1] for r in res)), sum(r[3] for r in res) / n * 1e6


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _engine_options(cfg: str) -> dict[str, Any]:
    """``default`` or dash-separated ``pipe|nopipe``, ``host|nohost``, ``pin``, ``spinN`` (µs)."""
    opts: dict[str, Any] = {}
    for part in cfg.split("-"):
        if part in ("pipe", "nopipe"):
            opts["pipeline"] = part == "pipe"
        elif part in ("host", "nohost"):
            opts["host_worker"] = part == "host"
        elif part == "pin":
            opts["pin_workers"] = True
        elif part.startswith("spin"):
            opts["spin_us"] = float(part[4:])
        elif part != "default":
            raise ValueError(f"unknown engine option {part!r} in {cfg!r}")
    return opts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--episodes", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--slots", type=int, default=1)
    ap.add_argument("--policy", default="mlp,gru")
    ap.add_argument("--configs", default="default", help="comma list of engine options (see _engine_options)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    dist = make_distribution("ML10")
    train = dist.tasks("train")
    fams = list(dict.fromkeys(t.family for t in train))
    tasks = [[t for t in train if t.family == f][k] for f in fams for k in range(args.slots)]
    engines: dict[str, RolloutEngine] = {}
    for cfg in args.configs.split(","):
        t0 = time.perf_counter()
        engines[cfg] = RolloutEngine(
            dist,
            num_workers=args.workers,
            slots_per_family=args.slots,
            **_engine_options(cfg),
        )
        print(f"{cfg}: built in {time.perf_counter() - t0:.1f}s: {engines[cfg]}")
    layout = next(iter(engines.values())).layout
    assignment = [[layout.slot_family[s] for s in layout.worker_slots(w) if layout.slot_family[s] in fams]
                  for w in range(layout.num_workers)]  # fmt: skip
    for w, a in enumerate(assignment):
        print(f"  worker {w}: {a}")
    policies: dict[str, Any] = {
        "mlp": MLPPolicy() if MLPPolicy is not None else MLP(),
        "gru": GRUPolicy() if GRUPolicy is not None else None,
        "rand": RandomPolicy(dist.action_space),
    }
    names = [n for n in args.policy.split(",") if policies.get(n) is not None]
    rates: dict[str, list[float]] = {"limit": []}
    ratios: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {"limit": []}
    steps = args.episodes * dist.max_episode_steps
    try:
        for _ in range(args.repeats):
            lim, lim_cpu = measure_limit(assignment, steps)
            rates["limit"].append(lim)
            cpu["limit"].append(lim_cpu)
            line = [f"limit={lim:.0f}"]
            for cfg, engine in engines.items():
                for n in names:
                    key = f"{n}/{cfg}"
                    pids = engine.worker_pids()
                    w0 = [cpu_seconds(p) for p in pids]
                    d0 = time.process_time()
                    t = time.perf_counter()
                    traj = engine.collect(
                        policies[n], tasks, episodes_per_task=args.episodes,
                        episodes_per_trial=args.episodes if n == "gru" else None,
                    )  # fmt: skip
                    rate = traj.num_steps / (time.perf_counter() - t)
                    rates.setdefault(key, []).append(rate)
                    ratios.setdefault(key, []).append(rate / lim)
                    d1 = time.process_time() - d0
                    w1 = sum(cpu_seconds(p) - c for p, c in zip(pids, w0, strict=True))
                    cpu.setdefault(key + " workers", []).append(w1 / traj.num_steps * 1e6)
                    cpu.setdefault(key + " driver", []).append(d1 / traj.num_steps * 1e6)
                    line.append(f"{key}={rate:.0f} ({rate / lim:.2f})")
            print("  " + "  ".join(line), flush=True)
    finally:
        for engine in engines.values():
            engine.close()
    print("CPU µs per env step (median): " + ", ".join(f"{k} {statistics.median(v):.0f}" for k, v in cpu.items()))
    print(f"limit {statistics.median(rates['limit']):.0f} steps/s")
    for key, r in ratios.items():
        print(f"{key}: {statistics.median(rates[key]):.0f} steps/s, median ratio to limit {statistics.median(r):.2f}")


if __name__ == "__main__":
    main()
