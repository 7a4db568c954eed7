"""RL² must learn point-nav: a short run beats the untrained policy on held-out goals (slow)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import metarl
from metarl.agents.configs import get_config
from metarl.envs import make_distribution
from metarl.rollout import RolloutEngine


def _last_episode_return(agent: object, num_tasks: int = 20) -> float:
    cfg = get_config("rl2-point-nav")
    dist = make_distribution("point-nav", seed=cfg.train.seed)
    tasks = list(dist.tasks("test"))[:num_tasks]
    k = cfg.agent.episodes_per_trial
    with RolloutEngine(dist, num_workers=1, seed=7, backend="inline") as engine:
        rollouts = agent.meta_test(engine, tasks, k - 1, 1, False)  # type: ignore[attr-defined]
    return float(rollouts.curve_return[:, -1].mean())


@pytest.mark.slow
def test_rl2_improves_on_point_nav_held_out_goals(tmp_path: Path) -> None:
    cfg = get_config("rl2-point-nav")
    train = dataclasses.replace(cfg.train, total_env_steps=None, iterations=45, eval_every=0, workers=2)
    untrained = metarl.train(dataclasses.replace(train, iterations=1), cfg.agent, out=tmp_path / "u", progress=False)
    before = _last_episode_return(metarl.load(untrained))
    run = metarl.train(train, cfg.agent, out=tmp_path / "t", progress=False)
    after = _last_episode_return(metarl.load(run))
    # standing still scores about -38 and a random policy about -90; flying to the goal about -2
    assert after > before + 20, (before, after)
    assert after > -30, (before, after)
