"""Classic distributions: sizes and splits, env outputs, seeding, set_task, and hand-worked oracles."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from metarl import Task
from metarl.envs import make_distribution
from metarl.envs.classic import (
    AntDirDistribution,
    CheetahDirDistribution,
    CheetahVelDistribution,
    PointNavDistribution,
    PointNavEnv,
)
from metarl.tasks import TaskDistribution

CONTINUOUS = ["point-nav", "cheetah-vel", "ant-dir"]
ALL = [*CONTINUOUS, "cheetah-dir"]


@pytest.fixture(scope="module")
def dists() -> dict[str, TaskDistribution]:
    return {name: make_distribution(name, seed=0) for name in ALL}


def _rollout(
    dist: TaskDistribution, task: Task, seed: int, actions: np.ndarray
) -> tuple[list[np.ndarray], list[float]]:
    env = dist.make_env(task.family)
    try:
        dist.set_task(env, task)
        obs, _ = env.reset(seed=seed)
        observations, rewards = [obs.copy()], []
        for a in actions:
            obs, reward, terminated, truncated, _ = env.step(a)
            observations.append(obs.copy())
            rewards.append(float(reward))
            if terminated or truncated:
                break
        return observations, rewards
    finally:
        env.close()


def _actions(dist: TaskDistribution, n: int, seed: int = 0) -> np.ndarray:
    space = dist.action_space
    return np.random.default_rng(seed).uniform(space.low, space.high, size=(n, *space.shape)).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Task lists
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", CONTINUOUS)
def test_continuous_splits_have_documented_sizes_and_are_disjoint(
    dists: dict[str, TaskDistribution], name: str
) -> None:
    dist = dists[name]
    train, test = dist.tasks("train"), dist.tasks("test")
    assert (len(train), len(test)) == (1000, 100)
    assert not dist.overlapping_splits
    assert dist.source == "classic" and dist.families == (name,)
    for split, tasks in (("train", train), ("test", test)):
        assert [t.index for t in tasks] == list(range(len(tasks)))
        assert all(t.split == split and t.distribution == name and t.family == name for t in tasks)
    train_params = {t.params for t in train}
    test_params = {t.params for t in test}
    assert len(train_params) == 1000 and len(test_params) == 100
    assert not train_params & test_params


def test_task_parameters_follow_their_distributions(dists: dict[str, TaskDistribution]) -> None:
    goals = np.array([t.param("goal") for t in dists["point-nav"].tasks("train")])
    assert goals.shape == (1000, 2) and goals.min() >= -0.5 and goals.max() <= 0.5
    assert goals.min() < -0.45 and goals.max() > 0.45  # spans the square
    velocities = np.array([t.param("velocity") for t in dists["cheetah-vel"].tasks("train")])
    assert velocities.min() >= 0.0 and velocities.max() <= 3.0 and velocities.max() > 2.9
    angles = np.array([t.param("angle") for t in dists["ant-dir"].tasks("train")])
    assert angles.min() >= 0.0 and angles.max() < 2 * math.pi and angles.max() > 6.0


def test_standing_still_on_point_nav_scores_about_minus_38(dists: dict[str, TaskDistribution]) -> None:
    # E|g| for g ~ U[-0.5, 0.5]^2 is 0.3826, so 100 steps standing at the origin score about -38.3.
    goals = np.array([t.param("goal") for t in dists["point-nav"].tasks("train")])
    assert -100 * np.linalg.norm(goals, axis=1).mean() == pytest.approx(-38.26, abs=1.0)
    task = dists["point-nav"].tasks("test")[3]
    _, rewards = _rollout(dists["point-nav"], task, seed=0, actions=np.zeros((200, 2), np.float32))
    assert len(rewards) == 100  # truncated at the horizon
    assert sum(rewards) == pytest.approx(-100 * float(np.hypot(*task.param("goal"))), rel=1e-12)


def test_cheetah_dir_has_two_tasks_shared_by_both_splits(dists: dict[str, TaskDistribution]) -> None:
    dist = dists["cheetah-dir"]
    train, test = dist.tasks("train"), dist.tasks("test")
    assert [t.param("direction") for t in train] == [1.0, -1.0]
    assert [t.params for t in test] == [t.params for t in train]
    assert [t.split for t in test] == ["test", "test"]
    assert dist.overlapping_splits and "both" in dist.notes
    assert dist.describe()["overlapping_splits"] is True


def test_task_lists_depend_on_the_seed_only() -> None:
    a, b, c = PointNavDistribution(seed=0), PointNavDistribution(seed=0), PointNavDistribution(seed=1)
    assert a.tasks("test") == b.tasks("test") and a.tasks("train") == b.tasks("train")
    assert a.tasks("test") != c.tasks("test")
    small = make_distribution("point-nav", seed=0, num_train=10, num_test=5)
    assert (len(small.tasks("train")), len(small.tasks("test"))) == (10, 5)


@pytest.mark.parametrize("name", ALL)
def test_spec_rebuilds_the_same_distribution(dists: dict[str, TaskDistribution], name: str) -> None:
    dist = dists[name]
    rebuilt = pickle.loads(pickle.dumps(dist.spec)).build()
    assert type(rebuilt) is type(dist) and rebuilt.name == name
    assert rebuilt.tasks("train") == dist.tasks("train") and rebuilt.tasks("test") == dist.tasks("test")
    assert rebuilt.max_episode_steps == dist.max_episode_steps


def test_horizons_and_options() -> None:
    assert PointNavDistribution().max_episode_steps == 100
    for cls in (CheetahVelDistribution, CheetahDirDistribution, AntDirDistribution):
        assert cls().max_episode_steps == 200
        assert "200" in (cls.__doc__ or "")
    assert CheetahVelDistribution(max_episode_steps=100).max_episode_steps == 100
    with pytest.raises(ValueError, match="num_train must be a positive integer"):
        PointNavDistribution(num_train=0)
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        CheetahVelDistribution(seed=-1)


# ----------------------------------------------------------------------------------------------
# Env outputs, seeding, set_task
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_envs_step_with_finite_outputs(dists: dict[str, TaskDistribution], name: str) -> None:
    dist = dists[name]
    env = dist.make_env(name)
    try:
        dist.set_task(env, dist.tasks("test")[0])
        obs, _ = env.reset(seed=0)
        assert obs.shape == dist.observation_space.shape and obs.dtype == dist.observation_space.dtype
        for a in _actions(dist, 20):
            obs, reward, terminated, truncated, info = env.step(a)
            assert obs.shape == dist.observation_space.shape and np.all(np.isfinite(obs))
            assert np.ndim(reward) == 0 and math.isfinite(reward)
            assert isinstance(terminated, bool) and isinstance(truncated, bool)
            assert isinstance(info["success"], bool)
            if terminated or truncated:
                break
    finally:
        env.close()
    expected_dims = {"point-nav": (2, 2), "cheetah-vel": (17, 6), "cheetah-dir": (17, 6), "ant-dir": (105, 8)}
    assert (dist.observation_space.shape[0], dist.action_space.shape[0]) == expected_dims[name]


@pytest.mark.parametrize("name", ALL)
def test_same_seed_same_observations_and_rewards(dists: dict[str, TaskDistribution], name: str) -> None:
    dist = dists[name]
    task = dist.tasks("train")[1]
    actions = _actions(dist, 15)
    obs_a, rew_a = _rollout(dist, task, 7, actions)
    obs_b, rew_b = _rollout(dist, task, 7, actions)
    assert rew_a == rew_b
    assert all(np.array_equal(x, y) for x, y in zip(obs_a, obs_b, strict=True))
    if name != "point-nav":  # MuJoCo envs add seeded reset noise; point-nav always starts at the origin
        obs_c, _ = _rollout(dist, task, 8, actions)
        assert not np.array_equal(obs_a[0], obs_c[0])


@pytest.mark.parametrize("name", ALL)
def test_set_task_changes_rewards_for_the_same_actions(dists: dict[str, TaskDistribution], name: str) -> None:
    dist = dists[name]
    first, second = dist.tasks("train")[:2]
    actions = _actions(dist, 10)
    obs_1, rew_1 = _rollout(dist, first, 0, actions)
    _, rew_2 = _rollout(dist, second, 0, actions)
    n = min(len(rew_1), len(rew_2))
    assert n >= 5 and not np.allclose(rew_1[:n], rew_2[:n])
    # and switching back reproduces the first task exactly (set_task only changes the target)
    obs_3, rew_3 = _rollout(dist, first, 0, actions)
    assert rew_3 == rew_1 and all(np.array_equal(x, y) for x, y in zip(obs_1, obs_3, strict=True))


def test_set_task_refuses_a_task_of_another_distribution(dists: dict[str, TaskDistribution]) -> None:
    env = dists["cheetah-vel"].make_env("cheetah-vel")
    with pytest.raises(ValueError, match="belongs to distribution 'point-nav'"):
        dists["cheetah-vel"].set_task(env, dists["point-nav"].tasks("train")[0])
    with pytest.raises(TypeError, match="expects an env built by its make_env"):
        dists["point-nav"].set_task(env, dists["point-nav"].tasks("train")[0])
    env.close()


# ----------------------------------------------------------------------------------------------
# Oracles
# ----------------------------------------------------------------------------------------------
def _point_env(goal: tuple[float, float]) -> PointNavEnv:
    env = PointNavEnv(goal=goal)
    env.reset(seed=0)
    return env


def test_point_nav_hand_computed_trajectory() -> None:
    # goal (0.3, -0.2); actions (0.5, -0.5) -> clipped to (0.1, -0.1), then (0.1, -0.1), then (0.1, 0).
    env = _point_env((0.3, -0.2))
    obs, r, term, trunc, info = env.step(np.array([0.5, -0.5], np.float32))
    assert obs.dtype == np.float32 and obs == pytest.approx([0.1, -0.1], abs=1e-6)
    assert r == pytest.approx(-math.sqrt(0.2**2 + 0.1**2), abs=1e-6)  # reward after the move: -0.22361
    assert (term, trunc, info["success"]) == (False, False, False)
    obs, r, term, _, info = env.step(np.array([0.1, -0.1], np.float32))
    assert obs == pytest.approx([0.2, -0.2], abs=1e-6) and r == pytest.approx(-0.1, abs=1e-6)
    assert term is False  # |dx| = 0.1 >= 0.01
    obs, r, term, trunc, info = env.step(np.array([0.1, 0.0], np.float32))
    assert obs == pytest.approx([0.3, -0.2], abs=1e-6) and r == pytest.approx(0.0, abs=1e-6)
    assert (term, trunc, info["success"]) == (True, False, True)


def test_point_nav_terminates_within_001_on_both_axes() -> None:
    step = np.array([0.1, 0.1], np.float32)
    # L2 distance 0.0127 > 0.01, but each axis is within 0.009: terminates (per-axis test, as the original).
    _, _, term, _, info = _point_env((0.109, 0.109)).step(step)
    assert term is True and info["distance"] == pytest.approx(math.hypot(0.009, 0.009), abs=1e-6)
    # one axis off by 0.0105: no termination, although within the 0.1 success radius.
    _, _, term, _, info = _point_env((0.1, 0.1105)).step(step)
    assert term is False and info["success"] is True


def test_point_nav_success_radius_and_clipping() -> None:
    _, r, _, _, info = _point_env((0.15, 0.0)).step(np.array([1.0, 0.0], np.float32))  # clipped to 0.1
    assert r == pytest.approx(-0.05, abs=1e-6) and info["success"] is True  # 0.05 < 0.1
    _, r, _, _, info = _point_env((0.25, 0.0)).step(np.array([0.1, 0.0], np.float32))
    assert r == pytest.approx(-0.15, abs=1e-6) and info["success"] is False  # 0.15 >= 0.1
    obs, _, _, _, _ = _point_env((0.4, 0.4)).step(np.array([-1e30, 1e30], np.float32))
    assert obs == pytest.approx([-0.1, 0.1], abs=1e-6)
    with pytest.raises(ValueError, match="must be finite"):
        _point_env((0.1, 0.1)).step(np.array([np.nan, 0.0], np.float32))
    with pytest.raises(ValueError, match=r"shape \(3,\), expected \(2,\)"):
        _point_env((0.1, 0.1)).step(np.zeros(3, np.float32))


def test_point_nav_truncates_at_the_horizon() -> None:
    env = _point_env((0.4, 0.4))
    flags = [env.step(np.zeros(2, np.float32))[3] for _ in range(100)]
    assert flags == [False] * 99 + [True]


def test_cheetah_vel_reward_oracle(dists: dict[str, TaskDistribution]) -> None:
    dist = dists["cheetah-vel"]
    env = dist.make_env("cheetah-vel")
    task = dist.tasks("train")[0]
    target = float(task.param("velocity"))
    dist.set_task(env, task)
    env.reset(seed=0)
    big = np.full(6, 2.0, np.float32)  # clipped to 1.0 before the step: control cost 0.05 * 6
    _, reward, _, _, info = env.step(big)
    assert info["reward_ctrl"] == pytest.approx(-0.3, abs=1e-6)
    assert reward == pytest.approx(-abs(info["x_velocity"] - target) - 0.3, abs=1e-6)
    for _ in range(199):
        *_, truncated, _ = env.step(np.zeros(6, np.float32))
    assert truncated is True  # horizon 200
    env.close()


def test_cheetah_dir_rewards_are_mirror_images(dists: dict[str, TaskDistribution]) -> None:
    dist = dists["cheetah-dir"]
    forward, backward = dist.tasks("train")
    actions = _actions(dist, 10)
    _, rew_f = _rollout(dist, forward, 0, actions)
    _, rew_b = _rollout(dist, backward, 0, actions)
    ctrl = [-0.05 * float(np.sum(a.astype(np.float64) ** 2)) for a in actions]
    # direction * v - ctrl: the forward terms cancel in the sum
    assert np.allclose(np.add(rew_f, rew_b), 2 * np.array(ctrl), atol=1e-5)
    assert not np.allclose(rew_f, rew_b)


def test_ant_dir_reward_oracle(dists: dict[str, TaskDistribution]) -> None:
    dist = dists["ant-dir"]
    env = dist.make_env("ant-dir")
    task = dist.tasks("test")[0]
    angle = float(task.param("angle"))
    dist.set_task(env, task)
    env.reset(seed=0)
    for a in _actions(dist, 5):
        _, reward, _, _, info = env.step(a)
        along = math.cos(angle) * info["x_velocity"] + math.sin(angle) * info["y_velocity"]
        expected = along + info["reward_survive"] + info["reward_ctrl"] + info["reward_contact"]
        assert reward == pytest.approx(expected, abs=1e-9) and info["reward_forward"] == pytest.approx(along)
        assert info["reward_ctrl"] == pytest.approx(-0.5 * float(np.sum(a.astype(np.float64) ** 2)), abs=1e-5)
    env.close()
