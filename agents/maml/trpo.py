"""MAML-TRPO (Finn et al. 2017) and its first-order option FOMAML: the outer loop improves θ by the
post-adaptation return with a trust-region step, differentiating through the inner steps (second order by
default; FOMAML treats the inner-step gradients as constants)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from metarl.agents.distributions import gaussian_kl, gaussian_log_prob
from metarl.agents.maml.inner import (
    InnerLoopConfig,
    TaskBatch,
    adapt_params,
    check_positive,
    unused_fields,
)
from metarl.agents.maml.policy import GaussianMLPPolicy, Params, detach_params
from metarl.config import removed_fields
from metarl.errors import UserError, check_int_field
from metarl.stops import stop_point

# -- config ------------------------------------------------------------------------------------


@removed_fields(**unused_fields(ppo_clip=0.3, ppo_epochs=5, outer_lr=1e-3))
@dataclass(frozen=True)
class MAMLConfig(InnerLoopConfig):
    """MAML-TRPO hyperparameters (defaults: pytorch-maml-rl / metaworld-algorithms)."""

    outer: ClassVar[str] = "trpo"
    first_order: bool = False
    """Drop the second-order terms of the meta-gradient (FOMAML)."""
    max_kl: float = 0.01
    """TRPO: largest mean KL between the old and new post-adaptation policies."""
    cg_iters: int = 10
    """TRPO: conjugate-gradient iterations."""
    cg_damping: float = 1e-5
    """TRPO: damping added to the KL Hessian-vector products."""
    ls_backtrack: float = 0.8
    """TRPO: line-search shrink factor."""
    ls_steps: int = 15
    """TRPO: line-search steps."""
    hvp_subsample: float = 1.0
    """TRPO: fraction of the meta-batch's tasks (at least one, drawn anew each iteration) whose KL gives the
    curvature in the conjugate-gradient Hessian-vector products; the gradient, the step's KL scaling check in
    the line search and the surrogate still use every task.  1.0: all of them (the reference)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "max_kl")
        if self.cg_damping != 0:
            check_positive(self, "cg_damping")
        for name in ("cg_iters", "ls_steps"):
            check_int_field(self, name)
        if not 0.0 < self.ls_backtrack < 1.0:
            raise UserError(f"ls_backtrack must be in (0, 1), got {self.ls_backtrack!r}")
        if isinstance(self.hvp_subsample, bool) or not (
            isinstance(self.hvp_subsample, int | float) and 0.0 < self.hvp_subsample <= 1.0
        ):
            raise UserError(f"hvp_subsample must be a fraction in (0, 1], got {self.hvp_subsample!r}")

    def outer_loop(self, policy: GaussianMLPPolicy, seed: int) -> TRPOOuterLoop:
        return TRPOOuterLoop(policy, self, seed)


@dataclass(frozen=True)
class FOMAMLConfig(MAMLConfig):
    """First-order MAML: TRPO outer loop, inner-step gradients treated as constants."""

    first_order: bool = True
    """Drop the second-order terms of the meta-gradient (FOMAML)."""


# -- the TRPO step -------------------------------------------------------------------------------


def flat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def conjugate_gradient(hvp: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, iters: int) -> torch.Tensor:
    """Approximately solve ``H x = b`` with ``iters`` CG iterations (H given by products)."""
    x = torch.zeros_like(b)
    r, p = b.clone(), b.clone()
    rr = r @ r
    for _ in range(iters):
        hp = hvp(p)
        alpha = rr / (p @ hp).clamp_min(1e-12)
        x = x + alpha * p
        r = r - alpha * hp
        rr_new = r @ r
        if rr_new < 1e-10:
            break
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


