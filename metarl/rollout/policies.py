"""Simple reference policies that follow the engine's :class:`~metarl.rollout.Policy` contract (the random policy of
`metarl rollout`); they live beside the engine because they are written against its :class:`StepBatch`."""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import torch

from metarl.errors import UserError
from metarl.rollout.types import StepBatch


class RandomPolicy:
    """Uniform random actions over a finite Box, drawn from the engine's keyed noise streams.

    Maps the per-row standard-normal ``step.noise`` through the normal CDF to U(0, 1), so runs
    are reproducible and identical across backends and worker counts.  ``deterministic`` steps
    return the centre of the box.
    """

    def __init__(self, action_space: gym.spaces.Box, device: str | torch.device = "cpu") -> None:
        if not isinstance(action_space, gym.spaces.Box):
            raise TypeError(f"RandomPolicy needs a Box action space, got {type(action_space).__name__}")
        self.device = torch.device(device)
        self.low = torch.as_tensor(action_space.low, dtype=torch.float32, device=self.device)
        self.high = torch.as_tensor(action_space.high, dtype=torch.float32, device=self.device)
        if not (torch.isfinite(self.low).all() and torch.isfinite(self.high).all()):
            raise UserError("RandomPolicy needs finite action bounds")

    def initial_state(self, num_slots: int) -> None:
        return None

    def act(self, step: StepBatch, state: Any) -> tuple[torch.Tensor, Any, dict[str, torch.Tensor]]:
        if step.deterministic:
            u = torch.full_like(step.noise, 0.5)
        else:
            u = 0.5 * (1.0 + torch.erf(step.noise / math.sqrt(2.0)))
        return self.low + u * (self.high - self.low), state, {}
