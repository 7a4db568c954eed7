"""The shared-memory block through which the driver and the workers exchange per-slot data.

One POSIX shared-memory segment per pool holds every array below (``S`` slots, ``O`` observation
dim, ``A`` action dim).  A slot's entries are touched by one side at a time: the driver between a
group's completion and its next submission, the worker in between.

The hot data is packed so that the driver moves a whole policy batch with one gather:

* ``x`` ``[S, K]`` float32, one *input row* per slot (columns in :class:`Cols`): the observation
  the next action is taken in, the previous action (the driver writes the action to execute there;
  after the step it is the previous action), the previous reward, the ``prev_done`` /
  ``episode_start`` / ``trial_start`` flags (0/1, driver-owned), the slot id and the task position
  (driver-owned).  A worker writes the observation and the reward, and zeroes the previous action
  and reward when it resets the slot.
* ``res`` ``[S, 4]`` float32, one *result row* per slot: reward, terminated, truncated, success
  (0/1) of the last step.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from dataclasses import dataclass
from multiprocessing import shared_memory
from typing import Any

import numpy as np

# Per-slot command codes (``op``).
OP_IDLE = 0
OP_STEP = 1  # step with the action in x; on episode end, reset into (next_task, next_seed) if next_seed >= 0
OP_RESET = 2  # set_task(tasks[task_id[s]]) and reset(seed[s])

SHM_PREFIX = "metarl_"

RES_REWARD, RES_TERMINATED, RES_TRUNCATED, RES_SUCCESS = 0, 1, 2, 3
RES_WIDTH = 4
"""Columns of a result row ``res``: reward, terminated, truncated, success."""


@dataclass(frozen=True)
class Cols:
    """Column indices of the input rows ``x`` for observation dim ``O`` and action dim ``A``."""

    obs_dim: int
    act_dim: int

    @property
    def obs(self) -> slice:
        return slice(0, self.obs_dim)

    @property
    def action(self) -> slice:
        return slice(self.obs_dim, self.obs_dim + self.act_dim)

    @property
    def action_and_reward(self) -> slice:
        """The previous action and reward (zeroed together at an episode start)."""
        return slice(self.obs_dim, self.reward + 1)

    @property
    def reward(self) -> int:
        return self.obs_dim + self.act_dim

    @property
    def prev_done(self) -> int:
        return self.reward + 1

    @property
    def episode_start(self) -> int:
        return self.reward + 2

    @property
    def trial_start(self) -> int:
        return self.reward + 3

    @property
    def slot(self) -> int:
        return self.reward + 4

    @property
    def task(self) -> int:
        return self.reward + 5

    @property
    def width(self) -> int:
        return self.reward + 6

    @property
    def flags(self) -> slice:
        """prev_done, episode_start and trial_start."""
        return slice(self.prev_done, self.trial_start + 1)


def _fields(num_slots: int, obs_dim: int, act_dim: int) -> list[tuple[str, Any, tuple[int, ...]]]:
    s = num_slots
    return [
        ("x", np.float32, (s, Cols(obs_dim, act_dim).width)),
        ("res", np.float32, (s, RES_WIDTH)),
        ("final_obs", np.float32, (s, obs_dim)),  # observation after the step that ended an episode
        ("op", np.uint8, (s,)),
        ("task_id", np.int64, (s,)),
        ("seed", np.int64, (s,)),
        ("next_task", np.int64, (s,)),
        ("next_seed", np.int64, (s,)),  # -1: no episode queued; the slot goes idle when this one ends
    ]


@dataclass
class SharedBlock:
    """Named numpy views over one shared-memory segment (or plain memory for the inline backend)."""

    x: np.ndarray
    res: np.ndarray
    final_obs: np.ndarray
    op: np.ndarray
    task_id: np.ndarray
    seed: np.ndarray
    next_task: np.ndarray
    next_seed: np.ndarray
    cols: Cols
    shm: shared_memory.SharedMemory | None = None

    @property
    def obs(self) -> np.ndarray:
        """``[S, O]`` view: the observation each slot's next action is taken in."""
        return self.x[:, self.cols.obs]

    @property
    def action(self) -> np.ndarray:
        """``[S, A]`` view: the action to execute (after a step: the one executed)."""
        return self.x[:, self.cols.action]

    @staticmethod
    def nbytes(num_slots: int, obs_dim: int, act_dim: int) -> int:
        total = 0
        for _, dtype, shape in _fields(num_slots, obs_dim, act_dim):
            total += (int(np.prod(shape)) * np.dtype(dtype).itemsize + 63) // 64 * 64
        return max(total, 64)

    @classmethod
    def _views(cls, buf: Any, num_slots: int, obs_dim: int, act_dim: int) -> dict[str, Any]:
        views: dict[str, Any] = {"cols": Cols(obs_dim, act_dim)}
        offset = 0
        for name, dtype, shape in _fields(num_slots, obs_dim, act_dim):
            views[name] = np.ndarray(shape, dtype=dtype, buffer=buf, offset=offset)
            offset += (int(np.prod(shape)) * np.dtype(dtype).itemsize + 63) // 64 * 64
        return views

    @classmethod
    def create(cls, num_slots: int, obs_dim: int, act_dim: int, shared: bool) -> SharedBlock:
        """A new zeroed block; ``shared`` puts it in a named segment that workers can attach to."""
        size = cls.nbytes(num_slots, obs_dim, act_dim)
        if not shared:
            buf = bytearray(size)
            block = cls(**cls._views(buf, num_slots, obs_dim, act_dim))
        else:
            name = f"{SHM_PREFIX}{os.getpid()}_{secrets.token_hex(6)}"
            shm = shared_memory.SharedMemory(name=name, create=True, size=size)
            block = cls(**cls._views(shm.buf, num_slots, obs_dim, act_dim), shm=shm)
        block.next_seed[:] = -1
        block.next_task[:] = -1
        block.x[:, block.cols.slot] = np.arange(num_slots)
        return block

    @classmethod
    def attach(cls, name: str, num_slots: int, obs_dim: int, act_dim: int) -> SharedBlock:
        """Attach to the segment ``name`` created by the driver (in a worker)."""
        shm = shared_memory.SharedMemory(name=name, create=False)
        return cls(**cls._views(shm.buf, num_slots, obs_dim, act_dim), shm=shm)

    @property
    def name(self) -> str | None:
        return None if self.shm is None else self.shm.name

    def release(self, unlink: bool) -> None:
        """Drop the views and close the segment (and unlink it when ``unlink``: the driver's job)."""
        shm, self.shm = self.shm, None
        for name, _, _ in _fields(0, 0, 0):
            setattr(self, name, np.empty(0))
        if shm is None:
            return
        # A caller may still hold a numpy view of the segment (BufferError): the mapping then lives until
        # that view is garbage-collected; the name is unlinked all the same, so nothing outlives the process.
        with contextlib.suppress(BufferError):
            shm.close()
        if unlink:
            with contextlib.suppress(FileNotFoundError):  # already unlinked (e.g. by the resource tracker)
                shm.unlink()
