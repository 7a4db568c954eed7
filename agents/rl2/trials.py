"""Trials: from the engine's [task, episode, time] batches to compact per-trial sequences, GAE and the linear
baseline along them, and the BPTT chunks the update trains on.

Shapes: ``N`` tasks, ``E`` episodes per task, ``H`` horizon, ``k`` episodes per trial, ``T`` trials
(``N * E / k``), ``L`` steps of the longest trial after removing padding, ``C`` BPTT chunk length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from metarl.agents.linear_baseline import baseline_features, discounted_returns, fit_linear_baseline, gae
from metarl.rollout.types import Trajectories

if TYPE_CHECKING:
    from metarl.agents.rl2.policy import RL2Policy


@dataclass
class TrialBatch:
    """Trials as time-major sequences with padding removed between episodes.

    Steps of one trial are contiguous (episode after episode); ``mask`` marks real steps
    (a trial shorter than ``L`` is padded at its end).
    """

    obs: torch.Tensor  # [L, T, O]
    actions: torch.Tensor  # [L, T, A]
    rewards: torch.Tensor  # [L, T]
    prev_action: torch.Tensor  # [L, T, A]
    prev_reward: torch.Tensor  # [L, T]
    prev_done: torch.Tensor  # [L, T] bool: the previous step ended an episode of this trial
    log_prob: torch.Tensor  # [L, T]
    value: torch.Tensor  # [L, T]
    mask: torch.Tensor  # [L, T] bool
    lengths: torch.Tensor  # [T]


def trials_from_trajectories(traj: Trajectories) -> TrialBatch:
    """Regroup ``traj`` ([N, E, H, ...] with ``k`` episodes per trial) into compact trial sequences."""
    n, e, h = traj.valid.shape
    k = traj.episodes_per_trial
    if e % k:
        raise ValueError(f"{e} episodes per task is not a multiple of {k} episodes per trial")
    t = n * (e // k)

    def per_trial(x: torch.Tensor) -> torch.Tensor:  # [N, E, H, ...] -> [T, k*H, ...]
        return x.reshape(t, k * h, *x.shape[3:])

    valid = per_trial(traj.valid)  # [T, k*H]
    lengths = valid.sum(1)
    max_len = int(lengths.max())
    # stable sort puts valid steps first, keeping their order
    order = torch.sort((~valid).to(torch.int8), dim=1, stable=True).indices[:, :max_len]  # [T, L]
    mask = torch.arange(max_len).unsqueeze(0) < lengths.unsqueeze(1)  # [T, L]

    def gather(x: torch.Tensor) -> torch.Tensor:  # [T, k*H, ...] -> [L, T, ...], zero where padded
        idx = order.reshape(t, max_len, *([1] * (x.dim() - 2))).expand(t, max_len, *x.shape[2:])
        out = torch.gather(x, 1, idx)
        out = out * mask.reshape(t, max_len, *([1] * (x.dim() - 2))).to(out.dtype)
        return out.transpose(0, 1).contiguous()

    obs = gather(per_trial(traj.obs))
    actions = gather(per_trial(traj.actions))
    rewards = gather(per_trial(traj.rewards))
    done = gather(per_trial((traj.terminated | traj.truncated).to(torch.float32))) > 0  # [L, T]
    prev_action = torch.cat([torch.zeros_like(actions[:1]), actions[:-1]], 0)
    prev_reward = torch.cat([torch.zeros_like(rewards[:1]), rewards[:-1]], 0)
    prev_done = torch.cat([torch.zeros_like(done[:1]), done[:-1]], 0)
    # the engine zeroes prev_action / prev_reward at each episode start (see StepBatch)
    prev_action = prev_action * (~prev_done).unsqueeze(-1).to(prev_action.dtype)
    prev_reward = prev_reward * (~prev_done).to(prev_reward.dtype)
    extras = {name: gather(per_trial(traj.extras[name])) for name in ("log_prob", "value")}
    return TrialBatch(
        obs=obs,
        actions=actions,
        rewards=rewards,
        prev_action=prev_action,
        prev_reward=prev_reward,
        prev_done=prev_done,
        log_prob=extras["log_prob"],
        value=extras["value"],
        mask=mask.T.contiguous(),
        lengths=lengths,
    )


def gae_over_trials(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE along each trial ([L, T] time-major, padded at the end where ``mask`` is False).

    Episode ends inside a trial (terminated or truncated) do not cut the advantage: the next
    episode continues the same meta-episode.  The end of the trial is terminal (no bootstrap).
    Returns ``(advantages, returns)``, zero at padding.
    """
    adv = gae(rewards, values, mask, gamma, lam, dim=0)
    return adv, (adv + values) * mask.to(rewards.dtype)


