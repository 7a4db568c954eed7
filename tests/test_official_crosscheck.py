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


def _official_side(agent, dist, task, info_in_obs: bool) -> tuple[np.ndarray, list[np.ndarray]]:  # type: ignore[no-untyped-def]
    """One adaptation episode and two 20-step evaluation episodes, as metalearning_evaluation runs them."""
    from metaworld.evaluation import Timestep
    from metaworld.wrappers import RNNBasedMetaRLWrapper

    from metarl.agents.rl2_metaworld import RL2MetaWorldAgent

    adapter = RL2MetaWorldAgent(
        agent.policy, 1, deterministic=True, deterministic_adaptation=True, info_in_obs=info_in_obs
    )
    env = dist.make_env("reach-v3")
    dist.set_task(env, task)
    if info_in_obs:  # what the cross-check's recurrent_info_in_obs envs give the adapter
        env = RNNBasedMetaRLWrapper(env)
    adapter.init()
    obs, _ = env.reset(seed=0)
    actions = []
    for _ in range(500):  # the adaptation episode
        a, aux = adapter.adapt_action(obs[None])
        actions.append(a[0])
        nobs, r, term, trunc, _ = env.step(a[0])
        adapter.step(Timestep(obs[None], a, np.array([r]), np.array([term]), np.array([trunc]), aux))
        obs = nobs
    adapter.adapt()
    evals = []
    for _ in range(2):  # each evaluation episode restarts from the adapted hidden state; no step() calls here
        obs, _ = env.reset(seed=0)
        adapter.reset(np.array([True]))
        episode = []
        for _ in range(20):
            a = adapter.eval_action(obs[None])[0]
            episode.append(a)
            obs, *_ = env.step(a)
        evals.append(np.array(episode))
    return np.array(actions), evals


def test_official_adapter_sees_what_the_engine_feeds_in_every_episode() -> None:
    """The adaptation episode and whole evaluation episodes agree between the adapter (on Meta-World's
    recurrent_info_in_obs envs, which carry the reward into evaluation episodes) and metarl's engine."""
    from metarl.agents.rl2 import AdaptedStatePolicy

    torch.set_num_threads(1)
    dist = make_distribution("ML1-reach-v3", seed=0)
    task = dist.tasks("test")[18]
    with RolloutEngine(dist, num_workers=1, seed=0, backend="inline") as engine:
        agent = _briefly_trained_rl2(dist, engine)
        traj = engine.collect(AdaptedStatePolicy(agent.policy, 1), [task], episodes_per_task=3,
                              episodes_per_trial=3, deterministic=True)  # fmt: skip
    adaptation, evals = _official_side(agent, dist, task, info_in_obs=True)
    np.testing.assert_allclose(adaptation, traj.actions[0, 0].numpy(), atol=1e-4)
    for e in (1, 2):
        np.testing.assert_allclose(evals[e - 1], traj.actions[0, e, :20].numpy(), atol=1e-4)
    # the control: envs without the reward in the observation show the adapter reward 0 after the first
    # evaluation step, so its evaluation actions drift from the engine's
    _, blind = _official_side(agent, dist, task, info_in_obs=False)
    np.testing.assert_allclose(blind[0][0], traj.actions[0, 1, 0].numpy(), atol=1e-4)
    assert np.abs(blind[0][1:] - traj.actions[0, 1, 1:20].numpy()).max() > 1e-3


def test_cross_check_agrees_with_the_official_evaluator_on_the_same_goals() -> None:
    torch.set_num_threads(1)
    dist = make_distribution("ML1-reach-v3", seed=0)
    with RolloutEngine(dist, num_workers=1, seed=0, backend="inline") as engine:
        agent = _briefly_trained_rl2(dist, engine)
        check = cross_check(agent, dist, engine, rounds=3, adaptation_episodes=1, eval_episodes=2, seed=0)
    assert len(check.rounds) == 3 and len({r.task_id for r in check.rounds}) >= 2
    for r in check.rounds:
        assert r.task_id in {t.id for t in dist.tasks("test")}
        # one env per task name: both count the same 2 evaluation episodes of the same goal
        assert r.metarl_success == r.official_success, r
        if r.official_success == 0.0:  # no episode ended early on success: the same episodes, the same return
            assert r.metarl_return == pytest.approx(r.official_return, rel=1e-3), r
        assert math.isfinite(r.metarl_return) and r.metarl_return > 0


def test_cross_check_refuses_a_success_shaped_distribution() -> None:
    """Meta-World's envs pay no success_reward: the two sides would feed the agent different rewards."""
    from metarl.errors import UserError

    dist = make_distribution("ML1-reach-v3", seed=0, success_reward=10.0)
    agent = RL2Agent(39, 4, RL2Config(episodes_per_trial=2), episodes_per_task=2, seed=0)
    with pytest.raises(UserError, match=r"own envs, which pay no success_reward, but 'ML1-reach-v3' adds 10"):
        cross_check(agent, dist, engine=None, rounds=1, adaptation_episodes=1, eval_episodes=1)


def test_official_counting_over_counts_envs_that_finish_early() -> None:
    # env 0 succeeds fast (short episodes), env 1 fails (full-length episodes): env 0's episodes end first
    ended = [(0, True), (0, True), (0, True), (1, False), (0, True), (1, False), (1, False)]
    assert official_counting(ended, 3) == 1.0  # the first 3 ended episodes are all env 0's
    assert per_env_counting(ended, 3) == 0.5  # 3 of each env: 1.0 and 0.0
    with pytest.raises(ValueError, match="env 1 ended 1 episodes, fewer than 2"):
        per_env_counting([(0, True), (0, True), (1, False)], 2)
