"""One call of :meth:`RolloutEngine.collect`: scheduling, the batched policy call, trajectory assembly.

Work units are whole trials (``episodes_per_trial`` consecutive episodes of one task; 1 without
trials), queued per family in task-major order.  A slot that falls idle takes the next unit of its
family; while an episode runs, the slot's *next* episode (the rest of its trial, or the next unit)
is already written to shared memory, so the worker resets into it the moment the current one ends
(no extra round trip, no idle slot).

Per pipeline group and step, the driver waits for the group, records its step results, makes ONE
policy call for the group's running slots, checks the actions, writes them to shared memory and
resubmits the group.  On this 2-core class of machine every driver operation runs with caches cold
(the workers' MuJoCo state evicts them), so the hot path is a handful of vectorised numpy
operations over all rows: one gather of the packed input rows (``shm.Cols``), one gather of result
rows, a few scatters into flat ``[task * episode * time]`` buffers.  Episode ends, assignments and
faults are handled in Python on a slower path.

Everything here is a pure function of the arguments and the env outcomes: the process and inline
backends give bitwise identical results.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from metarl.rollout.errors import ActionError, CollectCancelled, EnvError, WorkerCrashedError
from metarl.rollout.pool import WaitResult
from metarl.rollout.seeding import episode_noise, episode_seeds
from metarl.rollout.shm import (
    OP_IDLE,
    OP_RESET,
    OP_STEP,
    RES_REWARD,
    RES_SUCCESS,
    RES_TERMINATED,
    RES_TRUNCATED,
    RES_WIDTH,
)
from metarl.rollout.transfer import HostTransfer, PackedTransfer
from metarl.rollout.types import Policy, Trajectories
from metarl.stops import stop_point
from metarl.tasks import Task

if TYPE_CHECKING:
    from metarl.rollout.layout import Layout
    from metarl.rollout.pool import WorkerPool

IDLE, RESETTING, RUNNING = 0, 1, 2


class Collection:
    """State of one collect (see the module docstring).

    It needs the engine's worker pool and slot layout, the episode horizon, the engine's seed (with
    ``collect_index``, what the episodes' seeds and action noise derive from) and how often a failed
    episode may be retried (``max_restarts``)."""

    def __init__(
        self,
        pool: WorkerPool,
        layout: Layout,
        max_episode_steps: int,
        seed: int,
        max_restarts: int,
        policy: Policy,
        tasks: Sequence[Task],
        episodes_per_task: int,
        episodes_per_trial: int,
        collect_index: int,
        deterministic: bool,
        transfer: HostTransfer | PackedTransfer,
        task_offset: int = 0,
        stop: threading.Event | None = None,
    ) -> None:
        self.stop = stop  # set from another thread: the collect raises CollectCancelled at its next step
        self.max_restarts = max_restarts
        self.task_offset = task_offset  # global position of tasks[0] (a share of a distributed collect)
        self.pool = pool
        self.block = self.pool.block
        self.cols = self.block.cols
        self.policy = policy
        self.tasks = list(tasks)
        self.n = n = len(tasks)
        self.e = e = episodes_per_task
        self.k = episodes_per_trial
        self.h = h = max_episode_steps
        self.o, self.a = o, a = self.pool.obs_dim, self.pool.act_dim
        self.seed = seed
        self.collect_index = collect_index
        self.deterministic = deterministic
        self.transfer = transfer
        self.num_slots = s = layout.num_slots
        self.num_groups = layout.num_groups
        self.group_ranges = [layout.group_range(g) for g in range(layout.num_groups)]
        self.slot_family = layout.slot_family
        self.slot_worker = layout.slot_worker
        self.slot_group = layout.slot_group
        self.slot_worker_np = np.asarray(layout.slot_worker, np.int64)
        self.num_workers = layout.num_workers

        # Result buffers, flat over (task, episode, time).
        steps = n * e * h
        self.obs_f = np.zeros((steps, o), np.float32)
        self.act_f = np.zeros((steps, a), np.float32)
        self.res_f = np.zeros((steps, RES_WIDTH), np.float32)  # reward, terminated, truncated, success
        self.noise_f = np.zeros((steps, a), np.float32)
        self.extras_f: dict[str, np.ndarray] = {}
        self.final_obs = np.zeros((n * e, o), np.float32)
        self.lengths = np.zeros(n * e, np.int64)
        self.seeds = episode_seeds(self.seed, collect_index, n, e, task_offset)
        self.seeds_flat = self.seeds.reshape(-1)

        # Per-slot state.
        self.phase = np.zeros(s, np.int8)
        self.cur_task = np.full(s, -1, np.int64)
        self.cur_ep = np.full(s, -1, np.int64)
        self.pos = np.zeros(s, np.int64)  # flat index of the slot's current step
        self.nxt_task = np.full(s, -1, np.int64)
        self.nxt_ep = np.full(s, -1, np.int64)

        # Work queues per family: (task position, first episode of the trial).
        self.queues: dict[str, deque[tuple[int, int]]] = {f: deque() for f in set(layout.slot_family)}
        for p, task in enumerate(self.tasks):
            for first in range(0, e, self.k):
                self.queues[task.family].append((p, first))
        self.queued = sum(len(q) for q in self.queues.values())
        self.attempts: dict[tuple[int, int], int] = {}
        g_range = range(self.num_groups)
        self.idle: list[list[int]] = [list(range(lo, hi)) for lo, hi in self.group_ranges]
        self.stepped: list[np.ndarray] = [np.empty(0, np.int64) for _ in g_range]
        self.resetting: list[list[int]] = [[] for _ in g_range]
        self.rows: list[np.ndarray] = [np.empty(0, np.int64) for _ in g_range]  # RUNNING slots per group
        self.changed = [True] * self.num_groups  # the group's membership or ops changed since its last submit
        self.flagged: list[list[int]] = [[] for _ in g_range]  # slots whose input-row flags are set
        self.in_flight = [False] * self.num_groups
        self.running = 0  # slots not idle
        self.state: Any = None

    # -- main loop -------------------------------------------------------------------------------
    def run(self) -> Trajectories:
        b = self.block
        b.next_seed[:] = -1
        b.op[:] = OP_IDLE
        b.x[:, self.cols.flags] = 0.0
        self.pool.set_tasks(self.tasks)
        self.state = self.policy.initial_state(self.num_slots)
        self._assign_idle(range(self.num_groups))  # every slot gets work before any plans its next
        for g in range(self.num_groups):
            if self.resetting[g]:
                self._refresh_ops(g)
                self.pool.submit(g)
                self.in_flight[g] = True
        g = 0
        stop_checked = False
        while self.running > 0 or self.queued > 0 or any(self.in_flight):
            if self.stop is not None and self.stop.is_set():
                raise CollectCancelled(f"collect {self.collect_index} was cancelled before it finished")
            if self.in_flight[g]:
                self.in_flight[g] = False
                result = self.pool.wait(g)
                if result:
                    self._handle_faults(result)
                self._absorb(g)
                if not stop_checked:  # a test may stop the run here, mid-collect (metarl.stops)
                    stop_checked = True
                    stop_point("sampling")
                self._prepare_and_submit(g)
            elif self.idle[g] and self.queued > 0:
                self._prepare_and_submit(g)
            g = (g + 1) % self.num_groups
            if not any(self.in_flight) and self.running == 0 and self.queued > 0:
                raise RuntimeError("internal error: work queued but no slot can take it")  # pragma: no cover
        return self._assemble()

    def _absorb(self, g: int) -> None:
        """Record the results of group ``g``'s last command."""
        rows = self.stepped[g]
        if rows.size:
            p = self.pos[rows]
            res = self.block.res[rows]
            self.res_f[p] = res
            self.pos[rows] = p + 1
            ended = res[:, RES_TERMINATED : RES_TRUNCATED + 1].any(axis=1)
            if ended.any():
                for s in rows[ended].tolist():
                    self._end_episode(s)
        if self.resetting[g]:
            for s in self.resetting[g]:
                self.phase[s] = RUNNING
            self.resetting[g] = []
            self.changed[g] = True

    def _refresh_ops(self, g: int) -> None:
        """Recompute group ``g``'s running rows and the per-slot commands after a change."""
        b = self.block
        lo, hi = self.group_ranges[g]
        rows = np.flatnonzero(self.phase[lo:hi] == RUNNING) + lo
        self.rows[g] = rows
        b.op[lo:hi] = OP_IDLE
        b.op[rows] = OP_STEP
        for s in self.resetting[g]:
            b.op[s] = OP_RESET
        self.changed[g] = False

    def _prepare_and_submit(self, g: int) -> None:
        """Assign work to idle slots of ``g``, act for its running slots, and submit it."""
        if self.idle[g] and self.queued > 0:
            self._assign_idle((g,))
        if self.changed[g]:
            self._refresh_ops(g)
        rows = self.rows[g]
        if rows.size:
            self._act(rows)
            if self.flagged[g]:  # the flags were read by this call; those of slots still resetting were not
                read = [s for s in self.flagged[g] if self.phase[s] == RUNNING]
                self.block.x[read, self.cols.flags] = 0.0
                self.flagged[g] = [s for s in self.flagged[g] if self.phase[s] != RUNNING]
        self.stepped[g] = rows
        if rows.size or self.resetting[g]:
            self.pool.submit(g)
            self.in_flight[g] = True

    # -- the policy call ---------------------------------------------------------------------------
    def _act(self, rows: np.ndarray) -> None:
        x = self.block.x
        p = self.pos[rows]
        inp = x[rows]
        self.obs_f[p] = inp[:, : self.o]
        step = self.transfer.step_batch(inp, self.noise_f[p], self.deterministic)
        action, self.state, extras = self.policy.act(step, self.state)
        r = rows.size
        if not isinstance(action, torch.Tensor) or tuple(action.shape) != (r, self.a):
            shape = tuple(action.shape) if isinstance(action, torch.Tensor) else type(action).__name__
            raise ActionError(
                f"policy returned actions of shape {shape} for {r} rows; expected ({r}, {self.a}) "
                f"(tasks {self._task_names(self.cur_task[rows])})"
            )
        act, extras_np = self.transfer.to_host(action, extras)
        if not np.isfinite(act.sum(dtype=np.float64)):  # NaN or inf anywhere (cheaper than isfinite().all())
            bad = ~np.isfinite(act).all(axis=1)
            raise ActionError(
                f"policy returned non-finite actions for task(s) {self._task_names(self.cur_task[rows][bad])} "
                f"(slots {rows[bad].tolist()}): {act[bad][:3].tolist()}; refusing to step them "
                "(a NaN action silently corrupts a MuJoCo simulation)"
            )
        x[rows, self.cols.action] = act
        self.act_f[p] = act
        for key, value in extras_np.items():
            self._store_extra(key, value, p, r)

    def _store_extra(self, key: str, value: np.ndarray, p: np.ndarray, r: int) -> None:
        buf = self.extras_f.get(key)
        if buf is None:
            if value.ndim == 0 or value.shape[0] != r:
                raise ActionError(f"policy extra {key!r} has shape {value.shape}; expected ({r}, ...) per row")
            buf = np.zeros((self.n * self.e * self.h, *value.shape[1:]), value.dtype)
            self.extras_f[key] = buf
        elif value.shape[1:] != buf.shape[1:] or value.shape[0] != r:
            earlier = ", ".join(map(str, buf.shape[1:]))
            raise ActionError(f"policy extra {key!r} changed shape: {value.shape}, earlier (rows, {earlier})")
        buf[p] = value

    def _task_names(self, positions: np.ndarray) -> str:
        ids = sorted({self.tasks[int(i)].id for i in positions.tolist()})
        return ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")

    # -- scheduling --------------------------------------------------------------------------------
    def _pop_unit(self, family: str) -> tuple[int, int] | None:
        q = self.queues[family]
        if not q:
            return None
        self.queued -= 1
        return q.popleft()

    def _assign_idle(self, groups: Sequence[int]) -> None:
        """Give queued units to idle slots of ``groups`` (RESET commands), then plan each one's next.

        Each unit goes to an idle slot of its family on the worker with the fewest busy slots (ties: the lowest
        worker), so an engine with more slots than work (one sized for a larger meta-test) keeps every worker
        busy instead of filling the lowest slot ids, which are one worker's.  A pure function of the state, so
        the assignment is reproducible."""
        b = self.block
        started: list[int] = []
        idle: dict[str, dict[int, deque[int]]] = {}
        for g in groups:
            for s in self.idle[g]:
                idle.setdefault(self.slot_family[s], {}).setdefault(self.slot_worker[s], deque()).append(s)
        load = np.bincount(self.slot_worker_np[self.phase != IDLE], minlength=self.num_workers)
        families = [f for f in idle if self.queues[f]]
        while families and self.queued > 0:
            still = []
            for family in families:  # one unit per family per round: families share the workers evenly
                free = idle[family]
                unit = self._pop_unit(family)
                if unit is None:
                    continue
                w = min((w for w in free if free[w]), key=lambda w: (load[w], w))
                s = free[w].popleft()
                load[w] += 1
                task, ep = unit
                g = self.slot_group[s]
                self._begin_episode(s, task, ep, trial_start=True)
                self.phase[s] = RESETTING
                self.running += 1
                b.task_id[s] = task
                b.seed[s] = self.seeds_flat[task * self.e + ep]
                self.resetting[g].append(s)
                self.changed[g] = True
                started.append(s)
                if self.queues[family] and any(free.values()):
                    still.append(family)
            families = still
        if started:
            taken = set(started)
            for g in groups:
                self.idle[g] = [s for s in self.idle[g] if s not in taken]
        for s in started:
            self._plan_next(s)

    def _begin_episode(self, s: int, task: int, ep: int, trial_start: bool) -> None:
        """Bookkeeping for slot ``s`` starting episode ``ep`` of task ``task`` (the worker resets it)."""
        self.cur_task[s] = task
        self.cur_ep[s] = ep
        i = task * self.e + ep
        self.pos[s] = i * self.h
        self.noise_f[i * self.h : (i + 1) * self.h] = episode_noise(
            self.seed, self.collect_index, self.task_offset + task, ep, (self.h, self.a)
        )
        c = self.cols
        row = self.block.x[s]
        row[c.prev_done] = 0.0 if trial_start else 1.0
        row[c.episode_start] = 1.0
        row[c.trial_start] = 1.0 if trial_start else 0.0
        row[c.task] = self.task_offset + task
        self.flagged[self.slot_group[s]].append(s)

    def _plan_next(self, s: int) -> None:
        """Queue the episode slot ``s`` resets into when its current one ends."""
        b = self.block
        task, ep = int(self.cur_task[s]), int(self.cur_ep[s])
        within_trial = (ep + 1) % self.k != 0
        unit = (task, ep + 1) if within_trial else self._pop_unit(self.slot_family[s])
        if unit is None:
            self.nxt_task[s] = -1
            b.next_seed[s] = -1
            return
        self.nxt_task[s], self.nxt_ep[s] = unit
        b.next_task[s] = unit[0]
        b.next_seed[s] = self.seeds_flat[unit[0] * self.e + unit[1]]

    def _end_episode(self, s: int) -> None:
        i = int(self.cur_task[s]) * self.e + int(self.cur_ep[s])
        self.lengths[i] = self.pos[s] - i * self.h
        self.final_obs[i] = self.block.final_obs[s]
        if self.nxt_task[s] >= 0:  # the worker already reset the slot into it
            task, ep = int(self.nxt_task[s]), int(self.nxt_ep[s])
            self._begin_episode(s, task, ep, trial_start=ep % self.k == 0)
            self._plan_next(s)
        else:
            self.phase[s] = IDLE
            self.cur_task[s] = -1
            self.running -= 1
            g = self.slot_group[s]
            self.idle[g].append(s)
            self.changed[g] = True

    # -- faults ------------------------------------------------------------------------------------
    def _handle_faults(self, result: WaitResult) -> None:
        if result.failures:
            f = result.failures[0]
            task_id = self.tasks[f.task_pos].id if 0 <= f.task_pos < self.n else f.task_id
            self.pool.drain()
            raise EnvError(
                f"env of task {task_id} (slot {f.slot}, family {self.slot_family[f.slot]!r}, worker "
                f"{self.slot_worker[f.slot]}) raised during {f.op}; original traceback:\n{f.traceback}"
            )
        for lost in result.lost:
            units = self._requeue(lost.slots)
            if units:
                (task, ep), slot = max(units, key=lambda us: self.attempts[us[0]])
                tries = self.attempts[(task, ep)]
                if tries > self.max_restarts:
                    self.pool.drain()
                    raise WorkerCrashedError(
                        f"worker {lost.worker} died {tries} times while running task {self.tasks[task].id} "
                        f"(episode {ep}, slot {slot}); giving up after max_restarts={self.max_restarts}; "
                        f"last cause: {lost.cause}"
                    )
            self.pool.restart(lost.worker)

    def _requeue(self, slots: Sequence[int]) -> list[tuple[tuple[int, int], int]]:
        """Put the work of ``slots`` (lost with their worker) back in the queues; whole trials restart."""
        b = self.block
        lost: set[int] = set(slots)
        units: list[tuple[tuple[int, int], int]] = []
        for s in slots:
            g = self.slot_group[s]
            self.changed[g] = True
            if self.phase[s] == IDLE:
                continue
            task, ep = int(self.cur_task[s]), int(self.cur_ep[s])
            first = ep - ep % self.k
            for e in range(first, ep + 1):
                self._clear_episode(task, e)
            unit = (task, first)
            self.attempts[unit] = self.attempts.get(unit, 0) + 1
            units.append((unit, s))
            q = self.queues[self.slot_family[s]]
            nxt = (int(self.nxt_task[s]), int(self.nxt_ep[s]))
            if nxt[0] >= 0 and nxt[1] % self.k == 0:  # the next unit was already taken from the queue
                q.appendleft(nxt)
                self.queued += 1
            q.appendleft(unit)
            self.queued += 1
            self.phase[s] = IDLE
            self.cur_task[s] = -1
            self.nxt_task[s] = -1
            self.running -= 1
            b.next_seed[s] = -1
            b.op[s] = OP_IDLE
            self.idle[g].append(s)
        for g in range(self.num_groups):
            st = self.stepped[g]
            if st.size:
                self.stepped[g] = st[~np.isin(st, list(lost))]
            self.resetting[g] = [s for s in self.resetting[g] if s not in lost]
            self.flagged[g] = [s for s in self.flagged[g] if s not in lost]
        return units

    def _clear_episode(self, task: int, ep: int) -> None:
        i = task * self.e + ep
        sl = slice(i * self.h, (i + 1) * self.h)
        for arr in (self.obs_f, self.act_f, self.res_f):
            arr[sl] = 0
        for arr in self.extras_f.values():
            arr[sl] = 0
        self.final_obs[i] = 0
        self.lengths[i] = 0

    # -- result ------------------------------------------------------------------------------------
    def _assemble(self) -> Trajectories:
        n, e, h = self.n, self.e, self.h
        f = torch.from_numpy
        lengths = self.lengths.reshape(n, e)
        valid = np.arange(h) < lengths[..., None]
        res = self.res_f.reshape(n, e, h, RES_WIDTH)
        return Trajectories(
            tasks=self.tasks,
            obs=f(self.obs_f.reshape(n, e, h, self.o)),
            actions=f(self.act_f.reshape(n, e, h, self.a)),
            rewards=f(np.ascontiguousarray(res[..., RES_REWARD])),
            terminated=f(res[..., RES_TERMINATED] > 0.5),
            truncated=f(res[..., RES_TRUNCATED] > 0.5),
            success=f(res[..., RES_SUCCESS] > 0.5),
            valid=f(valid),
            final_obs=f(self.final_obs.reshape(n, e, self.o)),
            lengths=f(lengths),
            episode_seeds=f(self.seeds.copy()),
            extras={k: f(v.reshape(n, e, h, *v.shape[1:])) for k, v in self.extras_f.items()},
            episodes_per_trial=self.k,
        )
