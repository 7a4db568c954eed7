"""``metarl eval --video DIR``: one evaluation episode per task, after adaptation, as a GIF.

Frames come from the env's ``rgb_array`` rendering (Meta-World: MuJoCo).  MuJoCo needs an OpenGL
backend: ``MUJOCO_GL=egl`` on GPU machines, ``osmesa`` on CPUs where it is installed; when
``MUJOCO_GL`` is unset, egl is tried when CUDA is visible, osmesa otherwise.  Recording runs in a
separate process, so a missing backend (which can abort the process inside MuJoCo) only costs the
videos: the caller gets a one-line reason and the evaluation itself is unaffected.

The agent adapts through its Meta-World ``MetaLearningAgent`` adapter on one env per task
(``adaptation_episodes`` episodes, one inner step or the RL² trial), then one evaluation episode
is recorded.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from metarl.tasks import Task

FPS = 25


def write_gif(frames: Sequence[np.ndarray], path: Path, fps: int = FPS) -> Path:
    """Write [H, W, 3] uint8 frames as a looping GIF (every other frame above 250 frames)."""
    import imageio.v2 as imageio

    if not frames:
        raise ValueError("no frames to write")
    step = 2 if len(frames) > 250 else 1
    path.parent.mkdir(parents=True, exist_ok=True)
    imageio.mimsave(path, [np.asarray(f, dtype=np.uint8) for f in frames[::step]], duration=step / fps, loop=0)
    return path


def _default_gl() -> str:
    try:
        import torch

        return "egl" if torch.cuda.is_available() else "osmesa"
    except ImportError:  # pragma: no cover
        return "osmesa"


def record_task(agent: Any, dist: Any, task: Task, adaptation_episodes: int, path: Path, seed: int) -> Path:
    """Adapt ``agent`` to ``task`` on one env, then record one evaluation episode to ``path``."""
    from metaworld.evaluation import Timestep

    env = dist.make_env(task.family, render_mode="rgb_array")
    dist.set_task(env, task)
    adapter = agent.metaworld_adapter(1, deterministic=False, seed=0)
    adapter.init()
    try:
        for e in range(adaptation_episodes):
            obs, _ = env.reset(seed=seed + e)
            done = False
            while not done:
                action, aux = adapter.adapt_action(np.asarray(obs)[None])
                nobs, reward, term, trunc, _ = env.step(action[0])
                done = bool(term or trunc)
                adapter.step(Timestep(np.asarray(obs)[None], action, np.array([reward]), np.array([term]),
                                      np.array([trunc]), aux))  # fmt: skip
                obs = nobs
        if adaptation_episodes:
            adapter.adapt()
        obs, _ = env.reset(seed=seed + adaptation_episodes)
        adapter.reset(np.array([True]))
        frames = [env.render()]
        done = False
        while not done:
            obs, _, term, trunc, _ = env.step(adapter.eval_action(np.asarray(obs)[None])[0])
            frames.append(env.render())
            done = bool(term or trunc)
    finally:
        env.close()
    if frames[0] is None:
        raise RuntimeError(f"{task.family} renders nothing in rgb_array mode")
    return write_gif(frames, path)


def _child(run_dir: str, checkpoint: str | None, task_ids: list[str], k: int, out_dir: str, seed: int) -> None:
    os.environ.setdefault("MUJOCO_GL", _default_gl())
    import torch

    torch.set_num_threads(1)
    from metarl.run import load, make_run_distribution, read_run_config

    train_cfg, _, _ = read_run_config(Path(run_dir))
    dist = make_run_distribution(train_cfg)
    agent = load(run_dir, checkpoint)
    by_id = {t.id: t for t in dist.tasks("test")} | {t.id: t for t in dist.tasks("train")}
    for tid in task_ids:
        name = tid.replace("/", "_") + ".gif"
        record_task(agent, dist, by_id[tid], k, Path(out_dir) / name, seed)


def _child_main(args: tuple[Any, ...], errors: Any) -> None:
    try:
        _child(*args)
    except BaseException as exc:  # report, then exit non-zero
        errors.put(f"{type(exc).__name__}: {exc}".splitlines()[0][:300])
        errors.put(traceback.format_exc()[-2000:])
        raise SystemExit(1) from None


def record_videos(
    run_dir: Path,
    checkpoint: Path | None,
    tasks: Sequence[Task],
    adaptation_episodes: int,
    out_dir: Path,
    seed: int = 0,
    timeout_s: float = 3600,
) -> tuple[list[Path], str | None]:
    """Record one GIF per task in a child process; returns ``(files, None)`` or ``([], reason)``."""
    ctx = mp.get_context("spawn")
    errors = ctx.Queue()
    args = (str(run_dir), str(checkpoint) if checkpoint else None, [t.id for t in tasks], adaptation_episodes,
            str(out_dir), seed)  # fmt: skip
    proc = ctx.Process(target=_child_main, args=(args, errors))
    proc.start()
    proc.join(timeout_s)
    if proc.is_alive():
        proc.kill()
        proc.join()
        return [], f"video recording took longer than {timeout_s:.0f} s and was stopped"
    if proc.exitcode != 0:
        reason = errors.get(timeout=5) if not errors.empty() else f"the recording process exited with {proc.exitcode}"
        gl = os.environ.get("MUJOCO_GL", _default_gl())
        return [], (
            f"no video: rendering failed with MUJOCO_GL={gl} ({reason}); install an OpenGL backend "
            "(EGL on GPU machines, OSMesa on CPUs) or set MUJOCO_GL; the evaluation itself is complete"
        )
    files = sorted(Path(out_dir).glob("*.gif"))
    return files, None