def surrogate_loss(
    policy: GaussianMLPPolicy, adapted: Params, post: TaskBatch, old: tuple[torch.Tensor, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(−mean importance-weighted advantage, mean KL(old || new)) over tasks of post-adaptation episodes."""
    mean, log_std = policy.call_stacked(adapted, post.obs)
    logp = gaussian_log_prob(post.actions, mean, log_std)
    old_logp = gaussian_log_prob(post.actions, *old)
    ratio = torch.exp(logp - old_logp)
    surr = -((ratio * post.advantages * post.mask).sum(1) / post.steps_per_task).mean()
    kl = ((gaussian_kl(old[0], old[1], mean, log_std) * post.mask).sum(1) / post.steps_per_task).mean()
    return surr, kl


def hvp_tasks(num_tasks: int, fraction: float, generator: torch.Generator) -> torch.Tensor | None:
    """Positions of the tasks whose KL gives the TRPO curvature (None: all of them)."""
    k = max(1, round(fraction * num_tasks))
    return None if k >= num_tasks else torch.randperm(num_tasks, generator=generator)[:k].sort().values


def _trpo_direction(
    policy: GaussianMLPPolicy,
    pre: Sequence[TaskBatch],
    post: TaskBatch,
    config: MAMLConfig,
    curvature_tasks: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, float, tuple[torch.Tensor, torch.Tensor]]:
    """(full step, gradient, loss, old post-adaptation distribution) at the current θ.

    The step is the natural-gradient direction scaled to the KL limit: ``x / sqrt(xᵀHx / 2δ)``
    with ``x ≈ H⁻¹ g`` by conjugate gradient, ``H`` the Hessian of the mean KL between the old
    and new adapted policies (through the inner steps), over ``curvature_tasks`` only when given (the
    Hessian-vector products then cost that fraction).  Its graphs are freed on return.
    """
    params = policy.params()
    names = list(params)
    adapted = adapt_params(policy, params, pre, config.inner_lr, create_graph=not config.first_order)
    with torch.no_grad():
        old = policy.call_stacked(detach_params(adapted), post.obs)
    loss, kl = surrogate_loss(policy, adapted, post, old)
    g = flat(torch.autograd.grad(loss, [params[k] for k in names], retain_graph=curvature_tasks is None))
    if curvature_tasks is not None:  # the KL of those tasks, through their own inner steps
        sub_pre = [b.select(curvature_tasks) for b in pre]
        sub = adapt_params(policy, params, sub_pre, config.inner_lr, create_graph=not config.first_order)
        old_sub = (old[0][curvature_tasks], old[1][curvature_tasks])
        _, kl = surrogate_loss(policy, sub, post.select(curvature_tasks), old_sub)
    flat_kl_grad = flat(torch.autograd.grad(kl, [params[k] for k in names], create_graph=True))

    def hvp(v: torch.Tensor) -> torch.Tensor:
        hv = torch.autograd.grad(flat_kl_grad @ v, [params[k] for k in names], retain_graph=True)
        return flat(hv) + config.cg_damping * v

    step_dir = conjugate_gradient(hvp, g, config.cg_iters)  # ≈ H⁻¹ g
    shs = 0.5 * (step_dir @ hvp(step_dir))
    lagrange = torch.sqrt(shs.clamp_min(1e-12) / config.max_kl)
    return (step_dir / lagrange).detach(), g.detach(), float(loss.detach()), old


def trpo_step(
    policy: GaussianMLPPolicy,
    pre: Sequence[TaskBatch],
    post: TaskBatch,
    config: MAMLConfig,
    curvature_tasks: torch.Tensor | None = None,
) -> dict[str, float]:
    """One TRPO step on θ for the post-adaptation surrogate (through the inner steps).

    Backtracking line search (``ls_backtrack`` ** j, ``ls_steps`` tries) accepts the first step
    that lowers the loss and keeps the mean KL within ``max_kl``; otherwise θ is unchanged.
    ``curvature_tasks``: the tasks whose KL gives the conjugate-gradient curvature (default: all).
    """
    full_step, g, old_loss, old = _trpo_direction(policy, pre, post, config, curvature_tasks)
    params = policy.params()
    names = list(params)
    old_flat = flat([params[k].detach() for k in names]).clone()

    def set_flat(vector: torch.Tensor) -> None:
        offset = 0
        with torch.no_grad():
            for k in names:
                p = params[k]
                p.copy_(vector[offset : offset + p.numel()].view_as(p))
                offset += p.numel()

    accepted, fraction, new_loss, new_kl = False, 0.0, old_loss, 0.0
    for j in range(config.ls_steps):
        frac = config.ls_backtrack**j
        set_flat(old_flat - frac * full_step)
        if j == 0:  # a test may stop the run here, with θ at a trial step (metarl.stops)
            stop_point("update")
        with torch.no_grad():  # the inner steps still take their gradients, as constants
            trial = adapt_params(policy, policy.params(), pre, config.inner_lr, create_graph=False)
            l_new, kl_new = surrogate_loss(policy, trial, post, old)
        if float(l_new) < old_loss and float(kl_new) <= config.max_kl:
            accepted, fraction, new_loss, new_kl = True, frac, float(l_new), float(kl_new)
            break
    if not accepted:
        set_flat(old_flat)
    return {
        "losses/surrogate_before": old_loss,
        "losses/surrogate_after": new_loss,
        "losses/kl": new_kl,
        "trpo/accepted": float(accepted),
        "trpo/step_fraction": fraction,
        "losses/grad_norm": float(g.norm()),
    }


class TRPOOuterLoop:
    """One TRPO step per iteration on the post-adaptation surrogate, the curvature from ``hvp_subsample`` of
    the tasks."""

    samples_post_adaptation = True

    def __init__(self, policy: GaussianMLPPolicy, config: MAMLConfig, seed: int) -> None:
        self.policy, self.config, self.seed = policy, config, int(seed)

    def step(
        self, pre: Sequence[TaskBatch], post: TaskBatch | None, adapted: Params, env_steps: int
    ) -> dict[str, float]:
        if post is None:
            raise RuntimeError("internal error: the TRPO outer loop needs post-adaptation episodes")
        # the curvature's tasks: a function of the run's seed and step count, so a resume draws the same
        draw = torch.Generator().manual_seed(self.seed * 1_000_003 + env_steps)
        curvature = hvp_tasks(post.obs.shape[0], self.config.hvp_subsample, draw)
        return trpo_step(self.policy, pre, post, self.config, curvature)

    def state_dict(self) -> dict[str, Any]:
        return {}  # the step keeps nothing between iterations

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass
