"""PPO over whole trials with truncated BPTT: the config, the losses, the KL early stop, and the two update orders
(sequential chunks in time order, or shuffled minibatches of chunks).

Shapes: ``L`` steps of the longest trial, ``T`` trials, ``C`` BPTT chunk length, ``G`` the memory's width.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal, get_args

import torch
from torch import nn

from metarl.agents.distributions import gaussian_entropy, gaussian_log_prob
from metarl.agents.rl2.policy import RL2Policy
from metarl.agents.rl2.removed import LAST_COMMIT_WITH_EXPERIMENTS
from metarl.agents.rl2.trials import (
    as_chunks,
    chunk_starts,
    chunk_starts_hidden,
    discounted_trial_returns,
    gae_over_trials,
    linear_trial_baseline,
    trials_from_trajectories,
)
from metarl.config import RemovedField, removed_fields
from metarl.errors import UserError, check_int_field
from metarl.rollout.types import Trajectories
from metarl.stops import stop_point

Baseline = Literal["linear", "value"]
ChunkOrder = Literal["sequential", "shuffled"]
BASELINES: tuple[str, ...] = get_args(Baseline)
CHUNK_ORDERS: tuple[str, ...] = get_args(ChunkOrder)


def _optional_number_in(value: object, low: float, high: float) -> bool:
    """None, or a finite number (not a bool) in [low, high]."""
    if value is None:
        return True
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return number and math.isfinite(value) and low <= value <= high  # type: ignore[arg-type,operator]


@removed_fields(
    lr_end=RemovedField(default=None, commit=LAST_COMMIT_WITH_EXPERIMENTS),
    lr_anneal_steps=RemovedField(default=5_000_000, commit=LAST_COMMIT_WITH_EXPERIMENTS),
    target_kl_log_std=RemovedField(default=None, commit=LAST_COMMIT_WITH_EXPERIMENTS),
    success_bonus=RemovedField(default=0.0, commit=LAST_COMMIT_WITH_EXPERIMENTS),
    exploit_clip_eps=RemovedField(default=None, commit=LAST_COMMIT_WITH_EXPERIMENTS),
    success_reward=RemovedField(default=0.0, commit=LAST_COMMIT_WITH_EXPERIMENTS),
)
@dataclass(frozen=True)
class RL2PPOConfig:
    """PPO hyperparameters.  Defaults follow metaworld-algorithms' RL²-PPO on Meta-World (its ML1/ML10/ML45
    example configs and ``rl/algorithms/rl2.py``)."""

    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 0.95
    """GAE λ, applied along the whole trial."""
    clip_eps: float = 0.2
    """PPO ratio clip."""
    epochs: int = 10
    """Passes over the batch per update."""
    minibatches: int = 4
    """With chunk_order shuffled: minibatches of whole BPTT sequences per epoch."""
    lr: float = 5e-4
    """Adam learning rate."""
    max_grad_norm: float = 1.0
    """Gradient-norm clip."""
    ent_coef: float = 5e-3
    """Entropy bonus weight."""
    vf_coef: float = 0.5
    """Value-loss weight (baseline value only)."""
    bptt_chunk: int = 250
    """Truncated-BPTT chunk length in steps."""
    bptt_overlap: int = 50
    """With chunk_order sequential: steps shared by consecutive chunks (chunks start every bptt_chunk -
    bptt_overlap steps; metaworld-algorithms: 50)."""
    train_tail: bool = True
    """With chunk_order sequential: add one last chunk ending at the trial's end when the regular starts leave a
    tail without gradient (5,000-step trials, chunk 250, overlap 50: 25 chunks, the last over steps 4,750-5,000);
    false: metaworld-algorithms' 24, whose last ends at 4,850."""
    chunk_order: ChunkOrder = "sequential"
    """sequential: each Adam step takes the next chunk of every trial, in time order, starting from the
    memory state the current weights reach (metaworld-algorithms); shuffled: chunks in random minibatches,
    starting from memory states computed once before the update."""
    baseline: Baseline = "linear"
    """linear: advantages from a linear feature baseline fitted per trial, no value loss (metaworld-algorithms);
    value: the policy's value head, trained with the policy (vf_coef)."""
    normalize_advantages: bool = False
    """Standardise advantages over the batch (off in metaworld-algorithms' Meta-World configs)."""
    target_kl: float | None = None
    """Stop the update early once an Adam step's approx. KL to the behaviour policy exceeds 1.5 x this
    (metaworld-algorithms' target_kl; off by default, as in its configs)."""
    adam_eps: float = 1e-5
    """Adam's ε (metaworld-algorithms, through optax: 1e-8)."""
    autocast_bf16: bool = False
    """Run the update's network passes under bfloat16 autocast (the losses stay float32).  Gradients agree with
    float32 to a cosine of 0.99 per parameter (tests/test_rl2_bf16.py); opt-in because its speed depends on the
    CPU's bfloat16 support."""

    def __post_init__(self) -> None:
        for name in ("gamma", "gae_lambda"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise UserError(f"{name} must be in [0, 1], got {value!r}")
        for name in ("clip_eps", "lr", "max_grad_norm"):
            if not getattr(self, name) > 0:
                raise UserError(f"{name} must be positive, got {getattr(self, name)!r}")
        for name in ("epochs", "minibatches", "bptt_chunk"):
            check_int_field(self, name)
        for name in ("ent_coef", "vf_coef"):
            if getattr(self, name) < 0:
                raise UserError(f"{name} must be non-negative, got {getattr(self, name)!r}")
        check_int_field(self, "bptt_overlap", 0)
        if self.bptt_overlap >= self.bptt_chunk:
            raise UserError(
                f"bptt_overlap ({self.bptt_overlap}) must be smaller than bptt_chunk ({self.bptt_chunk}); "
                "give a smaller --bptt-overlap with a shorter --bptt-chunk"
            )
        if self.chunk_order not in CHUNK_ORDERS:
            raise UserError(f"chunk_order must be one of {list(CHUNK_ORDERS)}, got {self.chunk_order!r}")
        if self.baseline not in BASELINES:
            raise UserError(f"baseline must be one of {list(BASELINES)}, got {self.baseline!r}")
        for name in ("normalize_advantages", "autocast_bf16", "train_tail"):
            if not isinstance(getattr(self, name), bool):
                raise UserError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.target_kl is not None and not (isinstance(self.target_kl, int | float) and self.target_kl > 0):
            raise UserError(f"target_kl must be a positive number or None, got {self.target_kl!r}")
        if self.adam_eps is None or not _optional_number_in(self.adam_eps, 1e-12, 1.0):
            raise UserError(f"adam_eps must be a number in [1e-12, 1], got {self.adam_eps!r}")


def optimizer_steps_per_update(config: RL2PPOConfig, trial_length: int, num_chunk_sequences: int) -> int:
    """Adam steps one :func:`ppo_update` takes: epochs x chunks (sequential) or epochs x minibatches (shuffled)."""
    if config.chunk_order == "sequential":
        return config.epochs * len(
            chunk_starts(trial_length, config.bptt_chunk, config.bptt_overlap, config.train_tail)
        )
    return config.epochs * min(config.minibatches, num_chunk_sequences)


@dataclass
class _PPOBatch:
    """What both chunk schedules read, time-major [L, T, ...] on the policy's device."""

    inputs: torch.Tensor
    actions: torch.Tensor  # normalised units
    old_log_prob: torch.Tensor
    adv: torch.Tensor
    ret: torch.Tensor  # value targets (value baseline only)
    mask: torch.Tensor

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> _PPOBatch:
        """The same batch with ``fn`` applied to every field."""
        return _PPOBatch(**{f.name: fn(getattr(self, f.name)) for f in fields(self)})

    def __getitem__(self, index: Any) -> _PPOBatch:
        """Every field indexed alike (a time slice, a minibatch of sequences)."""
        return self.map(lambda x: x[index])


def _ppo_losses(
    config: RL2PPOConfig, mean: torch.Tensor, log_std: torch.Tensor, value: torch.Tensor, part: _PPOBatch
) -> tuple[torch.Tensor, dict[str, float]]:
    """The clipped PPO loss (plus the value loss with the learned baseline) as masked means over real steps."""
    m = part.mask.to(torch.float32)
    denom = m.sum().clamp_min(1.0)
    log_prob = gaussian_log_prob(part.actions, mean, log_std)
    log_ratio = log_prob - part.old_log_prob
    ratio = log_ratio.exp()
    adv = part.adv
    clip = config.clip_eps
    pg = -torch.min(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv)
    policy_loss = (pg * m).sum() / denom
    entropy = (gaussian_entropy(log_std) * m).sum() / denom
    loss = policy_loss - config.ent_coef * entropy
    stats = {"policy_loss": float(policy_loss.detach()), "entropy": float(entropy.detach())}
    if config.baseline == "value":
        value_loss = 0.5 * ((value - part.ret).pow(2) * m).sum() / denom
        loss = loss + config.vf_coef * value_loss
        stats["value_loss"] = float(value_loss.detach())
    with torch.no_grad():
        kl = ((ratio - 1) - log_ratio) * m
        stats["approx_kl"] = float(kl.sum() / denom)
        clipped = ((ratio - 1).abs() > clip).float() * m
        stats["clip_frac"] = float(clipped.sum() / denom)
    return loss, stats


def _kl_stop(stats: Mapping[str, list[float]], config: RL2PPOConfig) -> bool:
    """True once the last Adam step's approx. KL passed 1.5 x target_kl (metaworld-algorithms' rule)."""
    kls = stats.get("approx_kl")
    return config.target_kl is not None and bool(kls) and kls[-1] > 1.5 * config.target_kl  # type: ignore[index]


def _network_precision(policy: RL2Policy, config: RL2PPOConfig) -> torch.autocast:
    """bfloat16 autocast for the update's network passes when ``config.autocast_bf16``, else a no-op."""
    return torch.autocast(device_type=policy.device.type, dtype=torch.bfloat16, enabled=config.autocast_bf16)


def _float32(*xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return tuple(x.float() for x in xs)


def _float32_state(state: Any) -> Any:
    """A memory state with its floating-point tensors in float32 (a bfloat16 pass hands over bfloat16 states): the
    tensor itself for the GRU, each tensor of a dict, tuple or list for other memories."""
    if isinstance(state, torch.Tensor):
        return state.float() if state.is_floating_point() else state
    if isinstance(state, dict):
        return {k: _float32_state(v) for k, v in state.items()}
    if isinstance(state, tuple | list):
        return type(state)(_float32_state(v) for v in state)
    return state


def _train_step(
    policy: RL2Policy,
    optimizer: torch.optim.Optimizer,
    config: RL2PPOConfig,
    heads: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    part: _PPOBatch,
    stats: dict[str, list[float]],
) -> None:
    """One Adam step on the PPO loss of ``part`` given the policy's (mean, log_std, value) there; records its stats."""
    loss, st = _ppo_losses(config, *heads, part)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    st["grad_norm"] = float(nn.utils.clip_grad_norm_(policy.parameters(), config.max_grad_norm))
    optimizer.step()
    for k, v in st.items():
        stats.setdefault(k, []).append(v)
    if len(stats["policy_loss"]) == 1:  # a test may stop the run here, partway through the update
        stop_point("update")


def _update_sequential(
    policy: RL2Policy, optimizer: torch.optim.Optimizer, b: _PPOBatch, config: RL2PPOConfig
) -> dict[str, list[float]]:
    """metaworld-algorithms' schedule: per epoch, the chunks of all trials in time order, one Adam step each;
    each chunk starts from the memory state the previous chunk's forward pass (before its step) reached."""
    length, trials = b.mask.shape
    chunk = min(config.bptt_chunk, length)
    starts = chunk_starts(length, config.bptt_chunk, config.bptt_overlap, config.train_tail)
    memory = policy.memory
    stats: dict[str, list[float]] = {}
    for _ in range(config.epochs):
        h = memory.initial_state(trials, b.inputs.device)  # the state before step starts[j]
        for j, s in enumerate(starts):
            if _kl_stop(stats, config):
                return stats
            part = b[s : s + chunk]
            with _network_precision(policy, config):
                mean, log_std, value, trace = policy.forward_hidden(part.inputs, h)
            mean, log_std, value = _float32(mean, log_std, value)
            if j + 1 < len(starts):  # the state after step starts[j + 1] - 1, carried without gradient
                h = _float32_state(memory.handover(trace, starts[j + 1] - s - 1))
            _train_step(policy, optimizer, config, (mean, log_std, value), part, stats)
    return stats


def _update_shuffled(
    policy: RL2Policy,
    optimizer: torch.optim.Optimizer,
    b: _PPOBatch,
    config: RL2PPOConfig,
    generator: torch.Generator | None,
) -> dict[str, list[float]]:
    """Chunks of every trial, memory states at their starts computed once, in random minibatches."""
    chunk = min(config.bptt_chunk, b.inputs.shape[0])
    with _network_precision(policy, config):
        h0 = chunk_starts_hidden(policy, b.inputs, chunk).float().reshape(-1, policy.memory.width)  # [M, G]
    seq = b.map(lambda x: as_chunks(x, chunk))
    keep = seq.mask.any(0)  # drop all-padding chunks
    seq, h0 = seq[:, keep], h0[keep]
    num_seq = int(keep.sum())
    stats: dict[str, list[float]] = {}
    for _ in range(config.epochs):
        perm = torch.randperm(num_seq, generator=generator).to(b.inputs.device)
        for idx in perm.chunk(min(config.minibatches, num_seq)):
            if _kl_stop(stats, config):
                return stats
            with _network_precision(policy, config):
                part = seq[:, idx]
                mean, log_std, value, _ = policy.forward_sequence(part.inputs, h0[idx])
            mean, log_std, value = _float32(mean, log_std, value)
            _train_step(policy, optimizer, config, (mean, log_std, value), part, stats)
    return stats


def ppo_update(
    policy: RL2Policy,
    optimizer: torch.optim.Optimizer,
    traj: Trajectories,
    config: RL2PPOConfig,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """One PPO update over whole trials with truncated BPTT; returns loss metrics (means over Adam steps),
    ``optimizer_steps`` and the baseline's ``explained_variance``."""
    device = policy.device
    batch = trials_from_trajectories(traj)
    mask = batch.mask
    inputs = policy.inputs(batch.obs, batch.prev_action, batch.prev_reward, batch.prev_done)
    rewards = batch.rewards
    if config.baseline == "linear":
        values = linear_trial_baseline(inputs, discounted_trial_returns(rewards, mask, config.gamma), mask)
    else:
        values = batch.value
    adv, ret = gae_over_trials(rewards, values, mask, config.gamma, config.gae_lambda)
    sel_ret, sel_val = ret[mask], values[mask]
    var_ret = float(sel_ret.var()) if sel_ret.numel() > 1 else 0.0
    explained = 1.0 - float((sel_ret - sel_val).var()) / var_ret if var_ret > 0 else float("nan")
    if config.baseline == "value" and policy.config.normalize_value:
        policy.update_return_stats(ret[mask].to(device))
        ret = ((ret - policy.ret_mean.cpu()) / policy.ret_std.cpu()) * mask
    if config.normalize_advantages:
        sel = adv[mask]
        adv = (adv - sel.mean()) / (sel.std() + 1e-8) * mask
    b = _PPOBatch(
        inputs=inputs.to(device),
        actions=policy.normalize_action(batch.actions.to(device)),
        old_log_prob=batch.log_prob.to(device),
        adv=adv.to(device),
        ret=ret.to(device),
        mask=mask.to(device),
    )
    if config.chunk_order == "sequential":
        stats = _update_sequential(policy, optimizer, b, config)
    else:
        stats = _update_shuffled(policy, optimizer, b, config, generator)
    out = {k: sum(v) / len(v) for k, v in stats.items()}
    out["optimizer_steps"] = float(len(stats.get("policy_loss", [])))
    # before the first Adam step: how far the policy already is from the one that sampled the batch
    # (about 0 when synchronous; the lag's KL with --overlap)
    out["behaviour_kl"] = stats["approx_kl"][0] if stats.get("approx_kl") else float("nan")
    out["explained_variance"] = explained
    out["advantage_std"] = float(adv[mask].std()) if int(mask.sum()) > 1 else 0.0
    return out
