"""The RL² policy (what the engine calls) and its config: obs ⊕ previous action ⊕ scaled previous reward ⊕ done
flag → MLP → recurrent memory → Gaussian head + value head.

Shapes: ``R`` rows acting this step, ``S`` env slots, ``C`` steps of a sequence, ``B`` sequences, ``O``/``A``
observation/action dims, ``G`` GRU width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from metarl.agents.distributions import action_affine, gaussian_log_prob
from metarl.agents.rl2.memory import GRUMemory, MemoryState, RecurrentMemory
from metarl.agents.rl2.removed import LAST_COMMIT_WITH_EXPERIMENTS
from metarl.config import RemovedField, removed_fields
from metarl.errors import UserError
from metarl.rollout.types import StepBatch

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0
"""log σ bounds of the linear (unsquashed) heads."""
SQUASHED_LOG_STD = (-1.0, 1.0)
"""log σ bounds of the tanh heads (metaworld-algorithms): σ in [e⁻¹, e] in [-1, 1]-normalised action units."""
POLICY_INITS = ("torch", "reference")


def log_std_bounds(squash_heads: bool) -> tuple[float, float]:
    """(lowest, highest) log σ of the heads: the tanh heads' [-1, 1] or the linear heads' [-5, 2]."""
    return SQUASHED_LOG_STD if squash_heads else (LOG_STD_MIN, LOG_STD_MAX)


def _number(value: Any) -> float:
    """``value`` as a float if it is a real number (not a bool), else NaN (which fails every bound check)."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


@removed_fields(
    log_std_cap_end=RemovedField(default=None, commit=LAST_COMMIT_WITH_EXPERIMENTS),
    log_std_cap_steps=RemovedField(default=1_000_000, commit=LAST_COMMIT_WITH_EXPERIMENTS),
    log_std_min=RemovedField(default=None, commit=LAST_COMMIT_WITH_EXPERIMENTS),
    exploit_episodes=RemovedField(default=0, commit=LAST_COMMIT_WITH_EXPERIMENTS),
    exploit_log_std=RemovedField(default=-2.0, commit=LAST_COMMIT_WITH_EXPERIMENTS),
)
@dataclass(frozen=True)
class RL2PolicyConfig:
    """Network shape of the RL² policy."""

    mlp_hidden: tuple[int, ...] = (256, 256)
    """Widths of the tanh MLP between the input and the GRU."""
    gru_hidden: int = 256
    """Width of the GRU."""
    reward_scale: float = 0.1
    """The previous reward enters the input multiplied by this (metaworld-algorithms: reward / 10)."""
    normalize_value: bool = False
    """With the learned value baseline: learn the value of standardised returns (running mean and std over
    all batches so far)."""
    squash_heads: bool = True
    """Pass the mean and log-std heads through tanh, as metaworld-algorithms does (mean in [-1, 1], log σ in
    [-1, 1]); off: a linear mean and log σ clamped to [-5, 2]."""
    action_input: bool = True
    """Feed the previous action to the GRU, as metaworld-algorithms does; off: zeros in its place (the input
    width stays the same).  The sampled action carries the exploration noise into the hidden state, which a
    mean-action evaluation then lacks."""
    init_log_std: float = 0.0
    """log σ of the untrained policy (in [-1, 1]-normalised action units), set through the log-std head's
    bias; must lie inside the heads' bounds (open interval (-1, 1) with ``squash_heads``, [-5, 2] without)."""
    weight_init: str = "torch"
    """Initial weights.  ``torch``: PyTorch's defaults for the MLP and the GRU (uniform ±1/√fan-in, biases
    too) and orthogonal mean/log-std heads of gain 0.01 (the mean starts at 0).  ``reference``: as
    metaworld-algorithms' RL² configs: Xavier-uniform MLP, GRU input kernels (per gate) and heads (bound of
    one head of 2A outputs), orthogonal GRU recurrent kernels (per gate), zero biases.  Either way the
    log-std head's bias sets ``init_log_std``."""

    def __post_init__(self) -> None:
        for name in ("squash_heads", "action_input", "normalize_value"):
            if not isinstance(getattr(self, name), bool):
                raise UserError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if not self.mlp_hidden or any(int(w) <= 0 for w in self.mlp_hidden):
            raise UserError(f"mlp_hidden must be a non-empty tuple of positive widths, got {self.mlp_hidden!r}")
        if self.gru_hidden <= 0:
            raise UserError(f"gru_hidden must be positive, got {self.gru_hidden!r}")
        if not math.isfinite(self.reward_scale) or self.reward_scale <= 0:
            raise UserError(f"reward_scale must be a positive finite number, got {self.reward_scale!r}")
        if self.weight_init not in POLICY_INITS:
            raise UserError(f"weight_init must be one of {list(POLICY_INITS)}, got {self.weight_init!r}")
        low, high = log_std_bounds(self.squash_heads)
        x = _number(self.init_log_std)
        if not (low < x < high if self.squash_heads else low <= x <= high):
            heads = (
                f"tanh heads: the open interval ({low:g}, {high:g})"
                if self.squash_heads
                else f"linear heads: [{low:g}, {high:g}]"
            )
            raise UserError(f"init_log_std must lie inside the log σ bounds ({heads}), got {self.init_log_std!r}")


