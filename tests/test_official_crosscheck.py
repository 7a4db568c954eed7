"""metarl's meta-test against Meta-World's own evaluator on the same goals, and the evaluator's miscount."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from metarl.agents.rl2 import RL2Agent, RL2Config, RL2PolicyConfig
from metarl.envs import make_distribution
from metarl.evaluation.official import OBS_REWARD_DIVISOR, cross_check, official_counting, per_env_counting
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

    from metarl.agents.rl2.metaworld import RL2MetaWorldAgent

    adapter = RL2MetaWorldAgent(
        agent.policy, 1, deterministic=True, deterministic_adaptation=True, info_in_obs=info_in_obs,
        obs_reward_divisor=OBS_REWARD_DIVISOR,
    )  # fmt: skip
    env = dist.make_env("reach-v3")
    dist.set_task(env, task)
    if info_in_obs:  # what the cross-check's recurrent_info_in_obs envs give the adapter
        env = RNNBasedMetaRLWrapper(env, normalize_reward=OBS_REWARD_DIVISOR != 1.0)
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
    """The adaptation episode and whole evaluation episodes agree bit for bit between the adapter (on Meta-World's
    recurrent_info_in_obs envs, which carry the reward into evaluation episodes) and metarl's engine: float32
    actions and the reward's own float32 bits (an ulp off anywhere is amplified by a trained policy)."""
    from metarl.agents.rl2 import AdaptedStatePolicy

    torch.set_num_threads(1)
    dist = make_distribution("ML1-reach-v3", seed=0)
    task = dist.tasks("test")[18]
    with RolloutEngine(dist, num_workers=1, seed=0, backend="inline") as engine:
        agent = _briefly_trained_rl2(dist, engine)
        traj = engine.collect(AdaptedStatePolicy(agent.policy, 1), [task], episodes_per_task=3,
                              episodes_per_trial=3, deterministic=True)  # fmt: skip
    adaptation, evals = _official_side(agent, dist, task, info_in_obs=True)
    assert adaptation.dtype == np.float32
    np.testing.assert_array_equal(adaptation, traj.actions[0, 0].numpy())
    for e in (1, 2):
        np.testing.assert_array_equal(evals[e - 1], traj.actions[0, e, :20].numpy())
    # the control: envs without the reward in the observation show the adapter reward 0 after the first
    # evaluation step, so its evaluation actions drift from the engine's
    _, blind = _official_side(agent, dist, task, info_in_obs=False)
    np.testing.assert_allclose(blind[0][0], traj.actions[0, 1, 0].numpy(), atol=1e-4)
    assert np.abs(blind[0][1:] - traj.actions[0, 1, 1:20].numpy()).max() > 1e-3


@pytest.mark.parametrize("success_reward", [0.0, 10.0])
def test_cross_check_agrees_with_the_official_evaluator_on_the_same_goals(success_reward: float) -> None:
    """With a success-shaped distribution the official envs pay the same shaping, so both sides still agree."""
    torch.set_num_threads(1)
    dist = make_distribution("ML1-reach-v3", seed=0, success_reward=success_reward)
    with RolloutEngine(dist, num_workers=1, seed=0, backend="inline") as engine:
        agent = _briefly_trained_rl2(dist, engine)
        check = cross_check(agent, dist, engine, rounds=3, adaptation_episodes=1, eval_episodes=2, seed=0)
    assert len(check.rounds) == 3 and len({r.task_id for r in check.rounds}) >= 2
    for r in check.rounds:
        assert r.task_id in {t.id for t in dist.tasks("test")}
        assert r.official_per_family == r.metarl_per_family == {"reach-v3": r.official_success}
        # one env per task name: both count the same 2 evaluation episodes of the same goal
        assert r.metarl_success == r.official_success, r
        if r.official_success == 0.0:  # no episode ended early on success: the same episodes, the same return
            assert r.metarl_return == pytest.approx(r.official_return, rel=1e-3), r
        assert math.isfinite(r.metarl_return) and r.metarl_return > 0


def test_cross_check_on_ml10_scores_one_goal_of_every_held_out_class_per_round() -> None:
    """ML10: Meta-World's ML10-test vector env, one env per test class; each round's five goals are read back and
    meta-tested by metarl, and both sides agree class by class (exact mode)."""
    torch.set_num_threads(1)
    dist = make_distribution("ML10", seed=0)
    test_families = sorted({t.family for t in dist.tasks("test")})
    with RolloutEngine(dist, num_workers=1, seed=0, backend="inline") as engine:
        cfg = RL2Config(episodes_per_trial=1, policy=RL2PolicyConfig(mlp_hidden=(32,), gru_hidden=16))
        agent = RL2Agent(39, 4, cfg, episodes_per_task=1, seed=0)
        check = cross_check(agent, dist, engine, rounds=2, adaptation_episodes=1, eval_episodes=1, seed=0)
    assert len(check.rounds) == 2
    test_ids = {t.id for t in dist.tasks("test")}
    for r in check.rounds:
        ids = r.task_id.split(", ")
        assert len(ids) == 5 and set(ids) <= test_ids
        assert sorted(r.official_per_family) == sorted(r.metarl_per_family) == test_families
        assert r.official_per_family == r.metarl_per_family, r
        assert r.official_success == pytest.approx(np.mean(list(r.official_per_family.values())))
        assert math.isfinite(r.metarl_return) and math.isfinite(r.official_return)
    assert check.rounds[0].task_id != check.rounds[1].task_id  # the evaluator draws new goals each round
    assert check.max_success_gap == 0.0


