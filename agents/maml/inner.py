"""What every MAML-family algorithm shares: the policy and inner-loop settings (:class:`InnerLoopConfig`),
the batches the losses read (:class:`TaskBatch`), and the differentiable inner loop itself.

The inner loop takes ``inner_steps`` vanilla policy-gradient steps per task from ``θ`` on that task's
episodes (advantages from a linear feature baseline fitted per task), giving adapted parameters
``θ'_i``.  All parameters are explicit dicts passed to :func:`torch.func.functional_call`; the
module's own parameters are never edited in place by the inner loop.  How ``θ`` then moves is the
algorithm's :class:`OuterLoop` (``trpo.py``, ``ppo.py``, ``reptile.py``).

Shapes: ``N`` tasks, ``E`` episodes per task, ``H`` horizon, ``M`` steps per task (``E * H``),
``O``/``A`` observation/action dims.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import torch

from metarl.agents.distributions import gaussian_log_prob
from metarl.agents.linear_baseline import baseline_features, discounted_returns, fit_linear_baseline, gae
from metarl.agents.maml.policy import GaussianMLPPolicy, Params, stack_params
from metarl.config import RemovedField
from metarl.errors import UserError, check_int_field
from metarl.rollout.types import Trajectories

ONE_CONFIG_COMMIT = "bce0993"
"""The last commit with one ``MAMLConfig`` for every outer loop: its runs' ``config.json`` files hold the TRPO and
the PPO fields whatever the agent."""


def unused_fields(**old_defaults: Any) -> dict[str, RemovedField]:
    """Fields of the one ``MAMLConfig`` (:data:`ONE_CONFIG_COMMIT`) that never affected this algorithm: an old
    run's ``config.json`` may hold them with any value (pass them to :func:`metarl.config.removed_fields`)."""
    return {name: RemovedField(value, ONE_CONFIG_COMMIT, ignored=True) for name, value in old_defaults.items()}


def check_positive(config: object, *names: str) -> None:
    """Refuse a field that is not a positive finite number, naming it and its value."""
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
            raise UserError(f"{name} must be a positive finite number, got {value!r}")


# -- config ------------------------------------------------------------------------------------


class OuterLoop(Protocol):
    """How θ moves once the inner steps are taken; an agent's config builds it (:meth:`InnerLoopConfig.outer_loop`)."""

    samples_post_adaptation: bool
    """Whether the step needs episodes collected with the adapted weights (Reptile's does not)."""

    def step(
        self, pre: Sequence[TaskBatch], post: TaskBatch | None, adapted: Params, env_steps: int
    ) -> dict[str, float]:
        """Move θ; returns the step's metrics.  ``pre``: the episodes before each inner step; ``post``: those
        with the adapted weights ``adapted`` (None when not sampled); ``env_steps``: the agent's training env
        steps before this iteration."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps of the outer loop, beside the policy in the agent's state (empty if nothing)."""
        ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


@dataclass(frozen=True)
class InnerLoopConfig:
    """The policy and the inner loop, shared by every MAML-family config (defaults: pytorch-maml-rl /
    metaworld-algorithms).  Each algorithm's config adds its outer loop's fields and only those."""

    outer: ClassVar[str] = ""
    """The outer loop's name (``trpo``, ``ppo``, ``reptile``)."""
    hidden: tuple[int, ...] = (64, 64)
    """Widths of the tanh MLP (Meta-World: 512, 512; point-nav: 64, 64; cheetah: 100, 100)."""
    init_std: float = 1.0
    """Initial action std, in [-1, 1]-normalised action units (state-independent, learned)."""
    inner_lr: float = 0.1
    """Step size of the inner policy-gradient steps."""
    inner_steps: int = 1
    """Inner policy-gradient steps, each on fresh episodes collected with the current adapted weights."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 1.0
    """GAE λ on top of the linear baseline (1.0: return minus baseline)."""
    normalize_advantages: bool = True
    """Standardise advantages per task, in the inner and the outer loss."""
    baseline_reg: float = 1e-5
    """Ridge coefficient of the linear feature baseline (raised x10 until the solve is finite)."""
    test_inner_steps: int | None = None
    """Inner steps at meta-test time (default: inner_steps)."""

    def __post_init__(self) -> None:
        if not self.hidden or any(isinstance(w, bool) or int(w) <= 0 for w in self.hidden):
            raise UserError(f"hidden must be a non-empty tuple of positive widths, got {self.hidden!r}")
        check_positive(self, "init_std", "inner_lr")
        check_int_field(self, "inner_steps")
        if self.test_inner_steps is not None:
            check_int_field(self, "test_inner_steps", 0)
        for name in ("gamma", "gae_lambda"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise UserError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")
        if not self.baseline_reg > 0:
            raise UserError(f"baseline_reg must be positive, got {self.baseline_reg!r}")

    @property
    def steps_at_test(self) -> int:
        return self.inner_steps if self.test_inner_steps is None else self.test_inner_steps

    def outer_loop(self, policy: GaussianMLPPolicy, seed: int) -> OuterLoop:
        """The outer loop that moves ``policy``'s θ (``seed``: the run's, for any draws it makes)."""
        raise NotImplementedError(f"{type(self).__name__} names no outer loop; use an algorithm's config")


# -- returns, baseline, advantages ---------------------------------------------------------------


def normalize_per_task(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Standardise [N, ...] per task over its valid entries."""
    n = x.shape[0]
    m = valid.reshape(n, -1).to(x.dtype)
    flat = x.reshape(n, -1)
    count = m.sum(1, keepdim=True).clamp_min(1)
    mean = (flat * m).sum(1, keepdim=True) / count
    var = ((flat - mean).pow(2) * m).sum(1, keepdim=True) / count
    return (((flat - mean) / (var.sqrt() + 1e-8)) * m).reshape(x.shape)


