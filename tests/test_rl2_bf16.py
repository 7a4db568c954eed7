"""CPU bfloat16 autocast for RL²'s update (issue: cheaper learner maths).  The tolerance: every parameter's
gradient of the PPO loss under autocast points the same way as float32's, cosine >= 0.99 (bfloat16 keeps 8
bits of mantissa, so per-element errors of about 0.4% that do not accumulate in one direction leave the
cosine near 1; a systematic error, e.g. a head or the GRU run in the wrong precision, drops it)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from metarl.agents.rl2 import (
    RL2Policy,
    RL2PolicyConfig,
    RL2PPOConfig,
    _network_precision,
    _ppo_losses,
    _PPOBatch,
    _update_sequential,
    chunk_starts,
)
from metarl.errors import UserError

OBS, ACT, STEPS, TRIALS = 39, 4, 250, 8  # Meta-World's observation and action sizes, one reference chunk


def _batch(g: torch.Generator) -> _PPOBatch:
    inputs = torch.randn(STEPS, TRIALS, OBS + ACT + 2, generator=g)
    return _PPOBatch(
        inputs=inputs,
        actions=torch.rand(STEPS, TRIALS, ACT, generator=g) * 2 - 1,
        old_log_prob=torch.randn(STEPS, TRIALS, generator=g) - 3,
        adv=torch.randn(STEPS, TRIALS, generator=g),
        ret=torch.randn(STEPS, TRIALS, generator=g),
        mask=torch.ones(STEPS, TRIALS, dtype=torch.bool),
    )


def _grads(policy: RL2Policy, config: RL2PPOConfig, b: _PPOBatch) -> dict[str, torch.Tensor]:
    policy.zero_grad(set_to_none=True)
    with _network_precision(policy, config):
        mean, log_std, value, _ = policy.forward_sequence(b.inputs, torch.zeros(TRIALS, policy.config.gru_hidden))
    loss, _ = _ppo_losses(config, mean.float(), log_std.float(), value.float(), b)
    loss.backward()
    return {k: p.grad.detach().clone() for k, p in policy.named_parameters() if p.grad is not None}


def test_bf16_gradients_agree_with_float32_per_parameter() -> None:
    torch.manual_seed(0)
    policy = RL2Policy(OBS, ACT, RL2PolicyConfig())  # the Meta-World network: MLP 2x256, GRU 256, tanh heads
    b = _batch(torch.Generator().manual_seed(1))
    f32 = _grads(policy, RL2PPOConfig(), b)
    bf16 = _grads(policy, dataclasses.replace(RL2PPOConfig(), autocast_bf16=True), b)
    assert f32.keys() == bf16.keys() and len(f32) >= 10
    for name, g in f32.items():
        assert bf16[name].dtype == torch.float32 and torch.isfinite(bf16[name]).all(), name
        assert not torch.equal(bf16[name], g), name  # it really ran in bfloat16
        cosine = torch.nn.functional.cosine_similarity(bf16[name].flatten(), g.flatten(), dim=0)
        assert cosine >= 0.99, (name, float(cosine))


def test_bf16_is_off_by_default_and_the_flag_is_checked() -> None:
    assert RL2PPOConfig().autocast_bf16 is False
    policy = RL2Policy(OBS, ACT, RL2PolicyConfig())
    with _network_precision(policy, RL2PPOConfig()):
        assert not torch.is_autocast_enabled("cpu")
    with _network_precision(policy, RL2PPOConfig(autocast_bf16=True)):
        assert torch.is_autocast_enabled("cpu")
    with pytest.raises(UserError, match="autocast_bf16 must be true or false, got 'yes'"):
        RL2PPOConfig(autocast_bf16="yes")  # type: ignore[arg-type]


def test_ppo_update_under_bf16_takes_the_scheduled_steps() -> None:
    """The whole update under autocast: finite losses, the configured number of Adam steps, float32 weights."""
    torch.manual_seed(0)
    policy = RL2Policy(OBS, ACT, RL2PolicyConfig(mlp_hidden=(32,), gru_hidden=32))
    config = RL2PPOConfig(autocast_bf16=True, epochs=2, bptt_chunk=50, bptt_overlap=10)
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-3)
    b = _batch(torch.Generator().manual_seed(2))
    before = [p.detach().clone() for p in policy.parameters()]
    stats = _update_sequential(policy, optimizer, b, config)
    starts = chunk_starts(STEPS, 50, 10)
    assert len(stats["policy_loss"]) == 2 * len(starts)
    assert all(math.isfinite(v) for vs in stats.values() for v in vs)
    assert all(p.dtype == torch.float32 for p in policy.parameters())
    assert any(not torch.equal(p, q) for p, q in zip(policy.parameters(), before, strict=True))
