"""Diagonal-Gaussian helpers and action-box scaling shared by the agents."""

from __future__ import annotations

import math
from typing import Any

import torch

from metarl.errors import UserError


def gaussian_log_prob(action: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """Log-density of a diagonal Gaussian, summed over the last axis."""
    z = (action - mean) * torch.exp(-log_std)
    return (-0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


def gaussian_entropy(log_std: torch.Tensor) -> torch.Tensor:
    """Entropy of a diagonal Gaussian, summed over the last axis."""
    return (log_std + 0.5 * (1.0 + math.log(2 * math.pi))).sum(-1)


def gaussian_kl(
    mean0: torch.Tensor, log_std0: torch.Tensor, mean1: torch.Tensor, log_std1: torch.Tensor
) -> torch.Tensor:
    """KL(N0 || N1) of diagonal Gaussians, summed over the last axis."""
    var0, var1 = torch.exp(2 * log_std0), torch.exp(2 * log_std1)
    return (log_std1 - log_std0 + (var0 + (mean0 - mean1).pow(2)) / (2 * var1) - 0.5).sum(-1)


def action_affine(action_dim: int, action_low: Any, action_high: Any, agent: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(bias, scale)`` [A] mapping the policy's [-1, 1] units to the env's box: ``action = bias + scale * a``.

    ``None`` bounds mean [-1, 1].  Infinite or empty bounds are refused, naming the agent.
    """
    low = torch.as_tensor(-1.0 if action_low is None else action_low, dtype=torch.float32).expand(action_dim)
    high = torch.as_tensor(1.0 if action_high is None else action_high, dtype=torch.float32).expand(action_dim)
    if not (torch.isfinite(low).all() and torch.isfinite(high).all() and (high > low).all()):
        raise UserError(
            f"{agent} needs finite action bounds with high > low, got low={low.tolist()} high={high.tolist()}"
        )
    return ((high + low) / 2).clone(), ((high - low) / 2).clone()