def discounted_trial_returns(rewards: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """Discounted returns along each trial ([L, T] time-major), across its episode boundaries; 0 at padding."""
    return discounted_returns(rewards.T, mask.T.to(rewards.dtype), gamma).T


def linear_trial_baseline(
    inputs: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, reg: float = 1e-5
) -> torch.Tensor:
    """metaworld-algorithms' RL² baseline: the linear feature baseline fitted per trial, the whole trial as one
    episode (``t`` counts steps from the trial's start), on the policy inputs.  inputs [L, T, D], returns/mask
    [L, T] → values [L, T].
    """
    valid = mask.T.unsqueeze(1)  # [T, 1, L]: each trial one group of one long episode
    feats = baseline_features(inputs.transpose(0, 1).unsqueeze(1).to(torch.float64), valid)
    return fit_linear_baseline(feats, returns.T.unsqueeze(1), valid.to(returns.dtype), reg).squeeze(1).T


# -- BPTT chunks ----------------------------------------------------------------------------------


def chunk_starts(length: int, chunk: int, overlap: int, tail: bool = True) -> list[int]:
    """Start steps of the sequential schedule's chunks over a trial of ``length`` steps.

    metaworld-algorithms' starts ``0, C-O, 2(C-O), ...`` while a whole chunk fits; with ``tail`` metarl adds one
    last chunk ending at ``length`` when those leave a tail untrained (for 5,000-step trials, C 250, O 50:
    24 chunks ending at 4,850, plus one at 4,750-5,000).
    """
    chunk = min(chunk, length)
    stride = chunk - min(overlap, chunk - 1)
    starts = list(range(0, length - chunk + 1, stride))
    if tail and starts[-1] + chunk < length:
        starts.append(length - chunk)
    return starts


def chunk_starts_hidden(policy: RL2Policy, inputs: torch.Tensor, chunk: int) -> torch.Tensor:
    """The memory's states at the start of each BPTT chunk, by one no-grad pass: [ceil(L / C), T, G] for the GRU
    (the states are stacked, so this schedule needs a tensor state)."""
    length, trials, _ = inputs.shape
    h = policy.memory.initial_state(trials, inputs.device)
    starts = []
    with torch.no_grad():
        for s in range(0, length, chunk):
            starts.append(h)
            _, _, _, h = policy.forward_sequence(inputs[s : s + chunk], h)
    return torch.stack(starts)


def as_chunks(x: torch.Tensor, chunk: int) -> torch.Tensor:
    """[L, T, ...] → [C, ceil(L/C) * T, ...]: chunk j of trial t becomes sequence j * T + t (zero-padded)."""
    length, trials = x.shape[:2]
    n_chunks = -(-length // chunk)
    pad = n_chunks * chunk - length
    if pad:
        x = torch.cat([x, x.new_zeros(pad, *x.shape[1:])], 0)
    x = x.reshape(n_chunks, chunk, trials, *x.shape[2:]).transpose(0, 1)
    return x.reshape(chunk, n_chunks * trials, *x.shape[3:])
