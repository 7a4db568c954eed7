"""MAML through Meta-World's own evaluator (metaworld.evaluation.metalearning_evaluation)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from _helpers import tiny_official_ml1_envs
from metaworld.evaluation import Timestep, metalearning_evaluation

from metarl.agents.maml import MAMLAgent, MAMLConfig, MAMLMetaWorldAgent, adapt_params, task_batch


def _agent() -> MAMLAgent:
    return MAMLAgent(39, 4, MAMLConfig(hidden=(16, 16)), seed=0)


def test_adapter_takes_one_inner_step_per_env_on_its_complete_episodes() -> None:
    agent = _agent()
    adapter = MAMLMetaWorldAgent(agent, num_envs=2, seed=1)
    rng = np.random.default_rng(0)
    # env 0 finishes episodes of 3 steps, env 1 one episode of 5 steps (its 6th step is unfinished)
    for t in range(6):
        obs = rng.normal(size=(2, 39))
        actions, extras = adapter.adapt_action(obs)
        assert actions.shape == (2, 4) and np.isfinite(actions).all() and extras["log_prob"].shape == (2,)
        done = np.array([t % 3 == 2, t == 4])
        adapter.step(Timestep(obs, actions, rng.normal(size=2), np.zeros(2, bool), done, extras))
    traj = adapter._trajectories()
    assert traj.lengths.tolist() == [[3, 3], [5, 0]]  # env 1's unfinished step is dropped
    expected = adapt_params(agent.policy, agent.policy.params(), [task_batch(traj, agent.policy, agent.config)],
                            agent.config.inner_lr, create_graph=False)  # fmt: skip
    adapter.adapt()
    assert adapter.params is not None
    for k, v in adapter.params.items():
        torch.testing.assert_close(v, expected[k].detach())
        assert not torch.equal(v[0], agent.policy.get_parameter(k).detach())  # the weights moved
    adapter.init()
    assert adapter.params is None


def test_adapt_without_a_finished_episode_says_what_to_change() -> None:
    adapter = MAMLMetaWorldAgent(_agent(), num_envs=2)
    obs = np.zeros((2, 39))
    actions, extras = adapter.adapt_action(obs)
    adapter.step(Timestep(obs, actions, np.zeros(2), np.zeros(2, bool), np.array([True, False]), extras))
    with pytest.raises(RuntimeError, match="finished no adaptation episode"):
        adapter.adapt()


def test_official_metalearning_evaluation_runs_on_a_tiny_budget() -> None:
    envs: Any = tiny_official_ml1_envs()
    try:
        adapter = MAMLMetaWorldAgent(_agent(), envs.num_envs, seed=0)
        success, mean_return, per_task = metalearning_evaluation(
            adapter, envs, num_evals=1, adaptation_steps=2, adaptation_episodes=2, evaluation_episodes=2
        )
    finally:
        envs.close()
    assert 0.0 <= success <= 1.0
    assert np.isfinite(mean_return) and mean_return > 0  # Meta-World v2 rewards are in [0, 10] per step
    assert set(per_task) == {"reach-v3"}
    assert adapter.params is not None and adapter.params["log_std"].shape == (2, 4)
