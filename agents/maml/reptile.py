"""Reptile (Nichol et al. 2018) for RL: several inner policy-gradient steps per task, then
θ ← θ + ε (mean_i θ'_i − θ).  No post-adaptation episodes and no gradient through the inner loop."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from metarl.agents.maml.inner import InnerLoopConfig, TaskBatch, check_positive, unused_fields
from metarl.agents.maml.policy import GaussianMLPPolicy, Params
from metarl.config import removed_fields
from metarl.errors import UserError

# the one MAMLConfig's TRPO and PPO fields, and first_order (Reptile never differentiates through the inner loop)
_UNUSED = unused_fields(
    first_order=True, max_kl=0.01, cg_iters=10, cg_damping=1e-5, ls_backtrack=0.8, ls_steps=15, hvp_subsample=1.0,
    ppo_clip=0.3, ppo_epochs=5,
)  # fmt: skip


@removed_fields(**_UNUSED)
@dataclass(frozen=True)
class ReptileConfig(InnerLoopConfig):
    """Reptile (Nichol et al. 2018): several inner policy-gradient steps, then θ ← θ + ε (mean θ' − θ)."""

    outer: ClassVar[str] = "reptile"
    inner_steps: int = 3
    """Inner policy-gradient steps, each on fresh episodes collected with the current adapted weights."""
    outer_lr: float = 0.5
    """Outer step size: the interpolation ε of θ ← θ + ε (mean θ' − θ)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "outer_lr")
        if self.outer_lr > 1.0:
            raise UserError(
                f"reptile's outer_lr interpolates toward the adapted weights; use (0, 1], got {self.outer_lr}"
            )

    def outer_loop(self, policy: GaussianMLPPolicy, seed: int) -> ReptileOuterLoop:
        return ReptileOuterLoop(policy, self.outer_lr)


def reptile_outer_step(policy: GaussianMLPPolicy, adapted: Params, outer_lr: float) -> dict[str, float]:
    """θ ← θ + ε (mean_i θ'_i − θ)."""
    moved = 0.0
    with torch.no_grad():
        for name, p in policy.named_parameters():
            delta = adapted[name].mean(0) - p
            p.add_(outer_lr * delta)
            moved += float(delta.pow(2).sum())
    return {"reptile/mean_delta_norm": math.sqrt(moved)}


class ReptileOuterLoop:
    """θ moves toward the weights after the inner steps; nothing is sampled with them."""

    samples_post_adaptation = False

    def __init__(self, policy: GaussianMLPPolicy, outer_lr: float) -> None:
        self.policy, self.outer_lr = policy, outer_lr

    def step(
        self, pre: Sequence[TaskBatch], post: TaskBatch | None, adapted: Params, env_steps: int
    ) -> dict[str, float]:
        return reptile_outer_step(self.policy, adapted, self.outer_lr)

    def state_dict(self) -> dict[str, Any]:
        return {}  # the step keeps nothing between iterations

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass
