"""RolloutEngine: whole episodes of many tasks from worker processes, one batched policy call per step.

>>> from metarl.envs import make_distribution
>>> from metarl.rollout import RolloutEngine
>>> dist = make_distribution("ML10")
>>> with RolloutEngine(dist, num_workers=2) as engine:           # doctest: +SKIP
...     batch = engine.collect(policy, dist.sample(20), episodes_per_task=10, episodes_per_trial=10)
>>> batch.rewards.shape                                            # doctest: +SKIP
torch.Size([20, 10, 500])

Layers (each usable on its own):

* :mod:`~metarl.rollout.layout`: which family, worker and pipeline group each env slot has
  (cost-balanced across workers; a pure function of the arguments, so runs are reproducible).
* :class:`~metarl.rollout.pool.WorkerPool`: step level.  Per-slot commands and results live in one
  shared-memory block (:mod:`~metarl.rollout.shm`); one byte per worker and group step crosses a
  socket each way; dead workers are reported and restarted.  The gymnasium and SB3 adapters
  (:mod:`metarl.integrations`) drive it through :class:`~metarl.rollout.vector.VectorCore`.
* :class:`~metarl.rollout.collect.Collection`: one ``collect``: (task, trial) work units handed
  to free slots of their family, the per-step batched policy call, trajectory assembly, faults.

Where the time goes on a 2-core machine (measured with a probe removed since; it is ``benchmarks/_engine_probe.py``
at commit bce0993, and ``benchmarks/speed/sampler.py`` measures both layouts today): a driver
process that shares a core with a worker finds its caches cold at every policy call (an MLP call
costs 3-4x its warm time right after MuJoCo ran on that core) and evicts the worker's, and a worker
that blocks lets its core halt and come back cold.  Hence the defaults: the driver steps worker
0's slots itself (``host_worker``), so no two processes share a core, one policy call per step for
all slots (no pipeline groups: the driver's own stepping overlaps the workers'), and a short
adaptive poll before blocking (``spin_us``).
"""

from __future__ import annotations

import math
import os
import threading
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch

from metarl.errors import UserError, check_int
from metarl.rollout.collect import Collection
from metarl.rollout.layout import Layout, make_layout
from metarl.rollout.layout import family_costs as estimate_family_costs
from metarl.rollout.pool import BACKENDS, PoolBackend, StartMethod, WorkerPool
from metarl.rollout.transfer import HostTransfer, PackedTransfer
from metarl.rollout.types import Policy, Trajectories
from metarl.tasks import Task, TaskDistribution, families_of

Transfer = Literal["auto", "host", "packed"]
"""How policy batches reach the policy's device: ``host`` (CPU tensors), ``packed`` (one pinned buffer),
``auto`` (host for a CPU policy, packed otherwise)."""
TRANSFERS: tuple[str, ...] = typing.get_args(Transfer)


def resolve_device(device: str | torch.device, policy: Any = None, *, require_available: bool = False) -> torch.device:
    """metarl's one device rule (the learner's and the engine's).

    ``"auto"`` with a policy: the policy's ``device`` attribute, else its first parameter's device, else the
    CPU; without one: CUDA when available, else the CPU.  A named device must parse (``UserError``); with
    ``require_available`` a CUDA device must also be present (``UserError``), otherwise that is left to the
    caller (an engine may be built for CUDA on a machine without it; it refuses at ``collect``)."""
    if isinstance(device, torch.device):
        resolved = device
    elif device == "auto":
        if policy is None:
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        found = getattr(policy, "device", None)
        if isinstance(found, (torch.device, str)):
            return torch.device(found)
        if isinstance(policy, torch.nn.Module):
            for p in policy.parameters():
                return p.device
        return torch.device("cpu")
    else:
        try:
            resolved = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise UserError(f"invalid device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'") from exc
    if require_available and resolved.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {str(device)!r} requested but CUDA is not available; use --device cpu or auto")
    return resolved


def checked_engine_state(state: Mapping[str, int]) -> tuple[int, int]:
    """``(seed, collects)`` of a saved engine state, or a ValueError saying what is wrong with it."""
    missing = {"seed", "collects"} - set(state)
    if missing:
        raise ValueError(f"engine state is missing {sorted(missing)}; got keys {sorted(state)}")
    seed, collects = state["seed"], state["collects"]
    return check_int("engine state seed", seed, 0), check_int("engine state collect count", collects, 0)


