"""RL² building blocks: GAE over trials (oracle), trial regrouping, BPTT chunks == full sequence, state resets."""

from __future__ import annotations

import pytest
import torch
from _helpers import one_row_step

from metarl.agents.rl2 import (
    RL2Policy,
    RL2PolicyConfig,
    as_chunks,
    chunk_starts_hidden,
    gae_over_trials,
    trials_from_trajectories,
)
from metarl.rollout.types import StepBatch, Trajectories
from metarl.tasks import Task


def test_gae_runs_across_episode_ends_inside_a_trial_and_stops_at_its_end() -> None:
    # One trial of two episodes: episode 1 is truncated after 2 steps, episode 2 terminates after 2 steps.
    # Neither end cuts the advantage; the trial end is terminal.  Worked out by hand with gamma=0.5, lam=0.5:
    r = [1.0, 2.0, 3.0, 4.0]
    v = [0.5, 1.0, 1.5, 2.0]
    g, lam = 0.5, 0.5
    d3 = r[3] - v[3]  # terminal: no bootstrap
    d2 = r[2] + g * v[3] - v[2]
    d1 = r[1] + g * v[2] - v[1]  # episode boundary after this step: still bootstraps into the next episode
    d0 = r[0] + g * v[1] - v[0]
    a3 = d3
    a2 = d2 + g * lam * a3
    a1 = d1 + g * lam * a2
    a0 = d0 + g * lam * a1
    rewards = torch.tensor([*r, 0.0]).unsqueeze(1)  # [L=5, T=1] with one padding step
    values = torch.tensor([*v, 9.0]).unsqueeze(1)  # junk value at padding must not leak in
    mask = torch.tensor([True] * 4 + [False]).unsqueeze(1)
    adv, ret = gae_over_trials(rewards, values, mask, gamma=g, lam=lam)
    torch.testing.assert_close(adv[:, 0], torch.tensor([a0, a1, a2, a3, 0.0]))
    torch.testing.assert_close(ret[:, 0], torch.tensor([a0 + v[0], a1 + v[1], a2 + v[2], a3 + v[3], 0.0]))


def _trajectories(n: int, e: int, h: int, k: int, lengths: list[list[int]]) -> Trajectories:
    obs_dim, act_dim = 3, 2
    valid = torch.zeros(n, e, h, dtype=torch.bool)
    terminated = torch.zeros(n, e, h, dtype=torch.bool)
    truncated = torch.zeros(n, e, h, dtype=torch.bool)
    for i in range(n):
        for j in range(e):
            valid[i, j, : lengths[i][j]] = True
            (terminated if lengths[i][j] < h else truncated)[i, j, lengths[i][j] - 1] = True
    step_id = torch.arange(n * e * h, dtype=torch.float32).reshape(n, e, h)
    obs = step_id.unsqueeze(-1).repeat(1, 1, 1, obs_dim) * valid.unsqueeze(-1)
    actions = (step_id.unsqueeze(-1).repeat(1, 1, 1, act_dim) + 0.5) * valid.unsqueeze(-1)
    rewards = (step_id + 0.25) * valid
    tasks = [Task.make("d", "train", "f", i, {}) for i in range(n)]
    return Trajectories(
        tasks=tasks,
        obs=obs,
        actions=actions,
        rewards=rewards,
        terminated=terminated,
        truncated=truncated,
        success=torch.zeros(n, e, h, dtype=torch.bool),
        valid=valid,
        final_obs=torch.zeros(n, e, obs_dim),
        lengths=torch.tensor(lengths),
        episode_seeds=torch.zeros(n, e, dtype=torch.int64),
        extras={"log_prob": rewards.clone(), "value": rewards * 2},
        episodes_per_trial=k,
    )


def test_trials_are_compacted_in_episode_order_with_previous_step_inputs() -> None:
    traj = _trajectories(n=2, e=4, h=5, k=2, lengths=[[5, 3, 2, 5], [1, 5, 4, 4]])
    batch = trials_from_trajectories(traj)
    assert batch.obs.shape == (8, 4, 3)  # L = longest trial (5 + 3 steps), T = 2 tasks * 2 trials
    assert batch.lengths.tolist() == [8, 7, 6, 8]
    # trial 0 = task 0 episodes 0 and 1: steps 0..4 of episode 0 then 0..2 of episode 1 (ids 5..7)
    assert batch.obs[:8, 0, 0].tolist() == [0, 1, 2, 3, 4, 5, 6, 7]
    assert batch.mask[:, 0].all() and batch.mask[:, 1].tolist() == [True] * 7 + [False]
    assert batch.obs[7:, 1].abs().sum() == 0  # padding is zero
    # trial 1 = task 0 episodes 2 and 3 (ids 10, 11 then 15..19)
    assert batch.obs[:7, 1, 0].tolist() == [10, 11, 15, 16, 17, 18, 19]
    # previous reward/action are zero at the start of every episode, and carry within one
    assert batch.prev_done[:, 0].tolist() == [False] * 5 + [True] + [False] * 2
    assert batch.prev_reward[5, 0] == 0 and batch.prev_reward[6, 0] == 5.25
    assert batch.prev_reward[1, 0] == 0.25
    torch.testing.assert_close(batch.value, batch.rewards * 2)


