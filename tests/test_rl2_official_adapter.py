"""RL² through Meta-World's own evaluator (metaworld.evaluation.metalearning_evaluation)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from _helpers import tiny_official_ml1_envs
from metaworld.evaluation import Timestep, metalearning_evaluation

from metarl.agents.rl2 import RL2Policy, RL2PolicyConfig
from metarl.agents.rl2.metaworld import RL2MetaWorldAgent


def _policy() -> RL2Policy:
    torch.manual_seed(0)
    return RL2Policy(39, 4, RL2PolicyConfig(mlp_hidden=(32,), gru_hidden=16))


def test_adapter_satisfies_the_protocol_and_restores_the_adapted_state() -> None:
    agent = RL2MetaWorldAgent(_policy(), num_envs=3, seed=1)
    for method in ("init", "adapt_action", "step", "adapt", "eval_action", "reset"):  # MetaLearningAgent
        assert callable(getattr(agent, method)), method
    obs = np.random.default_rng(0).normal(size=(3, 39))
    for _ in range(4):
        actions, extras = agent.adapt_action(obs)
        assert actions.shape == (3, 4) and np.isfinite(actions).all()
        assert set(extras) == {"log_prob", "value"}
        done = np.array([False, True, False])
        agent.step(Timestep(obs, actions, np.ones(3), np.zeros(3, bool), done, extras))
    assert agent.hidden.abs().sum() > 0
    agent.adapt()
    adapted = agent.adapted_hidden.clone()  # type: ignore[union-attr]
    agent.eval_action(obs)
    agent.eval_action(obs)
    assert not torch.equal(agent.hidden, adapted)
    agent.reset(np.array([True, False, True]))
    # masked envs restart from the adapted hidden state, not from zero (that would be zero-shot RL²)
    torch.testing.assert_close(agent.hidden[[0, 2]], adapted[[0, 2]])
    assert not torch.equal(agent.hidden[1], adapted[1])
    assert agent.prev_done.tolist() == [True, agent.prev_done[1].item(), True]
    assert agent.prev_reward[[0, 2]].abs().sum() == 0


def test_official_metalearning_evaluation_runs_on_a_tiny_budget() -> None:
    envs: Any = tiny_official_ml1_envs()
    try:
        agent = RL2MetaWorldAgent(_policy(), envs.num_envs, seed=0)
        success, mean_return, per_task = metalearning_evaluation(
            agent, envs, num_evals=1, adaptation_steps=1, adaptation_episodes=2, evaluation_episodes=2
        )
    finally:
        envs.close()
    assert 0.0 <= success <= 1.0
    assert np.isfinite(mean_return) and mean_return > 0  # Meta-World v2 rewards are in [0, 10] per step
    assert set(per_task) == {"reach-v3"}
    assert agent.adapted_hidden is not None and agent.adapted_hidden.abs().sum() > 0


def test_adapter_samples_adaptation_and_takes_the_mean_in_evaluation() -> None:
    """As metaworld-algorithms' RL2Wrapped: adapt_action samples, eval_action is the mode under deterministic."""
    obs = np.random.default_rng(0).normal(size=(2, 39))
    policy = _policy()
    runs = []
    for seed in (1, 2):
        agent = RL2MetaWorldAgent(policy, num_envs=2, seed=seed, deterministic=True)
        runs.append((agent.adapt_action(obs)[0], agent))
    assert not np.allclose(runs[0][0], runs[1][0])  # adaptation: different noise, different actions
    evals = []
    for _, agent in runs:
        agent.init()  # the same inputs from a fresh trial: the mean action, whatever the noise seed
        evals.append(agent.eval_action(obs))
    np.testing.assert_allclose(evals[0], evals[1])
    exact = RL2MetaWorldAgent(policy, num_envs=2, seed=3, deterministic=True, deterministic_adaptation=True)
    np.testing.assert_allclose(exact.adapt_action(obs)[0], evals[0], atol=1e-6)


def test_adapter_reads_the_previous_reward_from_meta_worlds_recurrent_info() -> None:
    policy = _policy()
    agent = RL2MetaWorldAgent(policy, num_envs=1, seed=0, info_in_obs=True)
    obs = np.random.default_rng(0).normal(size=(1, 39))
    tail = np.array([[0.5, -0.5, 0.25, 1.0, 0.7, 0.0]])  # previous action, reward / 10, done
    agent.eval_action(np.concatenate([obs, tail], 1))
    assert agent.prev_reward.tolist() == [0.0]  # cleared after the action; the next observation brings it
    agent._split(np.concatenate([obs, tail], 1))
    np.testing.assert_allclose(agent.prev_reward.numpy(), [7.0], rtol=1e-6)
    np.testing.assert_allclose(agent.prev_action.numpy(), tail[:, :4], rtol=1e-6)
    with pytest.raises(ValueError, match=r"info_in_obs expects observations of 39 \+ 4 \+ 2 values"):
        agent.eval_action(obs)


def test_adapter_reads_the_reward_itself_with_divisor_one_and_refuses_a_bad_divisor() -> None:
    """``obs_reward_divisor=1`` (envs built with normalize_reward_in_recurrent_info=False): the tail's reward is
    taken bit for bit, as the engine feeds float32(reward); a divisor that is not positive is refused."""
    policy = _policy()
    agent = RL2MetaWorldAgent(policy, num_envs=1, seed=0, info_in_obs=True, obs_reward_divisor=1.0)
    reward = 7.123456789
    obs = np.random.default_rng(0).normal(size=(1, 39))
    agent._split(np.concatenate([obs, [[0.5, -0.5, 0.25, 1.0, reward, 0.0]]], 1))
    assert agent.prev_reward.item() == np.float32(reward)
    for bad in (0.0, -10.0):
        with pytest.raises(ValueError, match=r"obs_reward_divisor must be positive .* got "):
            RL2MetaWorldAgent(policy, num_envs=1, seed=0, info_in_obs=True, obs_reward_divisor=bad)
