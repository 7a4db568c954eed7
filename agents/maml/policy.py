"""The MAML family's policy: a Gaussian MLP called with explicit parameter dicts, and the engine-facing
:class:`TaskPolicy` that applies per-task weights in one batched call.

Per-task weights in one call: adapted parameters of all ``N`` tasks are stacked on a leading
task axis (``[N, ...]``) in the order of the task list given to ``collect``; the engine's single
``act`` call groups its rows by ``step.task`` (padding to the largest group) and applies each
task's weights with :func:`torch.func.vmap`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, vmap

from metarl.agents.distributions import action_affine, gaussian_log_prob
from metarl.rollout.types import StepBatch

Params = dict[str, torch.Tensor]
"""Parameters by name: θ (each tensor its module shape) or per-task weights stacked on a leading task axis."""


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

    def __init__(self, policy: GaussianMLPPolicy, params: Params | None = None, task_offset: int = 0) -> None:
        self.policy = policy
        self.task_offset = int(task_offset)  # a collect's ``task_offset``: its step.task counts from there
        self.params = None if params is None else detach_params(params)
        self.num_tasks = 0 if params is None else int(next(iter(params.values())).shape[0])
        self.device = policy.device

    def initial_state(self, num_slots: int) -> None:
        return None

    @torch.no_grad()
    def act(self, step: StepBatch, state: Any) -> tuple[torch.Tensor, Any, dict[str, torch.Tensor]]:
        mean, log_std = self.distribution(step.obs, step.task - self.task_offset if self.task_offset else step.task)
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