@dataclass
class TaskBatch:
    """One rollout phase's episodes, flattened per task for the losses: [N, M, ...] with M = E * H."""

    obs: torch.Tensor  # [N, M, O]
    actions: torch.Tensor  # [N, M, A] normalised units
    advantages: torch.Tensor  # [N, M]
    mask: torch.Tensor  # [N, M] float 1 on valid steps
    returns: torch.Tensor  # [N, E] undiscounted episode returns
    success: torch.Tensor  # [N, E] float
    num_steps: int = 0
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    raw_advantage_std: float = float("nan")
    """Mean over tasks of each task's advantage std before normalisation (to relate step sizes across conventions)."""

    @property
    def steps_per_task(self) -> torch.Tensor:  # [N]
        return self.mask.sum(1).clamp_min(1)

    def select(self, tasks: torch.Tensor) -> TaskBatch:
        """The batch of the tasks at positions ``tasks`` only."""
        mask = self.mask[tasks]
        return TaskBatch(
            obs=self.obs[tasks], actions=self.actions[tasks], advantages=self.advantages[tasks], mask=mask,
            returns=self.returns[tasks], success=self.success[tasks], num_steps=int(mask.sum()),
            extras={k: v[tasks] for k, v in self.extras.items()}, raw_advantage_std=self.raw_advantage_std,
        )  # fmt: skip


def task_batch(traj: Trajectories, policy: GaussianMLPPolicy, config: InnerLoopConfig) -> TaskBatch:
    """Advantages from a per-task linear baseline, and the tensors the losses need, on the policy's device.

    The objective is the finite-horizon return, as in MAML and garage: returns are not
    bootstrapped past a truncated episode's end, and the baseline sees the time step (its
    ``t, t², t³`` features), so the value of the remaining horizon is part of what it fits.
    """
    dev = policy.device
    obs, valid, rewards = traj.obs.to(dev), traj.valid.to(dev), traj.rewards.to(dev)
    n, e, h, o = obs.shape
    returns = discounted_returns(rewards, valid, config.gamma)
    values = fit_linear_baseline(baseline_features(obs, valid), returns, valid, config.baseline_reg)
    adv = gae(rewards, values, valid, config.gamma, config.gae_lambda)
    m = valid.reshape(n, -1).to(adv.dtype)
    count = m.sum(1).clamp_min(1)
    flat_adv = adv.reshape(n, -1)
    mean_adv = (flat_adv * m).sum(1) / count
    raw_std = float((((flat_adv - mean_adv[:, None]).pow(2) * m).sum(1) / count).sqrt().mean())
    if config.normalize_advantages:
        adv = normalize_per_task(adv, valid)
    return TaskBatch(
        obs=obs.reshape(n, e * h, o),
        actions=policy.normalize_action(traj.actions.to(dev)).reshape(n, e * h, -1),
        advantages=adv.reshape(n, e * h),
        mask=valid.reshape(n, e * h).to(obs.dtype),
        returns=traj.episode_returns.to(dev),
        success=traj.episode_success.to(dev).float(),
        num_steps=traj.num_steps,
        extras={"log_prob": traj.extras["log_prob"].to(dev).reshape(n, e * h)} if "log_prob" in traj.extras else {},
        raw_advantage_std=raw_std,
    )


# -- inner loop ----------------------------------------------------------------------------------


def inner_losses(policy: GaussianMLPPolicy, stacked: Params, batch: TaskBatch) -> torch.Tensor:
    """Per-task REINFORCE losses [N]: −mean over valid steps of log π_i(a|s) · A."""
    mean, log_std = policy.call_stacked(stacked, batch.obs)
    logp = gaussian_log_prob(batch.actions, mean, log_std)
    return -(logp * batch.advantages * batch.mask).sum(1) / batch.steps_per_task


def inner_step(policy: GaussianMLPPolicy, stacked: Params, batch: TaskBatch, lr: float, create_graph: bool) -> Params:
    """One policy-gradient step per task: θ'_i = θ_i − lr ∇ L_i(θ_i), for stacked weights [N, ...].

    With ``create_graph`` the result stays differentiable through the gradient (second order);
    without, the gradient is a constant and only the identity path θ → θ' remains (first order).
    """
    names = list(stacked)
    tracked = torch.is_grad_enabled() and any(v.requires_grad for v in stacked.values())
    if not tracked:  # under no_grad, or from plain tensors: a constant step (the gradient is still needed)
        stacked = {k: v.detach().requires_grad_(True) for k, v in stacked.items()}
        create_graph = False
    with torch.enable_grad():
        loss = inner_losses(policy, stacked, batch).sum()  # tasks are independent: ∂/∂θ_i of the sum is ∇L_i
        grads = torch.autograd.grad(loss, [stacked[k] for k in names], create_graph=create_graph)
    if not tracked:
        return {k: (stacked[k] - lr * g).detach() for k, g in zip(names, grads, strict=True)}
    return {k: stacked[k] - lr * g for k, g in zip(names, grads, strict=True)}


def adapt_params(
    policy: GaussianMLPPolicy,
    params: Params,
    batches: Sequence[TaskBatch],
    lr: float,
    create_graph: bool,
) -> Params:
    """θ'_i after one inner step per batch in ``batches`` (the episodes collected before each step)."""
    if not batches:
        raise ValueError("adapt_params needs at least one batch")
    stacked = stack_params(params, batches[0].obs.shape[0])
    for batch in batches:
        stacked = inner_step(policy, stacked, batch, lr, create_graph)
    return stacked
