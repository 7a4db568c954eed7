"""RL²'s ``ppo.success_bonus`` and ``ppo.success_reward``: the update learns from the env's reward plus a bonus at
each episode's first successful step, or a reward at every successful step; the policy's reward input and the
default (neither) update are untouched."""

from __future__ import annotations

import pytest
import torch

from metarl.agents.rl2 import (
    RL2Policy,
    RL2PolicyConfig,
    RL2PPOConfig,
    learning_rewards,
    ppo_update,
    trials_from_trajectories,
)
from metarl.errors import UserError
from metarl.rollout.types import Trajectories
from metarl.tasks import Task


def _trajectories(success_steps: dict[tuple[int, int], list[int]], lengths: list[list[int]]) -> Trajectories:
    """1 task, episodes of up to 4 steps, 2 episodes per trial; ``success_steps[(task, episode)]`` lists the
    steps whose info["success"] is true."""
    n, e, h, k = 1, 4, 4, 2
    valid = torch.zeros(n, e, h, dtype=torch.bool)
    truncated = torch.zeros(n, e, h, dtype=torch.bool)
    success = torch.zeros(n, e, h, dtype=torch.bool)
    for j in range(e):
        valid[0, j, : lengths[0][j]] = True
        truncated[0, j, lengths[0][j] - 1] = True
        for s in success_steps.get((0, j), []):
            success[0, j, s] = True
    g = torch.Generator().manual_seed(0)
    rewards = torch.rand(n, e, h, generator=g) * valid
    return Trajectories(
        tasks=[Task.make("d", "train", "f", 0, {})],
        obs=torch.randn(n, e, h, 3, generator=g) * valid.unsqueeze(-1),
        actions=torch.rand(n, e, h, 2, generator=g).mul(2).sub(1) * valid.unsqueeze(-1),
        rewards=rewards,
        terminated=torch.zeros(n, e, h, dtype=torch.bool),
        truncated=truncated,
        success=success,
        valid=valid,
        final_obs=torch.zeros(n, e, 3),
        lengths=torch.tensor(lengths),
        episode_seeds=torch.zeros(n, e, dtype=torch.int64),
        extras={"log_prob": torch.full((n, e, h), -2.0), "value": torch.zeros(n, e, h)},
        episodes_per_trial=k,
    )


def test_first_success_marks_only_the_first_successful_step_of_each_episode() -> None:
    # episode 0: success at steps 1 and 2 (the first is 1); episode 1: none; episode 2: success at its last step;
    # episode 3 is 2 steps long and its success flag at step 3 lies in padding, so it must not count.
    traj = _trajectories({(0, 0): [1, 2], (0, 2): [3], (0, 3): [3]}, lengths=[[4, 4, 4, 2]])
    batch = trials_from_trajectories(traj)
    assert batch.first_success is not None
    # trial 0 = episodes 0, 1 (8 steps); trial 1 = episodes 2, 3 (6 steps, then 2 padding steps)
    assert batch.first_success[:, 0].nonzero().flatten().tolist() == [1]
    assert batch.first_success[:, 1].nonzero().flatten().tolist() == [3]


def test_learning_rewards_add_the_bonus_only_at_first_successes() -> None:
    traj = _trajectories({(0, 0): [1, 2], (0, 2): [3]}, lengths=[[4, 4, 4, 4]])
    batch = trials_from_trajectories(traj)
    assert learning_rewards(batch, 0.0) is batch.rewards
    boosted = learning_rewards(batch, 7.5)
    diff = boosted - batch.rewards
    expected = torch.zeros_like(diff)
    expected[1, 0] = 7.5
    expected[3, 1] = 7.5
    torch.testing.assert_close(diff, expected)
    # the policy's reward input is the env's reward, bonus or not
    assert batch.prev_reward[2, 0] == batch.rewards[1, 0]


def test_success_reward_lands_on_every_successful_step_and_not_in_padding() -> None:
    # episode 3 is 2 steps long: its success flag at step 3 lies in padding and must earn nothing
    traj = _trajectories({(0, 0): [1, 2], (0, 2): [3], (0, 3): [1, 3]}, lengths=[[4, 4, 4, 2]])
    batch = trials_from_trajectories(traj)
    assert learning_rewards(batch, 0.0, 0.0) is batch.rewards
    diff = learning_rewards(batch, 0.0, 2.0) - batch.rewards
    expected = torch.zeros_like(diff)
    expected[1, 0] = expected[2, 0] = 2.0  # trial 0, episode 0, steps 1 and 2
    expected[3, 1] = expected[5, 1] = 2.0  # trial 1: episode 2's step 3, episode 3's step 1 (trial step 4 + 1)
    torch.testing.assert_close(diff, expected)
    # with the first-success bonus too, the two add up at first successes only
    both = learning_rewards(batch, 5.0, 2.0) - batch.rewards
    expected[1, 0] += 5.0
    expected[3, 1] += 5.0
    expected[5, 1] += 5.0
    torch.testing.assert_close(both, expected)


def _update(bonus: float | None, reward: float = 0.0) -> dict[str, float]:
    torch.manual_seed(0)
    policy = RL2Policy(3, 2, RL2PolicyConfig(mlp_hidden=(8,), gru_hidden=8))
    opt = torch.optim.Adam(policy.parameters(), lr=1e-3)
    # the value baseline: with 2 trials of 8 steps the linear one would fit any returns exactly
    common = {"epochs": 1, "bptt_chunk": 4, "bptt_overlap": 0, "baseline": "value"}
    ppo = (
        RL2PPOConfig(**common) if bonus is None else RL2PPOConfig(**common, success_bonus=bonus, success_reward=reward)
    )
    traj = _trajectories({(0, 0): [1, 2, 3], (0, 3): [0]}, lengths=[[4, 4, 4, 4]])
    out = ppo_update(policy, opt, traj, ppo)
    out["weight_sum"] = float(sum(p.detach().double().sum() for p in policy.parameters()))
    return out


def test_the_bonus_changes_the_update_and_zero_is_the_default() -> None:
    default, zero, bonus = _update(None), _update(0.0), _update(50.0)
    assert zero == pytest.approx(default, nan_ok=True, rel=0, abs=0)
    assert bonus["advantage_std"] > default["advantage_std"] + 1.0
    assert bonus["weight_sum"] != default["weight_sum"]


def test_the_success_reward_changes_the_update() -> None:
    default, reward = _update(None), _update(0.0, 50.0)
    assert reward["advantage_std"] > default["advantage_std"] + 1.0
    assert reward["weight_sum"] != default["weight_sum"]


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), "big", True, None, 2e6])
def test_success_bonus_rejects_bad_values(bad: object) -> None:
    with pytest.raises(UserError, match=r"success_bonus must be a number in \[0, 1e6\], got "):
        RL2PPOConfig(success_bonus=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), "big", True, None, 2e6])
def test_success_reward_rejects_bad_values(bad: object) -> None:
    with pytest.raises(UserError, match=r"success_reward must be a number in \[0, 1e6\], got "):
        RL2PPOConfig(success_reward=bad)  # type: ignore[arg-type]
