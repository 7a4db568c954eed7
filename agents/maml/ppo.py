"""MAML-PPO: MAML's inner step, then a clipped post-adaptation surrogate maximised with Adam instead of a
TRPO step.

Not ProMP (Rothfuss et al. 2019): the inner step is MAML's REINFORCE step, without ProMP's low-variance
curvature objective or its inner KL penalty."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from metarl.agents.distributions import gaussian_kl, gaussian_log_prob
from metarl.agents.maml.inner import InnerLoopConfig, TaskBatch, adapt_params, check_positive, unused_fields
from metarl.agents.maml.policy import GaussianMLPPolicy, Params, detach_params
from metarl.config import removed_fields
from metarl.errors import UserError, check_int_field


@removed_fields(
    **unused_fields(max_kl=0.01, cg_iters=10, cg_damping=1e-5, ls_backtrack=0.8, ls_steps=15, hvp_subsample=1.0)
)
@dataclass(frozen=True)
class MAMLPPOConfig(InnerLoopConfig):
    """MAML-PPO: the outer loop maximises a clipped surrogate with Adam instead of a TRPO step."""

    outer: ClassVar[str] = "ppo"
    first_order: bool = False
    """Drop the second-order terms of the meta-gradient (the Adam steps' gradients skip the inner-step Hessians)."""
    ppo_clip: float = 0.3
    """Ratio clip of the clipped surrogate."""
    ppo_epochs: int = 5
    """Full-batch Adam steps per meta-iteration."""
    outer_lr: float = 1e-3
    """Adam learning rate of the outer loop."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "outer_lr")
        check_int_field(self, "ppo_epochs")
        if not self.ppo_clip > 0:
            raise UserError(f"ppo_clip must be positive, got {self.ppo_clip!r}")

    def outer_loop(self, policy: GaussianMLPPolicy, seed: int) -> PPOOuterLoop:
        return PPOOuterLoop(policy, self)


def _clipped_loss(
    policy: GaussianMLPPolicy, adapted: Params, post: TaskBatch, old_logp: torch.Tensor, clip: float
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """PPO's clipped loss (mean over tasks of the per-task mean) and the new (mean, log_std)."""
    mean, log_std = policy.call_stacked(adapted, post.obs)
    ratio = torch.exp(gaussian_log_prob(post.actions, mean, log_std) - old_logp)
    adv = post.advantages
    clipped = torch.min(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv)
    return -((clipped * post.mask).sum(1) / post.steps_per_task).mean(), (mean, log_std)


def ppo_outer_step(
    policy: GaussianMLPPolicy,
    optimizer: torch.optim.Optimizer,
    pre: Sequence[TaskBatch],
    post: TaskBatch,
    config: MAMLPPOConfig,
) -> dict[str, float]:
    """Clipped outer loop: ``ppo_epochs`` full-batch Adam steps on the clipped post-adaptation surrogate."""
    create_graph = not config.first_order
    with torch.no_grad():
        adapted0 = adapt_params(policy, policy.params(), pre, config.inner_lr, create_graph=False)
        old_mean, old_log_std = policy.call_stacked(detach_params(adapted0), post.obs)
        old_logp = gaussian_log_prob(post.actions, old_mean, old_log_std)
    first = 0.0
    for epoch in range(config.ppo_epochs):
        adapted = adapt_params(policy, policy.params(), pre, config.inner_lr, create_graph)
        loss, _ = _clipped_loss(policy, adapted, post, old_logp, config.ppo_clip)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        first = float(loss.detach()) if epoch == 0 else first
    with torch.no_grad():  # the figures at the final θ, after the last Adam step
        adapted = adapt_params(policy, policy.params(), pre, config.inner_lr, create_graph=False)
        final_loss, (mean, log_std) = _clipped_loss(policy, adapted, post, old_logp, config.ppo_clip)
        last = float(final_loss)
        kl = ((gaussian_kl(old_mean, old_log_std, mean, log_std) * post.mask).sum(1) / post.steps_per_task).mean()
    return {"losses/surrogate_before": first, "losses/surrogate_after": last, "losses/kl": float(kl)}


class PPOOuterLoop:
    """``ppo_epochs`` Adam steps per iteration; the Adam state is checkpointed as the agent's ``optimizer``."""

    samples_post_adaptation = True

    def __init__(self, policy: GaussianMLPPolicy, config: MAMLPPOConfig) -> None:
        self.policy, self.config = policy, config
        self.optimizer = torch.optim.Adam(policy.parameters(), lr=config.outer_lr)

    def step(
        self, pre: Sequence[TaskBatch], post: TaskBatch | None, adapted: Params, env_steps: int
    ) -> dict[str, float]:
        if post is None:
            raise RuntimeError("internal error: the PPO outer loop needs post-adaptation episodes")
        return ppo_outer_step(self.policy, self.optimizer, pre, post, self.config)

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])
