"""Gradient-based meta-RL (Finn et al. 2017): MAML-TRPO, MAML-PPO (clipped outer loop), FOMAML and Reptile.

One Gaussian MLP policy with parameters ``θ``.  For each task of a meta-batch, the inner loop
takes ``inner_steps`` vanilla policy-gradient steps from ``θ`` on that task's episodes (a linear
feature baseline fitted per task), giving adapted parameters ``θ'_i``.  The outer loop improves
``θ`` by the post-adaptation return, differentiating through the inner steps (second order by
default).  All parameters are explicit dicts passed to :func:`torch.func.functional_call`; the
module's own parameters are never edited in place by the inner loop.

Per-task weights in one call: adapted parameters of all ``N`` tasks are stacked on a leading
task axis (``[N, ...]``) in the order of the task list given to ``collect``; the engine's single
``act`` call groups its rows by ``step.task`` (padding to the largest group) and applies each
task's weights with :func:`torch.func.vmap`.

Shapes: ``N`` tasks, ``E`` episodes per task, ``H`` horizon, ``M`` steps per task (``E * H``),
``O``/``A`` observation/action dims, ``D`` baseline features.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn
from torch.func import functional_call, vmap

from metarl.agent import MetaTestRollouts
from metarl.agents.distributions import action_affine, gaussian_kl, gaussian_log_prob
from metarl.agents.linear_baseline import baseline_features, discounted_returns, fit_linear_baseline, gae
from metarl.errors import UserError, check_int_field
from metarl.rollout.types import StepBatch, Trajectories
from metarl.stops import stop_point
from metarl.tasks import Task

Params = dict[str, torch.Tensor]
OUTER_KINDS = ("trpo", "ppo", "reptile")


# -- config ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MAMLConfig:
    """MAML-TRPO hyperparameters (defaults: pytorch-maml-rl / metaworld-algorithms)."""

    outer: ClassVar[str] = "trpo"
    hidden: tuple[int, ...] = (64, 64)
    """Widths of the tanh MLP (Meta-World: 512, 512; point-nav: 64, 64; cheetah: 100, 100)."""
    init_std: float = 1.0
    """Initial action std, in [-1, 1]-normalised action units (state-independent, learned)."""
    inner_lr: float = 0.1
    """Step size of the inner policy-gradient steps."""
    inner_steps: int = 1
    """Inner policy-gradient steps, each on fresh episodes collected with the current adapted weights."""
    first_order: bool = False
    """Drop the second-order terms of the meta-gradient (FOMAML)."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 1.0
    """GAE λ on top of the linear baseline (1.0: return minus baseline)."""
    normalize_advantages: bool = True
    """Standardise advantages per task, in the inner and the outer loss."""
    baseline_reg: float = 1e-5
    """Ridge coefficient of the linear feature baseline (raised x10 until the solve is finite)."""
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
    ppo_clip: float = 0.3
    """PPO outer loop (maml-ppo): ratio clip."""
    ppo_epochs: int = 5
    """PPO outer loop: full-batch Adam steps per meta-iteration."""
    outer_lr: float = 1e-3
    """Outer step size: Adam learning rate for maml-ppo; the interpolation ε of θ ← θ + ε(mean θ' − θ) for reptile."""
    test_inner_steps: int | None = None
    """Inner steps at meta-test time (default: inner_steps)."""

    def __post_init__(self) -> None:
        if not self.hidden or any(isinstance(w, bool) or int(w) <= 0 for w in self.hidden):
            raise UserError(f"hidden must be a non-empty tuple of positive widths, got {self.hidden!r}")
        for name in ("init_std", "inner_lr", "max_kl", "outer_lr", "cg_damping"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                if name == "cg_damping" and value == 0:
                    continue
                raise UserError(f"{name} must be a positive finite number, got {value!r}")
        for name in ("inner_steps", "cg_iters", "ls_steps", "ppo_epochs"):
            check_int_field(self, name)
        if self.test_inner_steps is not None:
            check_int_field(self, "test_inner_steps", 0)
        for name in ("gamma", "gae_lambda"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise UserError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")
        if not 0.0 < self.ls_backtrack < 1.0:
            raise UserError(f"ls_backtrack must be in (0, 1), got {self.ls_backtrack!r}")
        if isinstance(self.hvp_subsample, bool) or not (
            isinstance(self.hvp_subsample, int | float) and 0.0 < self.hvp_subsample <= 1.0
        ):
            raise UserError(f"hvp_subsample must be a fraction in (0, 1], got {self.hvp_subsample!r}")
        if not self.baseline_reg > 0:
            raise UserError(f"baseline_reg must be positive, got {self.baseline_reg!r}")
        if not self.ppo_clip > 0:
            raise UserError(f"ppo_clip must be positive, got {self.ppo_clip!r}")
        if self.outer == "reptile" and self.outer_lr > 1.0:
            raise UserError(
                f"reptile's outer_lr interpolates toward the adapted weights; use (0, 1], got {self.outer_lr}"
            )

    @property
    def steps_at_test(self) -> int:
        return self.inner_steps if self.test_inner_steps is None else self.test_inner_steps


@dataclass(frozen=True)
class MAMLPPOConfig(MAMLConfig):
    """MAML-PPO: the outer loop maximises a clipped surrogate with Adam instead of a TRPO step.

    Not ProMP (Rothfuss et al. 2019): the inner step is MAML's REINFORCE step, without ProMP's low-variance
    curvature objective or its inner KL penalty."""

    outer: ClassVar[str] = "ppo"


@dataclass(frozen=True)
class FOMAMLConfig(MAMLConfig):
    """First-order MAML: TRPO outer loop, inner-step gradients treated as constants."""

    first_order: bool = True
    """Drop the second-order terms of the meta-gradient (FOMAML)."""


@dataclass(frozen=True)
class ReptileConfig(MAMLConfig):
    """Reptile (Nichol et al. 2018): several inner policy-gradient steps, then θ ← θ + ε (mean θ' − θ)."""

    outer: ClassVar[str] = "reptile"
    inner_steps: int = 3
    """Inner policy-gradient steps, each on fresh episodes collected with the current adapted weights."""
    first_order: bool = True
    """Reptile never differentiates through the inner loop."""
    outer_lr: float = 0.5
    """Outer step size: the interpolation ε of θ ← θ + ε (mean θ' − θ)."""


# -- policy ------------------------------------------------------------------------------------


class GaussianMLPPolicy(nn.Module):
    """Gaussian MLP with a state-independent log-std, in [-1, 1]-normalised action units.

    ``forward(obs) -> (mean, log_std)``; env actions are ``bias + scale * a``.  Call it through
    :func:`torch.func.functional_call` with an explicit parameter dict to use other weights.
    """

    action_bias: torch.Tensor
    action_scale: torch.Tensor

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden: Sequence[int] = (64, 64),
        init_std: float = 1.0,
        action_low: Any = None,
        action_high: Any = None,
    ) -> None:
        super().__init__()
        self.obs_dim, self.action_dim = int(obs_dim), int(action_dim)
        bias, scale = action_affine(self.action_dim, action_low, action_high, "MAML")
        self.register_buffer("action_bias", bias)
        self.register_buffer("action_scale", scale)
        layers: list[nn.Module] = []
        in_dim = self.obs_dim
        for width in hidden:
            layers += [nn.Linear(in_dim, int(width)), nn.Tanh()]
            in_dim = int(width)
        out = nn.Linear(in_dim, self.action_dim)
        nn.init.xavier_uniform_(out.weight, gain=0.1)
        nn.init.zeros_(out.bias)
        self.mean_net = nn.Sequential(*layers, out)
        self.log_std = nn.Parameter(torch.full((self.action_dim,), math.log(init_std)))

    @property
    def device(self) -> torch.device:
        return self.log_std.device

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.mean_net(obs)
        return mean, self.log_std.expand_as(mean)

    def params(self) -> Params:
        """The meta-parameters θ as an explicit dict (the module's own tensors, requiring grad)."""
        return dict(self.named_parameters())

    def normalize_action(self, action: torch.Tensor) -> torch.Tensor:
        # the buffers follow the input's device (a CUDA policy may be given host tensors)
        return (action - self.action_bias.to(action.device)) / self.action_scale.to(action.device)

    def call(self, params: Params, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """mean, log_std of the policy with weights ``params`` (shared: one set for all rows)."""
        out: tuple[torch.Tensor, torch.Tensor] = functional_call(self, params, (obs,))
        return out

    def call_stacked(self, params: Params, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-task weights: ``params`` each [N, ...], obs [N, M, O] → mean, log_std [N, M, A] (one vmap)."""
        out: tuple[torch.Tensor, torch.Tensor] = vmap(self.call)(params, obs)
        return out


def stack_params(params: Params, n: int) -> Params:
    """θ shared by ``n`` tasks as a stacked dict ([n, ...] views; gradients flow back to θ)."""
    return {k: v.unsqueeze(0).expand(n, *v.shape) for k, v in params.items()}


def detach_params(params: Params) -> Params:
    return {k: v.detach() for k, v in params.items()}


def group_rows(task: torch.Tensor, num_tasks: int) -> tuple[torch.Tensor, int]:
    """For rows with task ids ``task`` [R]: each row's rank within its task, and the largest group size."""
    counts = torch.bincount(task, minlength=num_tasks)
    order = torch.argsort(task, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(task)
    rank[order] = torch.arange(task.numel(), device=task.device) - starts[task[order]]
    return rank, int(counts.max()) if task.numel() else 0


class TaskPolicy:
    """What the engine calls: θ for every task, or per-task weights stacked in the task order of ``collect``.

    One ``act`` per step: rows are grouped by ``step.task`` into a padded [N, max rows, O] block,
    the stacked weights are applied with one :func:`torch.func.vmap`, and the rows gathered back.
    Action noise is the engine's per-(task, episode) stream, drawn outside the vmap.
    """

    def __init__(self, policy: GaussianMLPPolicy, params: Params | None = None) -> None:
        self.policy = policy
        self.params = None if params is None else detach_params(params)
        self.num_tasks = 0 if params is None else int(next(iter(params.values())).shape[0])
        self.device = policy.device

    def initial_state(self, num_slots: int) -> None:
        return None

    @torch.no_grad()
    def act(self, step: StepBatch, state: Any) -> tuple[torch.Tensor, Any, dict[str, torch.Tensor]]:
        mean, log_std = self.distribution(step.obs, step.task)
        a = mean if step.deterministic else mean + log_std.exp() * step.noise
        log_prob = gaussian_log_prob(a, mean, log_std)
        return self.policy.action_bias + self.policy.action_scale * a, state, {"log_prob": log_prob}

    def distribution(self, obs: torch.Tensor, task: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """mean, log_std [R, A] for rows ``obs`` [R, O] of tasks ``task`` [R]."""
        if self.params is None:
            return self.policy(obs)
        if task.numel() and int(task.max()) >= self.num_tasks:
            raise ValueError(f"row of task {int(task.max())} but only {self.num_tasks} tasks have adapted weights")
        rank, width = group_rows(task, self.num_tasks)
        padded = obs.new_zeros(self.num_tasks, max(width, 1), obs.shape[-1])
        padded[task, rank] = obs
        mean, log_std = self.policy.call_stacked(self.params, padded)
        return mean[task, rank], log_std[task, rank]


class LoopTaskPolicy(TaskPolicy):
    """Reference implementation of :class:`TaskPolicy`: a Python loop over tasks (for tests and benchmarks)."""

    def distribution(self, obs: torch.Tensor, task: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.params is None:
            return self.policy(obs)
        mean = obs.new_zeros(obs.shape[0], self.policy.action_dim)
        log_std = torch.zeros_like(mean)
        for i in torch.unique(task).tolist():
            rows = task == i
            m, s = self.policy.call({k: v[i] for k, v in self.params.items()}, obs[rows])
            mean[rows], log_std[rows] = m, s
        return mean, log_std


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


def task_batch(traj: Trajectories, policy: GaussianMLPPolicy, config: MAMLConfig) -> TaskBatch:
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


# -- outer loop: TRPO ------------------------------------------------------------------------------


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
    config: MAMLConfig,
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


def reptile_outer_step(policy: GaussianMLPPolicy, adapted: Params, outer_lr: float) -> dict[str, float]:
    """θ ← θ + ε (mean_i θ'_i − θ)."""
    moved = 0.0
    with torch.no_grad():
        for name, p in policy.named_parameters():
            delta = adapted[name].mean(0) - p
            p.add_(outer_lr * delta)
            moved += float(delta.pow(2).sum())
    return {"reptile/mean_delta_norm": math.sqrt(moved)}


# -- the agent ------------------------------------------------------------------------------------


class MAMLAgent:
    """MAML-family agent behind the shared training loop (:class:`metarl.agent.MetaLearner`)."""

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        config: MAMLConfig | None = None,
        *,
        name: str = "maml-trpo",
        episodes_per_task: int = 10,
        device: torch.device | str = "cpu",
        action_low: Any = None,
        action_high: Any = None,
        seed: int = 0,
    ) -> None:
        self.config = config or MAMLConfig()
        self.name = name
        self.episodes_per_task = int(episodes_per_task)
        self.device = torch.device(device)
        self.seed = int(seed)
        torch.manual_seed(seed)
        self.policy = GaussianMLPPolicy(
            obs_dim, action_dim, self.config.hidden, self.config.init_std, action_low, action_high
        ).to(self.device)
        self.optimizer: torch.optim.Optimizer | None = (
            torch.optim.Adam(self.policy.parameters(), lr=self.config.outer_lr) if self.config.outer == "ppo" else None
        )
        self.env_steps = 0  # training env steps behind the weights

    adaptation_unit = "gradient_steps"
    metaworld_info_in_obs = False

    # -- sampling --------------------------------------------------------------------------
    def _collect(
        self, engine: Any, tasks: Sequence[Task], params: Params | None, episodes: int, deterministic: bool = False
    ) -> Trajectories:
        traj: Trajectories = engine.collect(
            TaskPolicy(self.policy, params), list(tasks), episodes_per_task=episodes, deterministic=deterministic
        )
        return traj

    def adapt(self, engine: Any, tasks: Sequence[Task], adaptation_episodes: int) -> TaskPolicy:
        """The test-time inner steps (``config.steps_at_test``), each on ``adaptation_episodes`` fresh sampled
        episodes per task; returns the adapted per-task policy (weights stacked in the order of ``tasks``)."""
        if isinstance(adaptation_episodes, bool) or not isinstance(adaptation_episodes, int) or adaptation_episodes < 1:
            raise UserError(
                f"{self.name} adapts by gradient steps on episodes; adaptation_episodes must be a positive integer, "
                f"got {adaptation_episodes!r}"
            )
        policy, _ = self.adapt_with_batches(engine, tasks, adaptation_episodes, self.config.steps_at_test)
        return policy

    def adapt_with_batches(
        self, engine: Any, tasks: Sequence[Task], episodes: int | None = None, steps: int | None = None
    ) -> tuple[TaskPolicy, list[TaskBatch]]:
        """Collect ``episodes`` per task and take ``steps`` inner steps (default: the training ones); returns the
        adapted per-task policy and the batches it stepped on.

        The returned :class:`TaskPolicy` holds the adapted weights stacked in the order of ``tasks``:
        pass it and the same task list to ``engine.collect``.
        """
        episodes = self.episodes_per_task if episodes is None else int(episodes)
        steps = self.config.inner_steps if steps is None else int(steps)
        if episodes <= 0:
            raise ValueError(f"adaptation needs at least one episode per task, got {episodes}")
        params: Params | None = None
        batches: list[TaskBatch] = []
        for _ in range(steps):
            traj = self._collect(engine, tasks, params, episodes)
            batches.append(task_batch(traj, self.policy, self.config))
            params = self.inner_step(params, batches[-1], len(tasks))
        return TaskPolicy(self.policy, params), batches

    def inner_step(self, params: Params | None, batch: TaskBatch, num_tasks: int) -> Params:
        """Per-task weights after one more inner step (from θ when ``params`` is None), as constants."""
        base = stack_params(detach_params(self.policy.params()), num_tasks) if params is None else params
        return detach_params(inner_step(self.policy, base, batch, self.config.inner_lr, False))

    # -- MetaLearner ------------------------------------------------------------------------
    def meta_train_step(self, engine: Any, tasks: Sequence[Task]) -> dict[str, float]:
        cfg = self.config
        t0 = time.perf_counter()
        adapted_policy, pre = self.adapt_with_batches(engine, tasks)
        assert adapted_policy.params is not None
        post: TaskBatch | None = None
        if cfg.outer != "reptile":
            post_traj = self._collect(engine, tasks, adapted_policy.params, self.episodes_per_task)
            post = task_batch(post_traj, self.policy, cfg)
        t1 = time.perf_counter()
        if post is None:  # Reptile: θ moves toward the weights after the inner steps
            losses = reptile_outer_step(self.policy, adapted_policy.params, cfg.outer_lr)
        elif cfg.outer == "trpo":
            # the curvature's tasks: a function of the run's seed and step count, so a resume draws the same
            draw = torch.Generator().manual_seed(self.seed * 1_000_003 + self.env_steps)
            losses = trpo_step(self.policy, pre, post, cfg, hvp_tasks(len(tasks), cfg.hvp_subsample, draw))
        else:
            if self.optimizer is None:
                raise RuntimeError(f"internal error: outer {cfg.outer!r} needs an optimizer, and none was built")
            losses = ppo_outer_step(self.policy, self.optimizer, pre, post, cfg)
        t2 = time.perf_counter()
        # Reptile has no post-adaptation phase: its "post" figures are those of the last inner step's episodes
        last = post if post is not None else pre[-1]
        env_steps = sum(b.num_steps for b in pre) + (post.num_steps if post is not None else 0)
        self.env_steps += int(env_steps)
        return {
            "env_steps": float(env_steps),
            "charts/pre_adaptation_return": float(pre[0].returns.mean()),
            "charts/post_adaptation_return": float(last.returns.mean()),
            "charts/pre_adaptation_success": float(pre[0].success.mean()),
            "charts/post_adaptation_success": float(last.success.mean()),
            "charts/log_std": float(self.policy.log_std.detach().mean()),
            # metarl's inner step is lr x the per-task mean gradient with std-normalised advantages; the
            # metaworld-algorithms step (one mean over all tasks, advantages / variance) is lr / (N x this std)
            "inner/advantage_std": pre[0].raw_advantage_std,
            **losses,
            "time/sampling_s": t1 - t0,
            "time/learning_s": t2 - t1,
        }

    def meta_test(
        self,
        engine: Any,
        tasks: Sequence[Task],
        adaptation_episodes: int,
        eval_episodes: int,
        deterministic: bool,
        *,
        feedback: bool = True,
        sample_adaptation: bool = True,
    ) -> MetaTestRollouts:
        """Curve point k: ``eval_episodes`` episodes with the weights after k inner steps (k = 0..S).

        Each inner step uses ``adaptation_episodes`` fresh stochastic episodes per task (one
        episode if 0 is given: a gradient step needs data).  There is no reward input to withhold:
        the adaptation control is the curve's point 0 (no inner step), so ``feedback=False`` is refused.
        Adaptation episodes are sampled whatever ``sample_adaptation`` says: a policy gradient needs exploration.
        """
        if not feedback:
            raise UserError(
                f"{self.name} has no reward input to withhold (--no-feedback is RL²'s control); "
                "its adaptation control is the curve's point 0, before any inner step"
            )
        tasks = list(tasks)
        steps = self.config.steps_at_test
        episodes = max(int(adaptation_episodes), 1)
        params: Params | None = None
        succ, rets = [], []
        last: Trajectories | None = None
        for k in range(steps + 1):
            last = self._collect(engine, tasks, params, eval_episodes, deterministic)
            succ.append(last.episode_success.float().mean(1))
            rets.append(last.episode_returns.mean(1))
            if k == steps:
                break
            traj = self._collect(engine, tasks, params, episodes)
            batch = task_batch(traj, self.policy, self.config)
            params = self.inner_step(params, batch, len(tasks))
        if last is None:  # the loop above runs at least once: adaptation takes at least one episode
            raise RuntimeError(f"internal error: meta_test collected nothing (episodes={episodes!r})")
        return MetaTestRollouts(
            tasks=list(last.tasks),
            curve_success=torch.stack(succ, 1).cpu(),
            curve_return=torch.stack(rets, 1).cpu(),
            eval_success=last.episode_success.cpu(),
            eval_return=last.episode_returns.cpu(),
            unit="gradient_steps",
        )

    def eval_slots(self, adaptation_episodes: int, eval_episodes: int) -> int:
        return max(adaptation_episodes, eval_episodes)  # independent episodes run side by side

    def metaworld_adapter(
        self, num_envs: int, *, deterministic: bool, seed: int, info_in_obs: bool = False, exact: bool = False
    ) -> Any:
        """``exact`` is ignored: the adaptation episodes are sampled (a policy gradient needs exploration)."""
        from metarl.agents.maml_metaworld import MAMLMetaWorldAgent

        if info_in_obs:
            raise ValueError(f"{self.name} reads plain observations; build the envs without recurrent_info_in_obs")
        return MAMLMetaWorldAgent(self, num_envs, deterministic=deterministic, seed=seed)

    @property
    def metaworld_adaptation_steps(self) -> int:
        return self.config.steps_at_test

    def learner_record(self) -> dict[str, str]:
        return {}  # nothing beyond the learner's threads and device

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"policy": self.policy.state_dict(), "env_steps": self.env_steps}
        if self.optimizer is not None:
            state["optimizer"] = self.optimizer.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.env_steps = int(state.get("env_steps", 0))
        if self.optimizer is not None and "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])


AGENT_CONFIGS: dict[str, type[MAMLConfig]] = {
    "maml-trpo": MAMLConfig,
    "maml-ppo": MAMLPPOConfig,
    "fomaml": FOMAMLConfig,
    "reptile": ReptileConfig,
}


def build(observation_space: Any, action_space: Any, config: MAMLConfig, train: Any, device: torch.device) -> MAMLAgent:
    """Agent factory used by the training loop (``train`` is a :class:`metarl.config.TrainConfig`)."""
    expected = AGENT_CONFIGS.get(train.agent)
    if expected is not None and type(config) is not expected:
        raise ValueError(f"agent {train.agent!r} needs a {expected.__name__}, got a {type(config).__name__}")
    return MAMLAgent(
        int(math.prod(observation_space.shape)),
        int(math.prod(action_space.shape)),
        config,
        name=train.agent,
        episodes_per_task=train.episodes_per_task,
        device=device,
        action_low=action_space.low,
        action_high=action_space.high,
        seed=train.seed,
    )
