"""Shared helpers for metarl's benchmarks: env construction, benchmark policies, timing and tables.

Everything a child process needs (env factories, worker loops) is defined at module level, so it
pickles by reference under the ``forkserver`` and ``spawn`` start methods.  Import this module as
``benchmarks._common`` (the benchmark scripts put the repository root on ``sys.path``).

Shapes: ``R`` rows in one policy call, ``S`` env slots, ``O`` observation dim, ``A`` action dim.
"""

from __future__ import annotations

import functools
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from metarl.rollout.types import StepBatch
from metarl.tasks import DistributionSpec, Task, TaskDistribution

OBS_DIM = 39
"""Meta-World observation size."""
ACT_DIM = 4
"""Meta-World action size."""
HIDDEN = 256
"""Width of the benchmark policies (the RL² reference network: MLP 2×256 → GRU 256)."""
ACTION_STD = 0.5
"""Standard deviation of the Gaussian exploration noise of the benchmark policies."""


# --------------------------------------------------------------------------------------------
# process setup
# --------------------------------------------------------------------------------------------
def single_thread_torch() -> None:
    """``torch.set_num_threads(1)``: every benchmark process runs torch single-threaded."""
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def ray_loopback_env() -> dict[str, str]:
    """Keep a local Ray instance on loopback: call before ``ray.init``.

    Sets ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, ``RAY_USAGE_STATS_ENABLED=0``, points
    ``HTTP_PROXY``/``http_proxy`` at a closed local port and exempts 127.0.0.1 and localhost with
    ``NO_PROXY``/``no_proxy``.  Returns the variables set.
    """
    settings = {
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
        "HTTP_PROXY": "http://127.0.0.1:9",
        "http_proxy": "http://127.0.0.1:9",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    os.environ.update(settings)
    return settings


# --------------------------------------------------------------------------------------------
# envs: the ML10 train tasks, through metarl.envs (or Meta-World directly until that exists)
# --------------------------------------------------------------------------------------------
_DISTRIBUTIONS: dict[DistributionSpec, TaskDistribution] = {}
"""Distributions built (or handed over) in this process, by spec: each is built once per process."""


def _distribution_from_spec(spec: DistributionSpec) -> TaskDistribution:
    dist = _DISTRIBUTIONS.get(spec)
    if dist is None:
        dist = _DISTRIBUTIONS[spec] = spec.build()
    return dist


def make_task_env(spec: DistributionSpec, task: Task) -> gym.Env[Any, Any]:
    """Build one env of ``task``'s family in this process and switch it to ``task``.

    Picklable as ``functools.partial(make_task_env, spec, task)``; the distribution is rebuilt
    from ``spec`` once per process.
    """
    single_thread_torch()
    dist = _distribution_from_spec(spec)
    env = dist.make_env(task.family)
    dist.set_task(env, task)
    return env


def make_metaworld_env(env_name: str, task_data: bytes) -> gym.Env[Any, Any]:
    """Build a Meta-World v3 env directly and set its task (fallback while ``metarl.envs`` lacks Meta-World)."""
    import metaworld
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    single_thread_torch()
    env = ALL_V3_ENVIRONMENTS[env_name]()
    env.set_task(metaworld.Task(env_name=env_name, data=task_data))
    return env


@dataclass
class BenchEnvs:
    """The env set of one benchmark configuration: tasks in a fixed order, and how to build their envs.

    ``env_fns[i]`` builds env ``i`` (a picklable :func:`functools.partial`); ``families[i]`` is its
    env class.  ``distribution`` and ``tasks`` are the metarl objects the engine needs; both are
    ``None`` in the Meta-World fallback.  Every episode lasts exactly ``horizon`` steps (Meta-World
    truncates at 500 and, without terminate-on-success, never terminates earlier).
    """

    source: str
    families: list[str]
    env_fns: list[Callable[[], gym.Env[Any, Any]]]
    distribution: TaskDistribution | None
    tasks: list[Task] | None
    horizon: int = 500

    @property
    def num_envs(self) -> int:
        return len(self.env_fns)


def _pick_per_class(items: Iterable[Any], family_of: Callable[[Any], str], per_class: int, classes: int) -> list[Any]:
    """The first ``per_class`` items of each of the first ``classes`` families, ordered round by round.

    Order: ``[f0#0, f1#0, ..., f9#0, f0#1, f1#1, ...]``, so alternating envs between two workers
    gives each worker the same classes in both rounds.
    """
    by_family: dict[str, list[Any]] = {}
    for item in items:
        by_family.setdefault(family_of(item), []).append(item)
    families = list(by_family)[:classes]
    if len(families) < classes:
        raise ValueError(f"asked for {classes} classes; only {len(by_family)} available: {list(by_family)}")
    out: list[Any] = []
    for k in range(per_class):
        for fam in families:
            if len(by_family[fam]) <= k:
                raise ValueError(f"class {fam!r} has only {len(by_family[fam])} train tasks; asked for {per_class}")
            out.append(by_family[fam][k])
    return out


def metarl_has_metaworld() -> bool:
    """Whether ``metarl.envs.metaworld`` (the Meta-World distributions) can be imported."""
    import importlib.util

    return importlib.util.find_spec("metarl.envs.metaworld") is not None


@functools.lru_cache(maxsize=2)
def _ml10_distribution(seed: int) -> TaskDistribution:
    from metarl.envs import make_distribution

    return make_distribution("ML10", seed=seed)


@functools.lru_cache(maxsize=2)
def _metaworld_ml10(seed: int) -> Any:
    import metaworld

    return metaworld.ML10(seed=seed)


def ml10_train_envs(per_class: int, classes: int = 10, seed: int = 0) -> BenchEnvs:
    """The first ``per_class`` ML10 train tasks of each of the first ``classes`` train classes.

    Built through ``metarl.envs.make_distribution("ML10")``: ``dist.make_env(family)`` then
    ``dist.set_task(env, task)``.  If metarl's Meta-World module is not installed yet, Meta-World's
    own ``metaworld.ML10`` is used instead (and ``source`` says so; the engine rows then cannot run).
    """
    if not 1 <= classes <= 10:
        raise ValueError(f"classes must be in 1..10 (ML10 has 10 train classes), got {classes}")
    if per_class < 1:
        raise ValueError(f"per_class must be a positive integer, got {per_class}")
    if metarl_has_metaworld():
        dist = _ml10_distribution(seed)
        tasks: list[Task] = _pick_per_class(dist.tasks("train"), lambda t: t.family, per_class, classes)
        spec = dist.spec
        _DISTRIBUTIONS.setdefault(spec, dist)  # envs built in this process reuse it
        fns: list[Callable[[], gym.Env[Any, Any]]] = [functools.partial(make_task_env, spec, t) for t in tasks]
        families = [t.family for t in tasks]
        return BenchEnvs("metarl.envs ML10", families, fns, dist, tasks, dist.max_episode_steps)
    bench = _metaworld_ml10(seed)
    mw_tasks = _pick_per_class(bench.train_tasks, lambda t: t.env_name, per_class, classes)
    fns = [functools.partial(make_metaworld_env, t.env_name, t.data) for t in mw_tasks]
    source = "metaworld.ML10 (direct; metarl.envs.metaworld missing)"
    return BenchEnvs(source, [t.env_name for t in mw_tasks], fns, None, None)


# --------------------------------------------------------------------------------------------
# benchmark policies (engine Policy contract + a numpy entry point for vector-env loops)
# --------------------------------------------------------------------------------------------
def _linear_params(in_dim: int, out_dim: int) -> tuple[nn.Parameter, nn.Parameter]:
    """``(weight [in, out], bias [out])`` initialised as ``nn.Linear`` does, stored transposed.

    ``torch.addmm(bias, x, weight)`` then reads the weight in the layout the matrix product wants:
    right after MuJoCo ran on the core (cold caches) that saves about a third of an MLP call here.
    """
    layer = nn.Linear(in_dim, out_dim)
    return nn.Parameter(layer.weight.detach().t().contiguous()), nn.Parameter(layer.bias.detach().clone())


class MLPPolicy(nn.Module):
    """Gaussian MLP ``O → 256 → 256 → A`` (tanh), fixed noise std: the feed-forward benchmark policy.

    Implements the engine's :class:`metarl.rollout.Policy` (noise from ``step.noise``) and
    :meth:`sample` for plain vector-env loops (noise from torch's generator).  The maths of
    ``nn.Sequential(Linear, Tanh, Linear, Tanh, Linear)``, written as three ``addmm`` on weights
    stored ``[in, out]`` (every method's loop calls this same code).
    """

    def __init__(self, obs_dim: int = OBS_DIM, act_dim: int = ACT_DIM, hidden: int = HIDDEN, std: float = ACTION_STD):
        super().__init__()
        self.w1_OH, self.b1_H = _linear_params(obs_dim, hidden)
        self.w2_HH, self.b2_H = _linear_params(hidden, hidden)
        self.w3_HA, self.b3_A = _linear_params(hidden, act_dim)
        self.std = float(std)
        self.device = torch.device("cpu")

    def forward(self, obs_RO: torch.Tensor) -> torch.Tensor:
        """Mean action ``[R, A]``."""
        h_RH = torch.addmm(self.b1_H, obs_RO, self.w1_OH).tanh_()
        h_RH = torch.addmm(self.b2_H, h_RH, self.w2_HH).tanh_()
        return torch.addmm(self.b3_A, h_RH, self.w3_HA)

    def initial_state(self, num_slots: int) -> None:
        return None

    def act(self, step: StepBatch, state: None) -> tuple[torch.Tensor, None, dict[str, torch.Tensor]]:
        mean_RA = self(step.obs)
        action_RA = mean_RA if step.deterministic else mean_RA.add_(step.noise, alpha=self.std)
        return action_RA, None, {}

    @torch.no_grad()
    def sample(self, obs_RO: np.ndarray) -> np.ndarray:
        """Noisy actions ``[R, A]`` float32 for a batch of observations ``[R, O]`` (any float dtype)."""
        mean_RA = self(torch.as_tensor(obs_RO, dtype=torch.float32))
        return (mean_RA + self.std * torch.randn_like(mean_RA)).numpy()


class GRUPolicy(nn.Module):
    """RL²-style recurrent policy: MLP 2×256 (tanh) → GRU 256 → linear head, Gaussian noise.

    Input per row: observation ⊕ previous action ⊕ previous reward ⊕ previous done, as RL² feeds
    it (``step.inputs()``, a view of the engine's rows).  State: one hidden vector per env slot,
    ``[S, 256]``, updated in place; rows whose ``trial_start`` is set start from zeros, the others
    continue the slot's state across the episodes of a trial.  The GRU is ``nn.GRUCell``'s maths
    (gates r, z, n in that order) written out on weights stored ``[in, 3H]``: about a quarter
    cheaper per call here than the module with cold caches.  Inference only (its gates are updated
    in place, which autograd refuses); the benchmarks call it under ``torch.no_grad``.
    """

    def __init__(self, obs_dim: int = OBS_DIM, act_dim: int = ACT_DIM, hidden: int = HIDDEN, std: float = ACTION_STD):
        super().__init__()
        in_dim = obs_dim + act_dim + 2
        self.w1_IH, self.b1_H = _linear_params(in_dim, hidden)
        self.w2_HH, self.b2_H = _linear_params(hidden, hidden)
        cell = nn.GRUCell(hidden, hidden)
        self.wi_HG = nn.Parameter(cell.weight_ih.detach().t().contiguous())  # G = 3H: gates r, z, n
        self.wh_HG = nn.Parameter(cell.weight_hh.detach().t().contiguous())
        self.bi_G = nn.Parameter(cell.bias_ih.detach().clone())
        self.bh_G = nn.Parameter(cell.bias_hh.detach().clone())
        self.w3_HA, self.b3_A = _linear_params(hidden, act_dim)
        self.hidden = hidden
        self.std = float(std)
        self.device = torch.device("cpu")

    def initial_state(self, num_slots: int) -> torch.Tensor:
        return torch.zeros(num_slots, self.hidden, device=self.device)  # [S, H]

    def cell(self, x_RH: torch.Tensor, h_RH: torch.Tensor) -> torch.Tensor:
        """One GRU step: ``torch.gru_cell(x, h, wi.T, wh.T, bi, bh)``."""
        gi_RG = torch.addmm(self.bi_G, x_RH, self.wi_HG)
        gh_RG = torch.addmm(self.bh_G, h_RH, self.wh_HG)
        ir, iz, i_n = gi_RG.chunk(3, 1)
        hr, hz, h_n = gh_RG.chunk(3, 1)
        reset = ir.add_(hr).sigmoid_()
        update = iz.add_(hz).sigmoid_()
        new = torch.addcmul(i_n, reset, h_n).tanh_()
        return torch.lerp(new, h_RH, update)  # (1 - update) * new + update * h

    def act(self, step: StepBatch, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        h_RH = state[step.slot].masked_fill_(step.trial_start[:, None], 0.0)
        x_RH = torch.addmm(self.b1_H, step.inputs(), self.w1_IH).tanh_()
        x_RH = torch.addmm(self.b2_H, x_RH, self.w2_HH).tanh_()
        h_RH = self.cell(x_RH, h_RH)
        mean_RA = torch.addmm(self.b3_A, h_RH, self.w3_HA)
        action_RA = mean_RA if step.deterministic else mean_RA.add_(step.noise, alpha=self.std)
        return action_RA, state.index_copy_(0, step.slot, h_RH), {}  # the state is ours: update in place


# --------------------------------------------------------------------------------------------
# timing, statistics, tables, metadata
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Measurement:
    """One timed run: ``steps`` real env steps in ``seconds`` of wall time."""

    steps: int
    seconds: float

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.seconds if self.seconds > 0 else math.nan


def median(values: Sequence[float]) -> float:
    """Median of the finite values (NaN when none)."""
    finite = [v for v in values if math.isfinite(v)]
    return float(statistics.median(finite)) if finite else math.nan


def alternating_orders(methods: Sequence[str], repeats: int) -> list[list[str]]:
    """Method order for each repeat: forward, reversed, forward, ... so slow drift hits all methods alike."""
    return [list(methods) if r % 2 == 0 else list(reversed(methods)) for r in range(repeats)]


def format_rate(value: float | None) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:,.0f}"


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]], align_left: int = 1) -> str:
    """Plain-text table; the first ``align_left`` columns left-aligned, the rest right-aligned."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        pairs = enumerate(zip(cells, widths, strict=True))
        parts = [c.ljust(w) if i < align_left else c.rjust(w) for i, (c, w) in pairs]
        return "  ".join(parts).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def package_versions(names: Iterable[str] = ("metarl", "torch", "numpy", "gymnasium", "mujoco", "metaworld",
                                               "stable-baselines3", "ray")) -> dict[str, str | None]:  # fmt: skip
    """Installed versions of ``names`` (``None`` for packages not installed)."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def machine_info() -> dict[str, Any]:
    """CPU model, core count, memory, load average and Python/OS versions."""
    cpu = platform.processor() or None
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for row in fh:
                if row.startswith("model name"):
                    cpu = row.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gib = None
    if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        mem_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "memory_gib": mem_gib,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }


def now() -> float:
    """Monotonic clock shared by all processes of the machine (``time.perf_counter``)."""
    return time.perf_counter()
