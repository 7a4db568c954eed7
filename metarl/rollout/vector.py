"""Step-level multi-task vector stepping over the engine's workers (the core of the gymnasium/SB3 adapters).

Each env slot is bound to a family; at every episode start it gets a task of that family drawn
uniformly from the given task list, with an env seed, both from one generator seeded by
:meth:`VectorCore.reset`.  Autoreset is *same-step*: when an episode ends, the worker resets the
slot into its next (already drawn) task in the same command, and the step returns the new
episode's first observation together with the final observation of the one that ended.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from metarl.errors import check_int
from metarl.rollout.errors import EnvError, WorkerCrashedError
from metarl.rollout.layout import family_costs, make_layout
from metarl.rollout.pool import PoolBackend, StartMethod, WaitResult, WorkerPool
from metarl.rollout.shm import OP_RESET, OP_STEP, RES_REWARD, RES_SUCCESS, RES_TERMINATED, RES_TRUNCATED
from metarl.tasks import Split, Task, TaskDistribution, check_split, families_of


@dataclass
class VectorStep:
    """The outcome of one :meth:`VectorCore.step` (arrays are copies, one row per env)."""

    obs: np.ndarray  # [S, O] float32: next observation (the new episode's first where an episode ended)
    reward: np.ndarray  # [S] float32
    terminated: np.ndarray  # [S] bool
    truncated: np.ndarray  # [S] bool (also set where a worker died and the episode was cut short)
    success: np.ndarray  # [S] bool
    final_obs: np.ndarray  # [S, O] float32: the last observation of episodes that ended (zeros elsewhere)
    ended_tasks: list[Task | None]  # per env: the task of the episode that ended on this step, else None
    worker_restarted: np.ndarray  # [S] bool


class VectorCore:
    """Multi-task vector stepping with per-episode task resampling (see the module docstring).

    Args:
        distribution: the task distribution.
        split: where tasks are drawn from (``"train"`` or ``"test"``), unless ``tasks`` is given.
        tasks: an explicit task list to draw from (all must belong to ``distribution``).
        envs_per_family: env slots per family of the task list (``num_envs = envs_per_family * families``).
        num_workers, backend, start_method: as for :class:`~metarl.rollout.RolloutEngine`.
        seed: seeds task and env-seed draws until :meth:`reset` is given another seed.
        max_restarts: consecutive worker deaths tolerated before giving up.
    """

    def __init__(
        self,
        distribution: TaskDistribution,
        split: Split = "train",
        tasks: Sequence[Task] | None = None,
        envs_per_family: int = 1,
        num_workers: int = 2,
        seed: int = 0,
        backend: PoolBackend = "process",
        start_method: StartMethod = "spawn",
        max_restarts: int = 3,
    ) -> None:
        check_int("envs_per_family", envs_per_family, 1)
        if tasks is None:
            tasks = list(distribution.tasks(check_split(split)))
        else:
            tasks = [distribution.validate_task(t) for t in tasks]
        if not tasks:
            raise ValueError("no tasks to draw from")
        self.distribution = distribution
        self.tasks: list[Task] = list(tasks)
        self.families = families_of(self.tasks)
        self.layout = make_layout(
            self.families, envs_per_family, num_workers, 1, family_costs(self.families), self.families
        )
        self.num_envs = self.layout.num_slots
        self.max_restarts = max_restarts
        self._by_family = {f: np.array([i for i, t in enumerate(self.tasks) if t.family == f]) for f in self.families}
        self._slot_choices = [self._by_family[f] for f in self.layout.slot_family]
        self._rng = np.random.default_rng(seed)
        self.current = np.full(self.num_envs, -1, np.int64)  # task index of each slot's episode
        self._next = np.full(self.num_envs, -1, np.int64)
        self._crashes = 0
        self._last_obs = np.zeros((0, 0), np.float32)
        self.pool = WorkerPool(distribution, self.layout, backend=backend, start_method=start_method)
        self.pool.set_tasks(self.tasks)
        self.act_dim = self.pool.act_dim
        self._act_shape = tuple(distribution.action_space.shape)

    # -- drawing tasks -----------------------------------------------------------------------------
    def _draw(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        tasks = np.array([self._rng.choice(self._slot_choices[s]) for s in slots.tolist()], np.int64)
        seeds = self._rng.integers(0, 2**32, size=slots.size, dtype=np.int64)
        return tasks, seeds

    def _plan(self, slots: np.ndarray) -> None:
        tasks, seeds = self._draw(slots)
        b = self.pool.block
        self._next[slots] = tasks
        b.next_task[slots] = tasks
        b.next_seed[slots] = seeds

    def task_ids(self) -> list[str]:
        """The id of the task each env is running."""
        return [self.tasks[i].id if i >= 0 else "" for i in self.current.tolist()]

    # -- stepping ----------------------------------------------------------------------------------
    def reset(self, seed: int | None = None, slots: np.ndarray | None = None) -> np.ndarray:
        """Start new episodes (all envs, or ``slots``) with freshly drawn tasks; return ``obs`` ``[S, O]``."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self.pool.drain()
        slots = np.arange(self.num_envs) if slots is None else slots
        b = self.pool.block
        b.op[:] = 0
        tasks, seeds = self._draw(slots)
        b.op[slots] = OP_RESET
        b.task_id[slots] = tasks
        b.seed[slots] = seeds
        self.current[slots] = tasks
        self.pool.submit(0)
        result = self.pool.wait(0)
        if result:
            self._raise_failures(result)
            self._recover(result)
            return self.reset(None, slots)
        self._plan(slots)
        self._last_obs = b.obs.copy()
        return self._last_obs.copy()

    def step(self, actions: np.ndarray) -> VectorStep:
        """Step every env with ``actions`` (``[S, A]``); ended episodes reset into new tasks (same step)."""
        actions = np.asarray(actions, dtype=np.float32)
        if actions.shape == (self.num_envs, *self._act_shape):
            actions = actions.reshape(self.num_envs, self.act_dim)
        if actions.shape != (self.num_envs, self.act_dim):
            raise ValueError(
                f"actions must have shape ({self.num_envs}, {self.act_dim}) (one row per env), got {actions.shape}"
            )
        finite = np.isfinite(actions).all(axis=1)
        if not finite.all():
            bad = np.flatnonzero(~finite)
            raise ValueError(
                f"non-finite actions for env(s) {bad.tolist()[:5]} running task(s) "
                f"{[self.task_ids()[i] for i in bad.tolist()[:5]]}; refusing to step them "
                "(a NaN action silently corrupts a MuJoCo simulation)"
            )
        if (self.current < 0).any():
            raise RuntimeError("call reset() before step()")
        b = self.pool.block
        b.action[:] = actions
        b.op[:] = OP_STEP
        self.pool.submit(0)
        result = self.pool.wait(0)
        restarted = np.zeros(self.num_envs, bool)
        if result:
            self._raise_failures(result)
            restarted = self._recover(result)
        res = b.res.copy()
        terminated = res[:, RES_TERMINATED] > 0.5
        truncated = res[:, RES_TRUNCATED] > 0.5
        terminated[restarted] = False
        truncated[restarted] = True
        ended = terminated | truncated
        final_obs = np.zeros_like(b.obs)
        ended_tasks: list[Task | None] = [None] * self.num_envs
        idx = np.flatnonzero(ended & ~restarted)
        if idx.size:
            final_obs[idx] = b.final_obs[idx]
            for s in idx.tolist():
                ended_tasks[s] = self.tasks[int(self.current[s])]
            self.current[idx] = self._next[idx]
            self._plan(idx)
        out = VectorStep(
            obs=b.obs.copy(),
            reward=res[:, RES_REWARD].copy(),
            terminated=terminated,
            truncated=truncated,
            success=res[:, RES_SUCCESS] > 0.5,
            final_obs=final_obs,
            ended_tasks=ended_tasks,
            worker_restarted=restarted,
        )
        if restarted.any():
            lost = np.flatnonzero(restarted)
            for s in lost.tolist():
                ended_tasks[s] = self.tasks[int(self.current[s])]
            final_obs[lost] = self._last_obs[lost]
            out.obs[lost] = self.reset(None, lost)[lost]
        else:
            self._crashes = 0
        self._last_obs = out.obs
        return out

    def _raise_failures(self, result: WaitResult) -> None:
        if result.failures:
            f = result.failures[0]
            self.pool.drain()
            raise EnvError(
                f"env of task {f.task_id} (env {f.slot}) raised during {f.op}; original traceback:\n{f.traceback}"
            )

    def _recover(self, result: WaitResult) -> np.ndarray:
        """Restart dead workers; return the mask of envs whose episode was lost."""
        lost = np.zeros(self.num_envs, bool)
        for dead in result.lost:
            self._crashes += 1
            if self._crashes > self.max_restarts:
                ids = [self.task_ids()[s] for s in dead.slots]
                raise WorkerCrashedError(
                    f"worker {dead.worker} died {self._crashes} times in a row (envs {list(dead.slots)}, tasks "
                    f"{ids}); last cause: {dead.cause}"
                )
            self.pool.restart(dead.worker)
            lost[list(dead.slots)] = True
        return lost

    def close(self) -> None:
        self.pool.close()

    @property
    def closed(self) -> bool:
        return self.pool.closed
