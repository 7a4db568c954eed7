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


def test_official_eval_script_records_a_maml_cross_check_as_sampled_adaptation(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """benchmarks/learning/official_eval.py on a MAML run: its adaptation episodes are sampled whatever the mode, so
    the JSON must say so (it once recorded ``exact: true`` for MAML-TRPO on ML10) and name the agent."""
    import json
    import sys
    from pathlib import Path

    import metarl
    from metarl.config import TrainConfig

    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)
    from benchmarks.learning.official_eval import main

    train = TrainConfig(agent="maml-trpo", benchmark="ML1-reach-v3", seed=0, iterations=1, meta_batch=2,
                        episodes_per_task=1, workers=1, backend="inline", eval_every=0)  # fmt: skip
    threads = torch.get_num_threads()
    try:
        run = metarl.train(train, MAMLConfig(hidden=(16, 16)), out=tmp_path / "run", progress=False)
        out = tmp_path / "check.json"
        assert main(["--run", str(run), "--quick", "--json", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    data = json.loads(out.read_text())
    assert data["agent"] == "maml-trpo" and data["exact"] is False
    assert 0.0 <= data["official_success"] <= 1.0 and 0.0 <= data["metarl_success"] <= 1.0
    assert len(data["rounds"]) == 2
