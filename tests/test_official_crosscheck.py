"""metarl's meta-test against Meta-World's own evaluator on the same goals, and the evaluator's miscount."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from metarl.agents.rl2 import RL2Agent, RL2Config, RL2PolicyConfig
from metarl.envs import make_distribution
from metarl.evaluation.official import cross_check, official_counting, per_env_counting
from metarl.rollout import RolloutEngine


def _briefly_trained_rl2(dist, engine):  # type: ignore[no-untyped-def]
    cfg = RL2Config(episodes_per_trial=2, policy=RL2PolicyConfig(mlp_hidden=(32,), gru_hidden=16))
    agent = RL2Agent(39, 4, cfg, episodes_per_task=2, seed=0)
    agent.meta_train_step(engine, dist.sample(2, "train", rng=0))
    return agent


def test_official_adapter_and_engine_take_the_same_adaptation_and_restart_from_the_same_state() -> None:
    """Where the two protocols must agree: the adaptation episode, and each evaluation episode's first step."""
    from metaworld.evaluation import Timestep

    from metarl.agents.rl2 import AdaptedStatePolicy, RL2MetaWorldAgent

    torch.set_num_threads(1)
    dist = make_distribution("ML1-reach-v3", seed=0)
    task = dist.tasks("test")[18]
    with RolloutEngine(dist, num_workers=1, seed=0, backend="inline") as engine:
        agent = _briefly_trained_rl2(dist, engine)
        traj = engine.collect(AdaptedStatePolicy(agent.policy, 1), [task], episodes_per_task=3,
                              episodes_per_trial=3, deterministic=True)  # fmt: skip
    adapter = RL2MetaWorldAgent(agent.policy, 1, deterministic=True)
    env = dist.make_env("reach-v3")
    dist.set_task(env, task)
    adapter.init()
    obs, _ = env.reset(seed=0)
    actions = []
    for _ in range(500):  # the adaptation episode, as metalearning_evaluation runs it
        a, aux = adapter.adapt_action(obs[None])
        actions.append(a[0])
        nobs, r, term, trunc, _ = env.step(a[0])
        adapter.step(Timestep(obs[None], a, np.array([r]), np.array([term]), np.array([trunc]), aux))
        obs = nobs
    adapter.adapt()
    np.testing.assert_allclose(np.array(actions), traj.actions[0, 0].numpy(), atol=1e-4)
    first_eval = []
    for _ in range(2):  # each evaluation episode restarts from the adapted hidden state
        obs, _ = env.reset(seed=0)
        adapter.reset(np.array([True]))
        first_eval.append(adapter.eval_action(obs[None])[0])
        for _ in range(10):
            env.step(adapter.eval_action(obs[None])[0])
    for e in (1, 2):
        np.testing.assert_allclose(first_eval[e - 1], traj.actions[0, e, 0].numpy(), atol=1e-4)


def test_cross_check_agrees_with_the_official_evaluator_on_the_same_goals() -> None:
    torch.set_num_threads(1)
    dist = make_distribution("ML1-reach-v3", seed=0)
    with RolloutEngine(dist, num_workers=1, seed=0, backend="inline") as engine:
        agent = _briefly_trained_rl2(dist, engine)
        check = cross_check(agent, dist, engine, rounds=3, adaptation_episodes=1, eval_episodes=2, seed=0)
    assert agent.eval_reward_feedback  # restored after the cross-check
    assert len(check.rounds) == 3 and len({r.task_id for r in check.rounds}) >= 2
    for r in check.rounds:
        assert r.task_id in {t.id for t in dist.tasks("test")}
        # one env per task name: both count the same 2 evaluation episodes of the same goal
        assert r.metarl_success == r.official_success, r
        if r.official_success == 0.0:  # no episode ended early on success: the same episodes, the same return
            assert r.metarl_return == pytest.approx(r.official_return, rel=1e-3), r
        assert math.isfinite(r.metarl_return) and r.metarl_return > 0


def test_official_counting_over_counts_envs_that_finish_early() -> None:
    # env 0 succeeds fast (short episodes), env 1 fails (full-length episodes): env 0's episodes end first
    ended = [(0, True), (0, True), (0, True), (1, False), (0, True), (1, False), (1, False)]
    assert official_counting(ended, 3) == 1.0  # the first 3 ended episodes are all env 0's
    assert per_env_counting(ended, 3) == 0.5  # 3 of each env: 1.0 and 0.0
    with pytest.raises(ValueError, match="env 1 ended 1 episodes, fewer than 2"):
        per_env_counting([(0, True), (0, True), (1, False)], 2)