class RolloutEngine:
    """Collects whole episodes of many tasks with env slots in worker processes.

    Args:
        distribution: the task distribution; workers rebuild it from ``distribution.spec``.
        num_workers: env-stepping workers.  With ``backend="process"`` they are processes, except
            that by default (``host_worker``) the driver process runs worker 0's slots itself.
        slots_per_family: env slots (envs built once) per family; default: enough for about
            ``8 * num_workers`` slots in all, at least one per family.
        device: where the policy runs: ``"auto"`` (the policy's device), ``"cpu"``, ``"cuda[:N]"``.
        seed: root of the per-(collect, task, episode) env-seed and noise streams.
        backend: ``"process"`` (default) or ``"inline"`` (every slot in this process, same results:
            for debugging and tiny envs).
        host_worker: the driver process steps worker 0's slots itself, between policy calls, while
            the worker processes step theirs (default: on with two or more workers).  On a machine
            with as many cores as workers, every core then steps envs and no process shares a core:
            a separate driver would evict a worker's caches at every policy call and leave it idle
            while waiting, which costs more than the call itself.  Off keeps every env in a worker
            process, so a crashing env can never take down the driver.
        pipeline: two groups of slots, so that workers step one while the policy acts on the other
            (default: on unless ``host_worker``, where the driver's own stepping already overlaps
            the workers').
        spin_us: how long a process that waits for the other side (a worker for its next command,
            the driver for results) polls before blocking; a halted core loses its caches.  Default:
            3000 when there are no more busy processes than CPUs, else 0.
        pin_workers: bind worker process ``w`` to the ``w``-th CPU this process may use.
        families: the families to serve (default: all of the distribution's); a task of another
            family is refused by :meth:`collect`.
        family_costs: relative step cost per family, to balance slots across workers (default: a
            measured table for Meta-World, equal costs otherwise).
        max_restarts: how often one trial may be lost to a dying worker before :meth:`collect` gives up.
        start_method: ``"spawn"`` (default) or ``"forkserver"``.
        inference_threads: torch threads for the policy call on CPU during :meth:`collect` (restored
            afterwards); 1 leaves the cores to the workers.
        transfer: how a step's rows reach the policy's device: ``"auto"`` (``"packed"`` on CUDA,
            ``"host"`` on CPU), ``"packed"`` (one pinned buffer, one copy each way) or ``"host"``.
    """

    def __init__(
        self,
        distribution: TaskDistribution,
        num_workers: int = 2,
        slots_per_family: int | None = None,
        device: str | torch.device = "auto",
        seed: int = 0,
        backend: PoolBackend = "process",
        host_worker: bool | None = None,
        pipeline: bool | None = None,
        spin_us: float | None = None,
        pin_workers: bool = False,
        families: Sequence[str] | None = None,
        family_costs: Mapping[str, float] | None = None,
        max_restarts: int = 3,
        start_method: StartMethod = "spawn",
        inference_threads: int | None = 1,
        transfer: Transfer = "auto",
    ) -> None:
        if not isinstance(distribution, TaskDistribution):
            raise TypeError(f"distribution must be a metarl TaskDistribution, got {type(distribution).__name__}")
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {list(BACKENDS)}")
        num_workers = check_int("num_workers", num_workers)
        seed = check_int("seed", seed, 0)
        max_restarts = check_int("max_restarts", max_restarts, 0)
        if inference_threads is not None:
            inference_threads = check_int("inference_threads", inference_threads)
        if device != "auto":
            resolve_device(device)
        if transfer not in TRANSFERS:
            raise ValueError(f"unknown transfer {transfer!r}; choose one of {list(TRANSFERS)}")
        if spin_us is not None and not (isinstance(spin_us, (int, float)) and 0 <= spin_us < 1e6):
            raise ValueError(f"spin_us must be a number of microseconds in [0, 1e6), got {spin_us!r}")
        served = list(distribution.families if families is None else families)
        unknown = [f for f in served if f not in distribution.families]
        if unknown or not served or len(set(served)) != len(served):
            raise ValueError(
                f"families must be distinct families of {distribution.name!r}, got {list(served)}; "
                f"valid: {list(distribution.families)}"
            )
        if slots_per_family is None:
            slots_per_family = max(1, math.ceil(8 * num_workers / len(served)))
        slots_per_family = check_int("slots_per_family", slots_per_family)
        total = slots_per_family * len(served)
        if host_worker is None:  # the defaults do not depend on the backend: same layout, same results
            host_worker = num_workers >= 2
        if pipeline is None:
            pipeline = not host_worker
        groups = 2 if pipeline and total >= 2 * num_workers else 1
        train_families = families_of(distribution.tasks("train"))
        self.distribution = distribution
        self.seed = seed
        self.device = device
        self.backend = backend
        self.max_restarts = max_restarts
        self.inference_threads = inference_threads
        self.transfer = transfer
        self.families: tuple[str, ...] = tuple(served)
        self.max_episode_steps = int(distribution.max_episode_steps)
        self.layout: Layout = make_layout(
            served,
            slots_per_family,
            num_workers,
            groups,
            estimate_family_costs(served, family_costs),
            first_families=train_families,
        )
        hosted = 1 if host_worker and backend == "process" else 0
        if spin_us is None:
            busy = self.layout.num_workers - hosted + 1  # worker processes and the driver
            cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
            spin_us = 3000.0 if backend == "process" and busy <= cpus else 0.0
        self.host_worker = bool(hosted)
        self.spin_us = float(spin_us)
        self.slots_per_family = slots_per_family
        self._collects = 0
        self._dirty = False
        self.pool = WorkerPool(
            distribution,
            self.layout,
            backend=backend,
            start_method=start_method,
            pin_workers=pin_workers,
            local_workers=hosted,
            spin_us=self.spin_us,
        )

    # -- properties ------------------------------------------------------------------------------
    @property
    def num_env_slots(self) -> int:
        """Env slots in all (the ``num_slots`` given to ``policy.initial_state``)."""
        return self.layout.num_slots

    @property
    def num_workers(self) -> int:
        return self.layout.num_workers

    @property
    def closed(self) -> bool:
        return self.pool.closed

    def worker_pids(self) -> list[int]:
        return self.pool.worker_pids()

    # -- collecting ------------------------------------------------------------------------------
    def _check_tasks(self, tasks: Sequence[Task]) -> list[Task]:
        if isinstance(tasks, Task) or not isinstance(tasks, Sequence):
            raise TypeError(f"tasks must be a sequence of Task, got {type(tasks).__name__}")
        tasks = list(tasks)
        if not tasks:
            raise ValueError("tasks is empty; give at least one task")
        served = set(self.families)
        for task in tasks:
            self.distribution.validate_task(task)
            if task.family not in served:
                raise ValueError(
                    f"task {task.id} is of family {task.family!r}, which this engine does not serve; "
                    f"served families: {list(self.families)} (pass families=... to RolloutEngine)"
                )
        return tasks

    def collect(
        self,
        policy: Policy,
        tasks: Sequence[Task],
        episodes_per_task: int,
        episodes_per_trial: int | None = None,
        deterministic: bool = False,
        *,
        task_offset: int = 0,
        collect_index: int | None = None,
        stop: threading.Event | None = None,
        own_threads: bool = True,
    ) -> Trajectories:
        """Run ``episodes_per_task`` whole episodes of every task; result shaped ``[task, episode, time, ...]``.

        ``task_offset`` and ``collect_index`` are for distributed backends, which give each machine a
        share of a collect: the share's tasks sit at positions ``task_offset ..`` of the whole task
        list (``step.task`` and the seed/noise streams use those positions), and ``collect_index``
        names the collect (default: this engine's own count).

        With ``episodes_per_trial=k`` (RL²), each task's episodes run as ``episodes_per_task / k``
        trials of ``k`` consecutive episodes in one slot; ``step.trial_start`` marks a trial's first
        step (reset recurrent state there) and the state is carried across its episodes.
        ``deterministic`` is passed to the policy in every :class:`StepBatch`.

        For a collect in a thread beside the learner (:class:`~metarl.rollout.background.BackgroundCollect`):
        ``stop``, once set, makes it raise :class:`~metarl.rollout.errors.CollectCancelled` at its next step,
        and ``own_threads=False`` leaves torch's thread count, which is process-wide, to the learner.
        """
        if self.pool.closed:
            raise RuntimeError("this RolloutEngine is closed")
        if not callable(getattr(policy, "act", None)) or not callable(getattr(policy, "initial_state", None)):
            raise TypeError(
                f"policy must implement act(step, state) and initial_state(num_slots) "
                f"(metarl.rollout.Policy), got {type(policy).__name__}"
            )
        tasks = self._check_tasks(tasks)
        episodes_per_task = check_int("episodes_per_task", episodes_per_task)
        k = 1 if episodes_per_trial is None else check_int("episodes_per_trial", episodes_per_trial)
        if episodes_per_task % k:
            raise ValueError(f"episodes_per_task ({episodes_per_task}) must be a multiple of episodes_per_trial ({k})")
        device = resolve_device(self.device, policy)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"the policy runs on {device} but CUDA is not available here; use device='cpu'")
        transfer: HostTransfer | PackedTransfer
        cols = self.pool.block.cols
        if self.transfer == "host" or (self.transfer == "auto" and device.type == "cpu"):
            transfer = HostTransfer(device, cols)
        else:
            transfer = PackedTransfer(device, self.num_env_slots, cols, pin=device.type == "cuda")
        if self._dirty:
            self.pool.drain()
            self._dirty = False
        index = self._collects if collect_index is None else int(collect_index)
        self._collects += 1
        check_int("task_offset", task_offset, 0)
        threads = torch.get_num_threads()
        if own_threads and self.inference_threads is not None and device.type == "cpu":
            torch.set_num_threads(self.inference_threads)
        try:
            with torch.no_grad():
                run = Collection(
                    self.pool, self.layout, self.max_episode_steps, self.seed, self.max_restarts,
                    policy, tasks, episodes_per_task, k, index, bool(deterministic), transfer, task_offset, stop,
                )  # fmt: skip
                return run.run()
        except BaseException:
            self._dirty = True
            raise
        finally:
            if own_threads and torch.get_num_threads() != threads:
                torch.set_num_threads(threads)

    # -- state -----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, int]:
        """The seed and the number of collects so far (successive collects draw fresh streams)."""
        return {"seed": self.seed, "collects": self._collects}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        """Continue the streams of a saved engine exactly."""
        self.seed, self._collects = checked_engine_state(state)

    # -- lifetime --------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the workers and free the shared memory (idempotent)."""
        self.pool.close()

    def __enter__(self) -> RolloutEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"RolloutEngine({self.distribution.name!r}, backend={self.backend!r}, workers={self.num_workers}, "
            f"slots={self.num_env_slots}, groups={self.layout.num_groups})"
        )
