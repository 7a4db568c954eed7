"""The ray backend on a local Ray instance bound to 127.0.0.1: equals the process backend, survives a
killed actor, and trains RL² end to end."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest
import torch

from metarl.rollout import RolloutEngine
from metarl.testing import CountingDistribution, ElementwisePolicy

ray = pytest.importorskip("ray")

from metarl.rollout.ray_backend import LOOPBACK_ENV, RayRolloutEngine, shares  # noqa: E402

FIELDS = ("obs", "actions", "rewards", "terminated", "truncated", "success", "valid", "final_obs", "lengths",
          "episode_seeds")  # fmt: skip


@pytest.fixture(scope="module")
def local_ray():  # type: ignore[no-untyped-def]
    """A local Ray instance that binds and advertises 127.0.0.1 and contacts nothing else."""
    saved = {k: os.environ.get(k) for k in LOOPBACK_ENV}
    os.environ.update(LOOPBACK_ENV)
    if ray.is_initialized():  # another test module left one running: start ours on loopback
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield ray
    finally:
        ray.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_shares_split_contiguously_and_cover_every_task() -> None:
    assert shares(7, 3) == [(0, 3), (3, 5), (5, 7)]
    assert shares(2, 5) == [(0, 1), (1, 2)]
    assert shares(4, 1) == [(0, 4)]


def test_ray_equals_process_backend(local_ray) -> None:  # type: ignore[no-untyped-def]
    dist = CountingDistribution(num_families=2, tasks_per_family=3, horizon=6, lengths=(0, 4))
    tasks = list(dist.tasks("train"))
    policy = ElementwisePolicy(2)
    with RolloutEngine(dist, num_workers=1, slots_per_family=2, seed=3) as engine:
        ref1 = engine.collect(policy, tasks, episodes_per_task=2)
        ref2 = engine.collect(policy, tasks, episodes_per_task=4, episodes_per_trial=2)
    with RayRolloutEngine(dist, num_actors=2, workers_per_actor=1, slots_per_family=2, seed=3) as rengine:
        got1 = rengine.collect(policy, tasks, episodes_per_task=2)
        got2 = rengine.collect(policy, tasks, episodes_per_task=4, episodes_per_trial=2)
        assert rengine.state_dict() == {"seed": 3, "collects": 2}
        with pytest.raises(ValueError, match="engine state has seed 4, but this engine's actors run seed 3"):
            rengine.load_state_dict({"seed": 4, "collects": 0})
    for ref, got in ((ref1, got1), (ref2, got2)):
        assert [t.id for t in got.tasks] == [t.id for t in ref.tasks]
        for name in FIELDS:
            assert torch.equal(getattr(got, name), getattr(ref, name)), name
    assert not torch.equal(got1.episode_seeds[:, :1], got2.episode_seeds[:, :1])  # successive collects differ


def test_killed_actor_is_replaced_and_its_share_recollected(local_ray) -> None:  # type: ignore[no-untyped-def]
    dist = CountingDistribution(num_families=1, tasks_per_family=4, horizon=8, step_delay_s=0.02)
    tasks = list(dist.tasks("train"))
    policy = ElementwisePolicy(2)
    with RolloutEngine(dist, num_workers=1, slots_per_family=1, seed=5) as engine:
        ref = engine.collect(policy, tasks, episodes_per_task=2)
    with RayRolloutEngine(dist, num_actors=2, workers_per_actor=1, slots_per_family=1, seed=5) as rengine:
        victim = rengine.actor_pids()[1]
        timer = threading.Timer(0.5, os.kill, (victim, signal.SIGKILL))  # each share takes about 0.7 s
        timer.start()
        got = rengine.collect(policy, tasks, episodes_per_task=2)
        timer.join()
        assert rengine.restarts == 1 and victim not in rengine.actor_pids()
    for name in FIELDS:
        assert torch.equal(getattr(got, name), getattr(ref, name)), name


def test_rl2_trains_two_iterations_on_the_ray_backend(local_ray, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from _helpers import tiny_rl2_config

    import metarl
    from metarl.config import TrainConfig
    from metarl.run import load_checkpoint

    cfg = TrainConfig(
        agent="rl2", benchmark="point-nav", iterations=2, meta_batch=3, episodes_per_task=2, workers=1,
        backend="ray", eval_every=0, checkpoint_every=1,
    )  # fmt: skip
    agent = tiny_rl2_config()
    run = metarl.train(cfg, agent, out=tmp_path / "run", progress=False)
    state = load_checkpoint(run / "checkpoints/latest.pt")
    assert state["run"]["iteration"] == 2 and 0 < state["run"]["env_steps"] <= 2 * 3 * 2 * 100
    assert state["engine"]["collects"] == 2
