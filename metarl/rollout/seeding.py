"""Random streams keyed by ``(seed, collect index, task position, episode)``, never by worker or slot.

Every episode's env seed and its per-step action noise depend only on where the episode sits in a
collect's result, so any placement of episodes on workers and slots gives the same episodes.
"""

from __future__ import annotations

import numpy as np

_ENV_SEED = 0
_NOISE = 1


def episode_seeds(
    seed: int, collect_index: int, num_tasks: int, episodes_per_task: int, first_task: int = 0
) -> np.ndarray:
    """Env reset seeds, ``[N, E]`` int64 in ``[0, 2**32)``, of task positions ``first_task ..``."""
    out = np.empty((num_tasks, episodes_per_task), np.int64)
    for n in range(num_tasks):
        for e in range(episodes_per_task):
            ss = np.random.SeedSequence([seed, collect_index, first_task + n, e, _ENV_SEED])
            out[n, e] = int(ss.generate_state(1, np.uint32)[0])
    return out


def episode_noise(seed: int, collect_index: int, task_pos: int, episode: int, shape: tuple[int, ...]) -> np.ndarray:
    """Standard-normal float32 noise of one episode (``[H, A]``: one row per step)."""
    ss = np.random.SeedSequence([seed, collect_index, task_pos, episode, _NOISE])
    return np.random.Generator(np.random.PCG64(ss)).standard_normal(shape, dtype=np.float32)