def test_bptt_chunks_reproduce_the_full_sequence_forward() -> None:
    torch.manual_seed(0)
    policy = RL2Policy(3, 2, RL2PolicyConfig(mlp_hidden=(16,), gru_hidden=8))
    length, trials, chunk = 23, 3, 5
    inputs = torch.randn(length, trials, 3 + 2 + 2)
    mean_full, _, value_full, _ = policy.forward_sequence(inputs, torch.zeros(trials, 8))
    h0 = chunk_starts_hidden(policy, inputs, chunk)  # [5, T, G]
    chunks = as_chunks(inputs, chunk)  # [C, 5*T, ...]
    mean_c, _, value_c, _ = policy.forward_sequence(chunks, h0.reshape(-1, 8))
    # undo the chunk layout: sequence j*T + t holds steps j*C .. j*C+C-1 of trial t
    mean_back = mean_c.reshape(chunk, -1, trials, 2).transpose(0, 1).reshape(-1, trials, 2)[:length]
    value_back = value_c.reshape(chunk, -1, trials).transpose(0, 1).reshape(-1, trials)[:length]
    torch.testing.assert_close(mean_back, mean_full, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(value_back, value_full, rtol=1e-5, atol=1e-6)


def _step(rows: int, slots: list[int], trial_start: list[bool]) -> StepBatch:
    return StepBatch(
        obs=torch.ones(rows, 3),
        prev_action=torch.zeros(rows, 2),
        prev_reward=torch.zeros(rows),
        prev_done=torch.zeros(rows, dtype=torch.bool),
        episode_start=torch.tensor(trial_start),
        trial_start=torch.tensor(trial_start),
        slot=torch.tensor(slots),
        task=torch.zeros(rows, dtype=torch.int64),
        noise=torch.zeros(rows, 2),
    )


def test_act_updates_only_given_slots_and_resets_exactly_at_trial_start() -> None:
    torch.manual_seed(0)
    policy = RL2Policy(3, 2, RL2PolicyConfig(mlp_hidden=(16,), gru_hidden=8))
    state = policy.initial_state(4)
    _, state, _ = policy.act(_step(2, [1, 3], [True, True]), state)
    assert state[0].abs().sum() == 0 and state[2].abs().sum() == 0
    assert state[1].abs().sum() > 0
    h1 = state[1].clone()
    # continuing slot 1 changes its state; restarting slot 3 gives the same state as its first step
    _, state2, _ = policy.act(_step(2, [1, 3], [False, True]), state)
    assert not torch.equal(state2[1], h1)
    torch.testing.assert_close(state2[3], state[3])
    # the act path (one GRU step per call) equals the sequence path
    inputs = policy.inputs(
        torch.ones(2, 1, 3), torch.zeros(2, 1, 2), torch.zeros(2, 1), torch.zeros(2, 1, dtype=torch.bool)
    )
    _, _, _, h_seq = policy.forward_sequence(inputs, torch.zeros(1, 8))
    torch.testing.assert_close(h_seq[0], state2[1])


@pytest.mark.parametrize("k", [0, 1, 2])
def test_meta_test_policy_starts_every_evaluation_episode_from_the_adapted_state(k: int) -> None:
    from metarl.agents.rl2 import AdaptedStatePolicy

    torch.manual_seed(0)
    policy = AdaptedStatePolicy(RL2Policy(3, 2, RL2PolicyConfig(mlp_hidden=(8,), gru_hidden=6)), k)
    state = policy.initial_state(3)
    g = torch.Generator().manual_seed(1)
    first_actions = []
    start_obs, noise = torch.randn(1, 3, generator=g), torch.randn(1, 2, generator=g)
    for episode in range(k + 3):  # k adaptation episodes, then 3 evaluation episodes of 3 steps
        for t in range(3):
            obs = start_obs if t == 0 else torch.randn(1, 3, generator=g)
            step = one_row_step(obs, trial_start=episode == 0 and t == 0, episode_start=t == 0, noise=noise, slot=1)
            action, state, _ = policy.act(step, state)
            if t == 0:
                first_actions.append(action)
    evals = first_actions[k:]
    # same first input and the same (adapted) hidden state: the same first action in every evaluation episode
    # (with k = 0 the first one is the trial's first step, whose input has no done flag)
    torch.testing.assert_close(evals[2], evals[1])
    if k > 0:
        torch.testing.assert_close(evals[1], evals[0])
    if k > 0:  # and that state is not the trial's initial one
        assert not torch.allclose(first_actions[0], evals[0])


def test_rl2_and_maml_share_one_gae_recursion() -> None:
    """RL²'s GAE over trials is the shared recursion along the time axis 0; MAML's along the last axis."""
    from metarl.agents.linear_baseline import gae

    g = torch.Generator().manual_seed(0)
    rewards, values = torch.randn(7, 3, generator=g), torch.randn(7, 3, generator=g)
    mask = torch.ones(7, 3, dtype=torch.bool)
    mask[5:, 1] = False
    adv, ret = gae_over_trials(rewards, values, mask, 0.9, 0.8)
    assert torch.equal(adv, gae(rewards.T, values.T, mask.T, 0.9, 0.8).T)
    assert torch.equal(adv[5:, 1], torch.zeros(2)) and torch.equal(ret[5:, 1], torch.zeros(2))
    # by hand at the last real step of the short trial: no bootstrap past its end
    assert torch.isclose(adv[4, 1], rewards[4, 1] - values[4, 1])