def test_cross_check_of_the_committed_trained_ml10_agent_agrees_class_by_class() -> None:
    """A trained agent amplifies an ulp of difference in its inputs into another trajectory within tens of steps
    (the committed RL² ML10 agent, before the adapter sent float32 actions and read the reward's own bits, scored
    drawer-open 1 and door-close 0 officially on this round and the reverse in metarl).  With bit-equal inputs
    both sides take the same episodes: the same success in every class."""
    from pathlib import Path

    import metarl
    from metarl.run import make_run_distribution, read_run_config

    run = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "ML10" / "rl2-ml10-s0"
    torch.set_num_threads(1)
    dist = make_run_distribution(read_run_config(run)[0])
    agent = metarl.load(run)
    with RolloutEngine(dist, num_workers=1, seed=0, backend="inline") as engine:
        check = cross_check(agent, dist, engine, rounds=1, adaptation_episodes=1, eval_episodes=1, seed=0)
    r = check.rounds[0]
    assert r.official_per_family == r.metarl_per_family, r
    assert 0 < sum(r.official_per_family.values()) < 5  # not a vacuous agreement: some classes succeed, some fail


def test_cross_check_refuses_a_distribution_meta_world_has_no_evaluator_for() -> None:
    from metarl.errors import UserError

    dist = make_distribution("point-nav", seed=0)
    with pytest.raises(UserError, match=r"runs on Meta-World's ML1 distributions and on ML10, ML25, ML45, got 'point"):
        cross_check(None, dist, None, rounds=1, adaptation_episodes=1, eval_episodes=1)


def _official_reach(success_reward: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Drive the hand of a Meta-World ML1-test reach env (recurrent_info_in_obs) onto its goal for 60 steps:
    rewards, success flags, and the reward the observation carries."""
    import gymnasium as gym
    import metaworld  # noqa: F401  (registers the Meta-World/ envs)

    from metarl.evaluation.official import pay_success_reward

    envs = gym.make_vec("Meta-World/ML1-test", env_name="reach-v3", seed=0, vector_strategy="sync",
                        meta_batch_size=1, recurrent_info_in_obs=True)  # fmt: skip
    if success_reward:
        pay_success_reward(envs, success_reward)
    rewards, success, seen = [], [], []
    try:
        envs.call("toggle_terminate_on_success", False)  # the evaluator's test envs end episodes on success
        envs.call("sample_tasks")  # a held-out goal, as the evaluator draws one
        env = envs.envs[0]  # stepped alone: the vector env would reset it on the same step
        obs, _ = env.reset()
        goal = env.unwrapped._target_pos
        for _ in range(60):
            action = np.zeros(4)
            action[:3] = np.clip((goal - obs[:3]) * 50.0, -1.0, 1.0)
            obs, r, _, _, info = env.step(action)
            rewards.append(float(r))
            success.append(float(info["success"]))
            seen.append(float(obs[-2]))  # observation ⊕ previous action ⊕ reward / 10 ⊕ done
    finally:
        envs.close()
    return np.array(rewards), np.array(success), np.array(seen)


def test_official_envs_pay_the_success_reward_beneath_metaworlds_wrappers() -> None:
    plain, success, seen_plain = _official_reach(0.0)
    shaped, success_shaped, seen_shaped = _official_reach(10.0)
    assert success.any() and not success.all()  # the hand starts outside the ball and reaches it
    np.testing.assert_array_equal(success_shaped, success)  # the same steps: success is counted as ever
    np.testing.assert_allclose(shaped - plain, 10.0 * success, atol=1e-6)  # C on exactly the successful steps
    np.testing.assert_allclose(seen_plain, plain / 10.0, atol=1e-6)
    np.testing.assert_allclose(seen_shaped, shaped / 10.0, atol=1e-6)  # the agent's reward input shows it


def test_official_counting_over_counts_envs_that_finish_early() -> None:
    # env 0 succeeds fast (short episodes), env 1 fails (full-length episodes): env 0's episodes end first
    ended = [(0, True), (0, True), (0, True), (1, False), (0, True), (1, False), (1, False)]
    assert official_counting(ended, 3) == 1.0  # the first 3 ended episodes are all env 0's
    assert per_env_counting(ended, 3) == 0.5  # 3 of each env: 1.0 and 0.0
    with pytest.raises(ValueError, match="env 1 ended 1 episodes, fewer than 2"):
        per_env_counting([(0, True), (0, True), (1, False)], 2)


def test_official_eval_counting_demo_runs_on_a_shaped_distribution() -> None:
    """benchmarks/learning/official_eval.py's demo of the evaluator's counting rule: every env ends its episodes, and
    the two rules read the same ended episodes (it once imported a helper that no longer existed)."""
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)
    from benchmarks.learning.official_eval import counting_demo

    torch.set_num_threads(1)
    dist = make_distribution("ML1-reach-v3", seed=0, success_reward=10.0)
    with RolloutEngine(dist, num_workers=1, seed=0, backend="inline") as engine:
        agent = _briefly_trained_rl2(dist, engine)
    demo = counting_demo(agent, dist, envs_per_name=5, episodes=1, seed=0)  # 5 divides the 50 held-out goals
    assert demo["episodes_ended"] >= 5  # each of the 5 envs ended at least its one episode
    for rule in ("official_rule", "per_env_rule"):
        assert 0.0 <= demo[rule] <= 1.0
    assert demo["official_rule"] in (0.0, 1.0)  # one episode counted for the task name
    assert demo["per_env_rule"] * 5 == pytest.approx(round(demo["per_env_rule"] * 5))  # k of 5 envs
