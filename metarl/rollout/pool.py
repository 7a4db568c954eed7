"""WorkerPool: env slots in worker processes (or in-process), driven step by step through shared memory.

This is the step-level layer under :class:`~metarl.rollout.RolloutEngine` and the gymnasium/SB3
adapters.  A user of the pool writes per-slot commands into :attr:`WorkerPool.block` (``op``,
``task_id``/``seed`` for resets, ``action`` for steps, ``next_task``/``next_seed`` to reset into the
next episode as soon as one ends), calls :meth:`submit` for a pipeline group, and later
:meth:`wait` for it; results (observations, rewards, flags) are then in the block.

Only one byte crosses a process boundary per worker and group step in each direction.  A waiting
side polls its socket for a bounded, adaptive time (``spin_us``, see :class:`~metarl.rollout.worker.Spinner`)
and then blocks on it.  A worker that dies is reported by :meth:`wait` and restarted by
:meth:`restart`; its slots' envs are rebuilt.  The first ``local_workers`` workers (all of them with
``backend="inline"``) run in this process instead: their slots execute inside :meth:`submit`,
after the worker processes have been told to start.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import threading
import typing
import weakref
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from metarl.rollout.layout import Layout
from metarl.rollout.shm import SharedBlock
from metarl.rollout.worker import (
    GROUP_BYTES,
    MSG_CONTROL,
    MSG_ERROR,
    MSG_FATAL,
    MSG_READY,
    SlotFailure,
    SlotRunner,
    Spinner,
    read_exact,
    recv_frame,
    send_frame,
    worker_main,
    write_all,
)
from metarl.tasks import Task, TaskDistribution

PoolBackend = Literal["process", "inline"]
StartMethod = Literal["spawn", "forkserver"]
BACKENDS: tuple[str, ...] = typing.get_args(PoolBackend)
START_METHODS: tuple[str, ...] = typing.get_args(StartMethod)


class PoolError(RuntimeError):
    """The pool cannot go on (a worker failed to start, or the pool is closed)."""


@dataclass(frozen=True)
class WorkerLost:
    """A worker process died; its slots' episodes in flight are gone."""

    worker: int
    slots: tuple[int, ...]
    cause: str


@dataclass
class WaitResult:
    """What :meth:`WorkerPool.wait` found besides the results in shared memory."""

    failures: list[SlotFailure] = field(default_factory=list)
    lost: list[WorkerLost] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.failures or self.lost)


def describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "stopped responding"
    if exitcode < 0:
        try:
            return f"killed by signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exited with code {exitcode}"


class _Handles:
    """Everything the finalizer must release; shared with the pool but holding no reference to it."""

    def __init__(self) -> None:
        self.procs: dict[int, Any] = {}
        self.conns: dict[int, Any] = {}
        self.block: SharedBlock | None = None
        self.runners: dict[int, SlotRunner] = {}

    def stop_worker(self, w: int, timeout: float) -> Any:
        proc = self.procs.pop(w, None)
        conn = self.conns.pop(w, None)
        if conn is not None:
            with contextlib.suppress(OSError):  # already gone
                send_frame(conn.fileno(), MSG_CONTROL, ("close",))
        if proc is not None:
            proc.join(timeout)
            if proc.is_alive():
                proc.kill()
                proc.join(5.0)
        if conn is not None:
            conn.close()
        return proc

    def shutdown(self) -> None:
        for w in list(self.conns):  # ask everyone first, then wait
            with contextlib.suppress(OSError):  # already gone
                send_frame(self.conns[w].fileno(), MSG_CONTROL, ("close",))
        for w in list(self.procs):
            self.stop_worker(w, timeout=5.0)
        for runner in self.runners.values():
            runner.close()
        self.runners.clear()
        block, self.block = self.block, None
        if block is not None:
            block.release(unlink=True)


def _group_members(layout: Layout, worker: int) -> tuple[list[int], list[str], list[int]]:
    slots = layout.worker_slots(worker)
    return slots, [layout.slot_family[s] for s in slots], [layout.slot_group[s] for s in slots]


