"""Worker side of the pool: env slots that execute per-slot commands from shared memory.

This module imports neither torch nor any agent code, so worker processes start quickly.

Wire protocol over each worker's socket (one byte for the hot path, framed pickles otherwise):

* driver → worker: ``b"\\x00"``/``b"\\x01"`` run group 0/1; ``b"C"`` + frame: a control message
  (``("tasks", {task_pos: Task})`` or ``("close",)``).
* worker → driver: ``b"\\x00"``/``b"\\x01"`` group done; ``b"E"`` + frame: a slot failed (sent
  before the group's done byte); ``b"R"`` + frame: ready; ``b"F"`` + frame: fatal error, exiting.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pickle
import select
import signal
import struct
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from metarl.rollout.shm import OP_IDLE, OP_RESET, OP_STEP, SharedBlock
from metarl.tasks import DistributionSpec, Task, TaskDistribution

GROUP_BYTES = (b"\x00", b"\x01")
"""The one-byte messages of the hot path: driver → worker "run group g", worker → driver "group g done"."""
MSG_ERROR = b"E"
MSG_READY = b"R"
MSG_FATAL = b"F"
MSG_CONTROL = b"C"
_HEADER = struct.Struct("<I")


@dataclass(frozen=True)
class SlotFailure:
    """An exception raised by an env (or its distribution) while serving one slot."""

    slot: int
    op: str  # "step" or "reset" (a reset switches the slot's env to its task)
    task_pos: int  # position of the slot's task in the task table (-1 if unknown)
    task_id: str
    traceback: str


class SlotRunner:
    """The envs of some slots and the code that runs their commands (used in-process and in workers)."""

    def __init__(
        self,
        dist: TaskDistribution,
        slots: Sequence[int],
        families: Sequence[str],
        block: SharedBlock,
        max_episode_steps: int,
    ) -> None:
        self.dist = dist
        self.block = block
        self.max_steps = int(max_episode_steps)
        self.act_shape = tuple(dist.action_space.shape)
        self.act_dtype = dist.action_space.dtype
        # the input-row columns, resolved once (the step path runs for every env step)
        cols = block.cols
        self._obs, self._action, self._reward = cols.obs, cols.action, cols.reward
        self._action_and_reward = cols.action_and_reward
        self.envs: dict[int, Any] = {}
        for s, fam in zip(slots, families, strict=True):
            self.envs[s] = dist.make_env(fam)
        self.t: dict[int, int] = dict.fromkeys(slots, 0)
        self.current: dict[int, int] = dict.fromkeys(slots, -1)
        self.tasks: dict[int, Task] = {}

    def set_tasks(self, tasks: dict[int, Task]) -> None:
        self.tasks = tasks

    def _reset(self, s: int, task_pos: int, seed: int) -> None:
        env = self.envs[s]
        self.current[s] = task_pos
        task = self.tasks[task_pos]
        self.dist.set_task(env, task)
        obs, _ = self.dist.reset(env, int(seed))
        self.t[s] = 0
        row = self.block.x[s]
        row[self._obs] = np.asarray(obs).reshape(-1)
        row[self._action_and_reward] = 0.0  # zero at episode start

    def _step(self, s: int) -> None:
        b = self.block
        row = b.x[s]
        action = row[self._action].astype(self.act_dtype).reshape(self.act_shape)
        obs, reward, terminated, truncated, info = self.envs[s].step(action)
        t = self.t[s] + 1
        self.t[s] = t
        if t >= self.max_steps and not terminated:
            truncated = True
        b.res[s] = (reward, terminated, truncated, bool(info.get("success", False)))
        if terminated or truncated:
            b.final_obs[s] = np.asarray(obs).reshape(-1)
            next_seed = int(b.next_seed[s])
            if next_seed >= 0:
                b.next_seed[s] = -1
                self._reset(s, int(b.next_task[s]), next_seed)
        else:
            row[self._obs] = np.asarray(obs).reshape(-1)
            row[self._reward] = reward

    def run(self, slots: Sequence[int]) -> list[SlotFailure]:
        """Execute the pending command of every slot in ``slots``; return the failures."""
        op_of = self.block.op
        failures: list[SlotFailure] = []
        for s in slots:
            op = op_of[s]
            if op == OP_IDLE:
                continue
            try:
                if op == OP_STEP:
                    self._step(s)
                elif op == OP_RESET:
                    self._reset(s, int(self.block.task_id[s]), int(self.block.seed[s]))
            except Exception:
                pos = self.current[s]
                task = self.tasks.get(pos)
                failures.append(
                    SlotFailure(
                        s,
                        "step" if op == OP_STEP else "reset",
                        pos,
                        task.id if task is not None else "?",
                        traceback.format_exc(),
                    )
                )
                self.block.res[s] = 0.0
        return failures

    def close(self) -> None:
        envs, self.envs = self.envs, {}
        for env in envs.values():
            env.close()


# -- process plumbing -------------------------------------------------------------------------
class Spinner:
    """Adaptive polling before blocking (as KVM's halt-polling does).

    A process that blocks lets its core halt, and on this class of (virtual) machine a halted core
    comes back slowly and with cold caches: an env step right after a wake-up costs noticeably more.
    So a waiting process first polls its socket for up to ``budget`` seconds, then blocks.  After a
    block the budget follows the wait it saw: a wait up to ``max_us`` (a longer poll would have
    caught it) sets the budget to twice that wait, capped at ``max_us``; a longer wait (the other
    side is slow, or the core is needed by another process) halves it.  A budget that shrank during
    a few long waits (episode resets, the gap between collects) thus comes back at the first normal
    step instead of staying below the typical wait for good.
    """

    MIN_S = 50e-6

    def __init__(self, fd: int, max_us: float) -> None:
        self.max_s = max_us * 1e-6
        self.budget = self.max_s
        self.poller = select.poll()
        self.poller.register(fd, select.POLLIN)

    def wait(self) -> None:
        """Return once ``fd`` is readable or closed (polling first, then blocking); adapt the budget."""
        if self.max_s <= 0 or self.poller.poll(0):
            return
        poll = self.poller.poll
        clock = time.perf_counter
        start = clock()
        deadline = start + self.budget
        while not poll(0):
            if clock() > deadline:
                poll(-1)  # block until readable, or until the other side is gone (POLLHUP)
                waited = clock() - start
                if waited <= self.max_s:
                    self.budget = min(self.max_s, 2.0 * waited)
                else:
                    self.budget = max(0.5 * self.budget, min(self.MIN_S, self.max_s))
                return


def read_exact(fd: int, n: int) -> bytes:
    """Read exactly ``n`` bytes; ``b""`` on end of file before the first byte."""
    data = os.read(fd, n)
    if len(data) == n or not data:
        return data
    parts = [data]
    got = len(data)
    while got < n:
        chunk = os.read(fd, n - got)
        if not chunk:
            raise EOFError("connection closed in the middle of a message")
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def send_frame(fd: int, kind: bytes, obj: Any) -> None:
    payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    write_all(fd, kind + _HEADER.pack(len(payload)) + payload)


def recv_frame(fd: int) -> Any:
    header = read_exact(fd, _HEADER.size)
    if len(header) != _HEADER.size:
        raise EOFError("connection closed in the middle of a message")
    (n,) = _HEADER.unpack(header)
    payload = read_exact(fd, n) if n else b""
    if len(payload) != n:
        raise EOFError("connection closed in the middle of a message")
    return pickle.loads(payload)


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL this process when the thread that started it exits (best effort)."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass  # not available: the socket's end-of-file still stops the worker
    if parent_pid and os.getppid() != parent_pid:
        os._exit(0)  # the parent died before the request took effect


def worker_main(
    worker_id: int,
    spec: DistributionSpec,
    slots: list[int],
    families: list[str],
    groups: list[int],
    shm_name: str,
    dims: tuple[int, int, int],
    max_episode_steps: int,
    conn: Any,
    parent_pid: int,
    pdeathsig: bool,
    cpu: int | None = None,
    spin_us: float = 0.0,
) -> None:
    """Entry point of a worker process: build the envs, then serve commands until closed or orphaned.

    The worker exits when the driver closes its socket, dies (end of file on the socket; with
    ``pdeathsig`` also SIGKILL from the kernel), or sends ``("close",)``.  SIGINT and SIGTERM are
    ignored: on Ctrl-C or a scheduler's preemption the driver decides, and closes the workers.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a scheduler signals the whole group: the driver stops us
    if pdeathsig:
        _die_with_parent(parent_pid)
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})
    fd = conn.fileno()
    try:
        dist = spec.build()
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(1)
        num_slots, obs_dim, act_dim = dims
        block = SharedBlock.attach(shm_name, num_slots, obs_dim, act_dim)
        runner = SlotRunner(dist, slots, families, block, max_episode_steps)
    except BaseException:
        send_frame(fd, MSG_FATAL, f"worker {worker_id} failed to start:\n{traceback.format_exc()}")
        conn.close()
        sys.exit(1)
    by_group: dict[int, list[int]] = {0: [], 1: []}
    for s, g in zip(slots, groups, strict=True):
        by_group[g].append(s)
    send_frame(fd, MSG_READY, os.getpid())
    spinner = Spinner(fd, spin_us)
    try:
        while True:
            spinner.wait()
            code = os.read(fd, 1)
            if not code:
                break  # the driver is gone
            if code in GROUP_BYTES:
                for failure in runner.run(by_group[code[0]]):
                    send_frame(fd, MSG_ERROR, failure)
                os.write(fd, code)
            elif code == MSG_CONTROL:
                msg = recv_frame(fd)
                if msg[0] == "tasks":
                    runner.set_tasks(msg[1])
                elif msg[0] == "close":
                    break
            else:
                raise RuntimeError(f"worker {worker_id}: unknown command byte {code!r}")
    except (EOFError, BrokenPipeError, ConnectionResetError):
        pass  # the driver is gone
    except BaseException:
        with contextlib.suppress(OSError):  # the driver may be gone already
            send_frame(fd, MSG_FATAL, f"worker {worker_id} crashed:\n{traceback.format_exc()}")
        raise
    finally:
        runner.close()
        block.release(unlink=False)
        conn.close()