class RL2Policy(nn.Module):
    """obs ⊕ previous action ⊕ scaled previous reward ⊕ done flag → MLP → GRU → Gaussian head + value head.

    The Gaussian has a state-dependent log-std: with ``squash_heads`` (the default, as
    metaworld-algorithms) mean and log σ are ``tanh`` of linear heads, so σ never leaves [e⁻¹, e];
    otherwise the mean is linear and log σ is clamped to [-5, 2].  The value head is trained only
    with the learned-value baseline (``RL2PPOConfig.baseline = "value"``).  The engine calls
    :meth:`act` once per step for all active slots; the memory's state is kept per slot, carried
    across the episodes of a trial and reset where ``trial_start`` is set.

    The memory is :attr:`memory` (a :class:`~metarl.agents.rl2.memory.RecurrentMemory`); the GRU registers under
    the name ``gru``, the name every RL² checkpoint uses.
    """

    action_bias: torch.Tensor  # [A] buffers (typed for mypy)
    action_scale: torch.Tensor
    ret_mean: torch.Tensor
    ret_std: torch.Tensor
    ret_count: torch.Tensor

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        config: RL2PolicyConfig | None = None,
        action_low: Any = None,
        action_high: Any = None,
    ) -> None:
        super().__init__()
        self.config = config or RL2PolicyConfig()
        self.obs_dim, self.action_dim = int(obs_dim), int(action_dim)
        # The Gaussian lives in [-1, 1]-normalised action units; env actions = bias + scale * a.
        bias, scale = action_affine(self.action_dim, action_low, action_high, "RL²")
        self.register_buffer("action_bias", bias)
        self.register_buffer("action_scale", scale)
        # Running statistics of returns, for value normalisation (identity when it is off).
        self.register_buffer("ret_mean", torch.zeros(()))
        self.register_buffer("ret_std", torch.ones(()))
        self.register_buffer("ret_count", torch.zeros((), dtype=torch.float64))
        in_dim = self.obs_dim + self.action_dim + 2
        layers: list[nn.Module] = []
        for width in self.config.mlp_hidden:
            layers += [nn.Linear(in_dim, width), nn.Tanh()]
            in_dim = width
        self.encoder = nn.Sequential(*layers)
        self._build_memory(in_dim)
        self.mean_head = nn.Linear(self.memory.width, self.action_dim)
        self.log_std_head = nn.Linear(self.memory.width, self.action_dim)
        self.value_head = nn.Linear(self.memory.width, 1)
        if self.config.weight_init == "reference":
            self._reference_init()
        else:
            nn.init.orthogonal_(self.mean_head.weight, gain=0.01)
            nn.init.zeros_(self.mean_head.bias)
            nn.init.orthogonal_(self.log_std_head.weight, gain=0.01)
        init = float(self.config.init_log_std)
        low, high = self.log_std_bounds
        nn.init.constant_(
            self.log_std_head.bias,
            math.atanh((2 * init - low - high) / (high - low)) if self.config.squash_heads else init,
        )

    def _build_memory(self, input_width: int) -> None:
        """Create the memory :attr:`memory` returns, over encoder outputs of ``input_width``, between the encoder
        and the heads (the random draws of its initialisation fall there).  A policy with another memory overrides
        both, registering its memory under its own attribute name."""
        self.gru = GRUMemory(input_width, self.config.gru_hidden)

    @property
    def memory(self) -> RecurrentMemory:
        """The recurrent memory between the encoder and the heads."""
        return self.gru

    @torch.no_grad()
    def _reference_init(self) -> None:
        """metaworld-algorithms' initialisation (``RL2PolicyConfig.weight_init == "reference"``).  Its flax layers hold
        one [in, out] kernel per GRU gate and one head of 2A outputs (mean ⊕ log σ), so the bounds are those."""

        for layer in self.encoder:
            if isinstance(layer, nn.Linear):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)
        g = self.config.gru_hidden
        gru = dict(self.gru.named_parameters())
        for gate in range(3):  # PyTorch's order: reset, update, new; each slice is one flax kernel
            nn.init.xavier_uniform_(gru["weight_ih_l0"][gate * g : (gate + 1) * g])
            nn.init.orthogonal_(gru["weight_hh_l0"][gate * g : (gate + 1) * g])
        nn.init.zeros_(gru["bias_ih_l0"])
        nn.init.zeros_(gru["bias_hh_l0"])
        head_bound = math.sqrt(6.0 / (g + 2 * self.action_dim))  # Xavier of the reference's one [G, 2A] head
        for head in (self.mean_head, self.log_std_head):
            nn.init.uniform_(head.weight, -head_bound, head_bound)
            nn.init.zeros_(head.bias)

    @property
    def device(self) -> torch.device:
        return self.mean_head.weight.device

    # -- features ---------------------------------------------------------------------------
    def inputs(
        self, obs: torch.Tensor, prev_action: torch.Tensor, prev_reward: torch.Tensor, prev_done: torch.Tensor
    ) -> torch.Tensor:  # [..., O + A + 2]
        action = self.normalize_action(prev_action)
        return torch.cat(
            [
                obs,
                action if self.config.action_input else torch.zeros_like(action),
                (prev_reward * self.config.reward_scale).unsqueeze(-1),
                prev_done.to(obs.dtype).unsqueeze(-1),
            ],
            dim=-1,
        )

    def normalize_action(self, action: torch.Tensor) -> torch.Tensor:
        """Env action → the policy's [-1, 1] units."""
        # the buffers follow the input: the learner prepares trial batches on the CPU for a CUDA policy
        return (action - self.action_bias.to(action.device)) / self.action_scale.to(action.device)

    def denormalize_value(self, value: torch.Tensor) -> torch.Tensor:
        return value * self.ret_std + self.ret_mean

    def update_return_stats(self, returns: torch.Tensor) -> None:
        """Merge a batch of returns into the running mean/std (parallel Welford)."""
        n = returns.numel()
        if n == 0:
            return
        b_mean, b_var = returns.mean().double(), returns.var(unbiased=False).double()
        count = self.ret_count + n
        delta = b_mean - self.ret_mean.double()
        mean = self.ret_mean.double() + delta * n / count
        m2 = self.ret_std.double() ** 2 * self.ret_count + b_var * n + delta**2 * self.ret_count * n / count
        self.ret_mean.copy_(mean.float())
        self.ret_std.copy_((m2 / count).sqrt().clamp_min(1e-4).float())
        self.ret_count.copy_(count)

    @property
    def log_std_bounds(self) -> tuple[float, float]:
        return log_std_bounds(self.config.squash_heads)

    def heads(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """mean [..., A], log_std [..., A], value [...] from memory outputs [..., G]."""
        mean, log_std = self.mean_head(hidden), self.log_std_head(hidden)
        if self.config.squash_heads:
            mean, log_std = torch.tanh(mean), torch.tanh(log_std)
        else:
            log_std = log_std.clamp(*self.log_std_bounds)
        return mean, log_std, self.value_head(hidden).squeeze(-1)

    # -- engine contract --------------------------------------------------------------------
    def initial_state(self, num_slots: int) -> MemoryState:  # [S, G] for the GRU
        return self.memory.initial_state(num_slots, self.device)

    @torch.no_grad()
    def act(self, step: StepBatch, state: MemoryState) -> tuple[torch.Tensor, MemoryState, dict[str, torch.Tensor]]:
        memory = self.memory
        rows = memory.reset(memory.gather(state, step.slot), step.trial_start)  # [R, G]
        x = self.encoder(self.inputs(step.obs, step.prev_action, step.prev_reward, step.prev_done))
        out, rows = memory.step(x, rows)
        mean, log_std, value = self.heads(out)
        a = mean if step.deterministic else mean + log_std.exp() * step.noise  # [R, A] normalised units
        log_prob = gaussian_log_prob(a, mean, log_std)
        state = memory.scatter(state, step.slot, rows)
        action = self.action_bias + self.action_scale * a
        return action, state, {"log_prob": log_prob, "value": self.denormalize_value(value)}

    # -- training ---------------------------------------------------------------------------
    def forward_sequence(
        self, inputs: torch.Tensor, h0: MemoryState
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, MemoryState]:
        """Run sequences: inputs [C, B, O+A+2], h0 (the memory's state of B sequences) → mean [C, B, A], log_std,
        value [C, B], and the state after the last step."""
        mean, log_std, value, trace = self.forward_hidden(inputs, h0)
        return mean, log_std, value, self.memory.handover(trace, -1)

    def forward_hidden(
        self, inputs: torch.Tensor, h0: MemoryState
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Any]:
        """As :meth:`forward_sequence`, with the memory's trace (for the GRU its output, the hidden state after
        every step, [C, B, G]) for :meth:`RecurrentMemory.handover`."""
        out, trace = self.memory.sequence(self.encoder(inputs), h0)
        mean, log_std, value = self.heads(out)
        return mean, log_std, value, trace
