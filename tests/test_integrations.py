"""The gymnasium VectorEnv and SB3 VecEnv adapters over metarl's workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

from metarl.envs import make_distribution
from metarl.integrations.gymnasium import TaskVectorEnv
from metarl.integrations.sb3 import TaskVecEnv
from metarl.testing import CountingDistribution


def counting() -> CountingDistribution:
    return CountingDistribution(num_families=2, tasks_per_family=4, horizon=5, lengths=(0, 3))


@pytest.mark.parametrize("backend", ["inline", "process"])
def test_gymnasium_vector_env_same_step_autoreset(backend: str) -> None:
    dist = counting()
    env = TaskVectorEnv(dist, split="train", envs_per_family=2, num_workers=2, backend=backend)
    try:
        assert env.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
        assert env.num_envs == 4 and env.observation_space.shape == (4, 3)
        obs, info = env.reset(seed=3)
        assert obs.dtype == np.float32 and obs.shape == (4, 3) and (obs[:, 0] == 0).all()
        by_id = {t.id: t for t in dist.tasks("train")}
        for i in range(4):  # each env runs a task of its own family
            assert by_id[info["task_id"][i]].family == info["family"][i]
            assert obs[i, 1] == by_id[info["task_id"][i]].param("value")
        seen: set[str] = set(info["task_id"])
        ends = 0
        for _ in range(30):
            prev_ids = list(info["task_id"])
            prev_t = obs[:, 0].copy()
            actions = np.full((4, 2), 0.25, np.float32)
            obs, reward, terminated, truncated, info = env.step(actions)
            values = np.array([by_id[i].param("value") for i in prev_ids])
            np.testing.assert_allclose(reward, values + prev_t + 0.25)  # the step's reward is the old episode's
            ended = terminated | truncated
            for i in np.flatnonzero(ended):
                ends += 1
                assert info["_final_obs"][i] and info["final_info"]["task_id"][i] == prev_ids[i]
                assert info["final_obs"][i][0] == prev_t[i] + 1  # last observation of the ended episode
                assert obs[i, 0] == 0  # first observation of the next episode, on its new task
                new = by_id[info["task_id"][i]]
                assert new.family == info["family"][i] and obs[i, 1] == new.param("value")
                # length 3 tasks terminate, the others are truncated at the horizon (5)
                assert terminated[i] == (by_id[prev_ids[i]].param("length") == 3)
                assert truncated[i] == (not terminated[i]) and prev_t[i] + 1 == (3 if terminated[i] else 5)
            for i in np.flatnonzero(~ended):
                assert obs[i, 0] == prev_t[i] + 1 and info["task_id"][i] == prev_ids[i]
            seen.update(info["task_id"])
        assert ends >= 20 and len(seen) >= 6  # tasks are resampled per episode
        with pytest.raises(ValueError, match=r"non-finite actions for env\(s\) \[2\]"):
            bad = np.zeros((4, 2), np.float32)
            bad[2, 1] = np.nan
            env.step(bad)
        with pytest.raises(ValueError, match=r"actions must have shape \(4, 2\)"):
            env.step(np.zeros((4, 3), np.float32))
    finally:
        env.close()
    assert env.core.closed


@pytest.mark.parametrize("name", ["counting", "ML1-reach-v3"])
def test_gymnasium_vector_env_is_reproducible_and_the_seed_matters(name: str) -> None:
    def run(seed: int) -> list[np.ndarray]:
        dist = counting() if name == "counting" else make_distribution(name, seed=0)
        env = TaskVectorEnv(dist, envs_per_family=1, num_workers=1, backend="inline")
        out = [env.reset(seed=seed)[0]]
        shape = (env.num_envs, env.single_action_space.shape[0])
        for k in range(12):
            out.append(env.step(np.full(shape, 0.1 * (k % 3), np.float32))[0])
        env.close()
        return out

    a, b, c = run(11), run(11), run(12)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))  # another seed, another run


def test_sb3_vec_env_contract() -> None:
    venv = TaskVecEnv(counting(), envs_per_family=1, num_workers=1)
    try:
        venv.seed(5)
        obs = venv.reset()
        assert obs.shape == (2, 3) and venv.reset_infos[0]["task_id"].startswith("counting/train/count-0/")
        assert venv.get_attr("render_mode") == [None, None] and venv.env_is_wrapped(object) == [False, False]  # type: ignore[arg-type]
        with pytest.raises(AttributeError, match="envs live in worker processes"):
            venv.get_attr("sim")
        done_seen = 0
        for _ in range(12):
            obs, rewards, dones, infos = venv.step(np.zeros((2, 2), np.float32))
            assert rewards.dtype == np.float32 and dones.dtype == bool
            for i in np.flatnonzero(dones):
                done_seen += 1
                info = infos[i]
                length = info["episode"]["l"]
                assert info["terminal_observation"][0] == length and obs[i, 0] == 0
                assert info["TimeLimit.truncated"] == (length == 5)
                assert info["episode"]["r"] == pytest.approx(
                    sum(info["terminal_observation"][1] + t for t in range(length))
                )
        assert done_seen >= 3
    finally:
        venv.close()


def test_sb3_ppo_trains_on_point_nav() -> None:
    from stable_baselines3 import PPO

    venv = TaskVecEnv(make_distribution("point-nav"), envs_per_family=4, num_workers=2, seed=0)
    try:
        model = PPO("MlpPolicy", venv, n_steps=64, batch_size=64, n_epochs=2, seed=0, device="cpu")
        before = [p.detach().clone() for p in model.policy.parameters()]
        model.learn(total_timesteps=512)
        after = list(model.policy.parameters())
        assert all(torch.isfinite(p).all() for p in after)
        assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
        assert model.num_timesteps >= 512
        assert len(model.ep_info_buffer) > 0 and np.isfinite([e["r"] for e in model.ep_info_buffer]).all()
    finally:
        venv.close()