class WorkerPool:
    """Env slots placed by ``layout``, run in worker processes (``backend="process"``) or in this one.

    Args:
        dist: the distribution (worker processes rebuild it from ``dist.spec``).
        layout: slot placement.
        backend: ``"process"`` or ``"inline"`` (every worker local; same results).
        start_method: ``"spawn"`` or ``"forkserver"``.
        pin_workers: bind worker process ``w`` to the ``w``-th CPU this process may use.
        local_workers: how many workers (the first ones) run in this process.
        spin_us: the longest poll before blocking, on either side of a socket (0: block at once).
    """

    def __init__(
        self,
        dist: TaskDistribution,
        layout: Layout,
        *,
        backend: PoolBackend = "process",
        start_method: StartMethod = "spawn",
        pin_workers: bool = False,
        local_workers: int = 0,
        spin_us: float = 0.0,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {list(BACKENDS)}")
        if start_method not in START_METHODS:
            raise ValueError(
                f"unknown start_method {start_method!r}; choose one of {list(START_METHODS)} "
                "(fork is unsafe with torch and MuJoCo)"
            )
        self.dist = dist
        self.layout = layout
        self.backend = backend
        self.obs_dim = int(max(1, _prod(dist.observation_space.shape)))
        self.act_dim = int(max(1, _prod(dist.action_space.shape)))
        self.max_episode_steps = int(dist.max_episode_steps)
        self.num_slots = layout.num_slots
        self._h = _Handles()
        self._finalizer = weakref.finalize(self, self._h.shutdown)
        self._outstanding: dict[int, deque[int]] = {w: deque() for w in range(layout.num_workers)}
        self._group_workers = [
            [w for w in range(layout.num_workers) if any(layout.slot_group[s] == g for s in layout.worker_slots(w))]
            for g in range(layout.num_groups)
        ]
        self._tasks: dict[int, Task] = {}
        self._dead: dict[int, str] = {}  # found dead while submitting
        self._closed = False
        self.restarts = 0
        cpus = sorted(os.sched_getaffinity(0)) if pin_workers and hasattr(os, "sched_getaffinity") else []
        self._cpus = cpus
        self._spin_us = float(spin_us)
        self._spinners: dict[int, Spinner] = {}
        n_local = layout.num_workers if backend == "inline" else min(local_workers, layout.num_workers)
        self._local = list(range(n_local))  # workers run inside this process, at submit time
        self._remote = list(range(n_local, layout.num_workers))
        self._local_pending: dict[int, list[SlotFailure]] = {}
        self.block = SharedBlock.create(self.num_slots, self.obs_dim, self.act_dim, shared=bool(self._remote))
        self._h.block = self.block
        self._local_groups = {
            w: [[s for s in layout.worker_slots(w) if layout.slot_group[s] == g] for g in (0, 1)] for w in self._local
        }
        self._group_remote = [[w for w in ws if w not in self._local] for ws in self._group_workers]
        for w in self._local:
            slots, fams, _ = _group_members(layout, w)
            self._h.runners[w] = SlotRunner(dist, slots, fams, self.block, self.max_episode_steps)
        if self._remote:
            self._ctx: Any = mp.get_context(start_method)
            self._spec = dist.spec
            try:
                for w in self._remote:
                    self._start(w)
                for w in self._remote:
                    self._await_ready(w)
            except BaseException:
                self.close()
                raise

    # -- process management -------------------------------------------------------------------
    def _start(self, w: int) -> None:
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        slots, fams, groups = _group_members(self.layout, w)
        main_thread = threading.current_thread() is threading.main_thread()
        assert self.block.name is not None
        proc = self._ctx.Process(
            target=worker_main,
            name=f"metarl-worker-{w}",
            args=(
                w,
                self._spec,
                slots,
                fams,
                groups,
                self.block.name,
                (self.num_slots, self.obs_dim, self.act_dim),
                self.max_episode_steps,
                child_conn,
                os.getpid() if self._ctx.get_start_method() == "spawn" else 0,  # forkserver: its own parent
                main_thread,
                self._cpus[w % len(self._cpus)] if self._cpus else None,
                self._spin_us,
            ),
            daemon=True,
        )
        proc.start()
        child_conn.close()  # so that the worker's death shows as end-of-file here
        self._h.procs[w] = proc
        self._h.conns[w] = parent_conn
        self._outstanding[w].clear()
        self._dead.pop(w, None)
        self._spinners.pop(w, None)
        if self._tasks:
            self._send_tasks(w)

    def _await_ready(self, w: int) -> None:
        fd = self._h.conns[w].fileno()
        kind = read_exact(fd, 1)
        if kind == MSG_READY:
            recv_frame(fd)
            return
        detail = recv_frame(fd) if kind == MSG_FATAL else ""
        proc = self._h.procs[w]
        proc.join(5.0)
        if not detail:
            detail = (
                "(it died before building its envs: see its traceback on stderr; a script that creates "
                "an engine at import time must guard that code with `if __name__ == '__main__':`)"
            )
        raise PoolError(
            f"worker {w} (families {self.layout.worker_families(w)}) did not start: "
            f"{describe_exit(proc.exitcode)}\n{detail}"
        )

    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (empty for the inline backend)."""
        return [p.pid for p in self._h.procs.values() if p.pid is not None]

    @property
    def shm_name(self) -> str | None:
        return self.block.name if self.block is not None else None

    def restart(self, worker: int) -> None:
        """Replace worker ``worker`` by a fresh process that rebuilds its envs (not waited for)."""
        self._check_open()
        if worker in self._local:
            return
        self._h.stop_worker(worker, timeout=1.0)
        self.restarts += 1
        self._start(worker)

    # -- task table ----------------------------------------------------------------------------
    def set_tasks(self, tasks: Sequence[Task]) -> None:
        """The task table that ``task_id``/``next_task`` index into (sent to each worker once)."""
        self._check_open()
        self._tasks = dict(enumerate(tasks))
        for runner in self._h.runners.values():
            runner.set_tasks(self._tasks)
        for w in list(self._h.conns):
            self._send_tasks(w)

    def _send_tasks(self, w: int) -> None:
        fams = set(self.layout.worker_families(w))
        mine = {i: t for i, t in self._tasks.items() if t.family in fams}
        try:
            send_frame(self._h.conns[w].fileno(), MSG_CONTROL, ("tasks", mine))
        except OSError as exc:
            self._dead[w] = f"connection failed ({exc})"

    # -- stepping ------------------------------------------------------------------------------
    def submit(self, group: int) -> None:
        """Run the commands in ``block.op`` of ``group``'s slots (asynchronously with processes)."""
        self._check_open()
        byte = GROUP_BYTES[group]
        conns = self._h.conns
        for w in self._group_remote[group]:  # remote workers first: they start while local slots run
            if w in self._dead:
                continue
            conn = conns.get(w)
            if conn is None:
                self._dead[w] = "not running (lost earlier and not restarted)"
                continue
            try:
                os.write(conn.fileno(), byte)
            except OSError as exc:
                self._dead[w] = f"connection failed ({exc})"
                continue
            self._outstanding[w].append(group)
        if self._local:
            failures: list[SlotFailure] = []
            for w in self._local:
                failures.extend(self._h.runners[w].run(self._local_groups[w][group]))
            self._local_pending[group] = failures

    def wait(self, group: int) -> WaitResult:
        """Block until ``group``'s commands are done on every worker; report failures and deaths."""
        self._check_open()
        result = WaitResult()
        if self._local:
            result.failures = self._local_pending.pop(group, [])
        for w in self._group_remote[group]:
            if w in self._dead:
                continue
            queue = self._outstanding[w]
            while queue and queue[0] != group:  # an earlier other-group command: finish it first
                self._read_until_done(w, queue[0], result)
                if w in self._dead:
                    break
            if queue and w not in self._dead:
                self._read_until_done(w, group, result)
        for w, cause in list(self._dead.items()):
            self._outstanding[w].clear()
            result.lost.append(WorkerLost(w, tuple(self.layout.worker_slots(w)), cause))
            self._h.stop_worker(w, timeout=1.0)
        self._dead.clear()
        return result

    def _read_until_done(self, w: int, group: int, result: WaitResult) -> None:
        fd = self._h.conns[w].fileno()
        detail = ""
        if self._spin_us > 0:
            spinner = self._spinners.get(w)
            if spinner is None:
                spinner = self._spinners[w] = Spinner(fd, self._spin_us)
            spinner.wait()
        try:
            while True:
                kind = os.read(fd, 1)
                if kind in GROUP_BYTES:
                    if kind[0] != group:
                        raise PoolError(f"worker {w} answered group {kind[0]} while group {group} was expected")
                    self._outstanding[w].popleft()
                    return
                if kind == MSG_ERROR:
                    result.failures.append(recv_frame(fd))
                elif kind == MSG_READY:
                    recv_frame(fd)
                elif kind == MSG_FATAL:
                    detail = str(recv_frame(fd))
                elif not kind:
                    break
                else:
                    raise PoolError(f"worker {w} sent an unknown message {kind!r}")
        except (EOFError, ConnectionResetError):
            pass
        proc = self._h.procs[w]
        proc.join(2.0)
        cause = describe_exit(proc.exitcode if not proc.is_alive() else None)
        self._dead[w] = f"{cause}\n{detail}".rstrip()

    def drain(self) -> None:
        """Wait for every outstanding command (results discarded); restart workers found dead."""
        if self._closed:
            return
        self._local_pending = {}
        result = WaitResult()
        for w, queue in self._outstanding.items():
            while queue and w not in self._dead:
                self._read_until_done(w, queue[0], result)
        for w in list(self._dead):
            self._outstanding[w].clear()
            self._dead.pop(w)
            self.restart(w)

    # -- shutdown ------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise PoolError("the worker pool is closed")

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Stop the workers, close the envs and unlink the shared memory (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._finalizer()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _prod(shape: Sequence[int]) -> int:
    out = 1
    for d in shape:
        out *= int(d)
    return out


__all__ = ["BACKENDS", "PoolError", "SlotFailure", "WaitResult", "WorkerLost", "WorkerPool", "write_all"]
