"""RL² (Duan et al. 2016; Wang et al. 2016): a GRU policy whose hidden state carries what it learned
about the task across the episodes of a trial, trained with PPO over whole trials.

Shapes: ``N`` tasks, ``E`` episodes per task, ``H`` horizon, ``k`` episodes per trial, ``T`` trials
(``N * E / k``), ``L`` steps of the longest trial after removing padding, ``B`` sequences in a
minibatch, ``C`` BPTT chunk length, ``O``/``A`` observation/action dims, ``G`` GRU width.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal, get_args

import torch
from torch import nn

from metarl.agent import MetaTestRollouts
from metarl.agents.distributions import action_affine, gaussian_entropy, gaussian_log_prob
from metarl.agents.gru import gru_loop, gru_sequence
from metarl.agents.linear_baseline import baseline_features, discounted_returns, fit_linear_baseline, gae
from metarl.errors import UserError, check_int, check_int_field
from metarl.rollout.background import BackgroundCollect
from metarl.rollout.types import StepBatch, Trajectories
from metarl.stops import stop_point
from metarl.tasks import Task

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0
"""log σ bounds of the linear (unsquashed) heads."""
SQUASHED_LOG_STD = (-1.0, 1.0)
"""log σ bounds of the tanh heads (metaworld-algorithms): σ in [e⁻¹, e] in [-1, 1]-normalised action units."""
Baseline = Literal["linear", "value"]
ChunkOrder = Literal["sequential", "shuffled"]
BASELINES: tuple[str, ...] = get_args(Baseline)
CHUNK_ORDERS: tuple[str, ...] = get_args(ChunkOrder)


def linear_schedule(start: float, end: float, steps: int, over: int) -> float:
    """``start`` moved linearly to ``end`` over ``over`` training env steps, then held: the value after ``steps``."""
    return float(start + (end - start) * min(1.0, steps / over))


def log_std_bounds(squash_heads: bool, log_std_min: float | None) -> tuple[float, float]:
    """(lowest, highest) log σ of the heads: the tanh heads' [-1, 1] or the linear heads' [-5, 2], with the
    lower end moved to ``log_std_min`` when it is set."""
    low, high = SQUASHED_LOG_STD if squash_heads else (LOG_STD_MIN, LOG_STD_MAX)
    return (low if log_std_min is None else float(log_std_min)), high


def _number(value: Any) -> float:
    """``value`` as a float if it is a real number (not a bool), else NaN (which fails every bound check)."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


POLICY_INITS = ("torch", "reference")


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
    mean-action evaluation then lacks (README: Learning on Meta-World)."""
    log_std_cap_end: float | None = None
    """A schedule on the largest log σ: from the heads' upper bound down to this value, linearly over
    ``log_std_cap_steps`` training env steps, then held (None: no schedule).  Exploration early, a policy
    whose mean does the work late (what a mean-action evaluation scores)."""
    log_std_cap_steps: int = 1_000_000
    """Training env steps over which the log σ cap falls to ``log_std_cap_end``."""
    init_log_std: float = 0.0
    """log σ of the untrained policy (in [-1, 1]-normalised action units), set through the log-std head's
    bias; must lie inside the heads' bounds (open interval (-1, 1) with ``squash_heads``, [-5, 2] without)."""
    log_std_min: float | None = None
    """The lowest log σ (None: the heads' own, -1 with tanh heads as metaworld-algorithms, -5 linear).  With
    tanh heads log σ = lo + (1 - lo)(tanh(x) + 1) / 2, which is tanh(x) at the default.  A floor below -1
    lets the sampled policy approach the mean action a deterministic evaluation scores."""
    exploit_episodes: int = 0
    """Training only: the last this many episodes of every training trial act with log σ capped at
    ``exploit_log_std``, in collection and in the PPO update alike, so that the policy is trained to
    succeed with little noise after the episodes before it explored, as the Meta-World protocol scores it
    (sampled adaptation episodes, then mean-action evaluation episodes).  0: off (metaworld-algorithms).
    Must be below ``episodes_per_trial``; evaluation is unchanged."""
    exploit_log_std: float = -2.0
    """The log σ cap of the exploit episodes (may lie below the heads' floor: σ is then this constant)."""
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
        if self.log_std_min is not None:
            top = log_std_bounds(self.squash_heads, None)[1]
            if not -10.0 <= _number(self.log_std_min) < top:
                raise UserError(f"log_std_min must be None or a number in [-10, {top:g}) (the heads' upper log σ), "
                                 f"got {self.log_std_min!r}")  # fmt: skip
        low, high = log_std_bounds(self.squash_heads, self.log_std_min)
        end = self.log_std_cap_end
        if end is not None and not low <= _number(end) <= high:
            raise UserError(f"log_std_cap_end must be None or lie in the heads' log σ bounds [{low:g}, {high:g}], "
                             f"got {end!r}")  # fmt: skip
        check_int_field(self, "log_std_cap_steps")
        if self.weight_init not in POLICY_INITS:
            raise UserError(f"weight_init must be one of {list(POLICY_INITS)}, got {self.weight_init!r}")
        self._check_exploit()
        x = _number(self.init_log_std)
        if not (low < x < high if self.squash_heads else low <= x <= high):
            heads = (
                f"tanh heads: the open interval ({low:g}, {high:g})"
                if self.squash_heads
                else f"linear heads: [{low:g}, {high:g}]"
            )
            raise UserError(f"init_log_std must lie inside the log σ bounds ({heads}), got {self.init_log_std!r}")

    def _check_exploit(self) -> None:
        check_int_field(self, "exploit_episodes", minimum=0)
        high = log_std_bounds(self.squash_heads, None)[1]
        if not -10.0 <= _number(self.exploit_log_std) <= high:
            raise UserError(f"exploit_log_std must be a number in [-10, {high:g}] (the heads' upper log σ), "
                             f"got {self.exploit_log_std!r}")  # fmt: skip


class RL2Policy(nn.Module):
    """obs ⊕ previous action ⊕ scaled previous reward ⊕ done flag → MLP → GRU → Gaussian head + value head.

    The Gaussian has a state-dependent log-std: with ``squash_heads`` (the default, as
    metaworld-algorithms) mean and log σ are ``tanh`` of linear heads, so σ never leaves [e⁻¹, e];
    otherwise the mean is linear and log σ is clamped to [-5, 2].  The value head is trained only
    with the learned-value baseline (``RL2PPOConfig.baseline = "value"``).  The engine calls
    :meth:`act` once per step for all active slots; the hidden state is kept per slot, carried
    across the episodes of a trial and zeroed where ``trial_start`` is set.
    """

    action_bias: torch.Tensor  # [A] buffers (typed for mypy)
    action_scale: torch.Tensor
    ret_mean: torch.Tensor
    ret_std: torch.Tensor
    ret_count: torch.Tensor
    log_std_cap: torch.Tensor

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
        # the log σ cap of the schedule (log_std_cap_end); not saved: the agent sets it from its env steps
        self.register_buffer("log_std_cap", torch.tensor(self.log_std_bounds[1]), persistent=False)
        in_dim = self.obs_dim + self.action_dim + 2
        layers: list[nn.Module] = []
        for width in self.config.mlp_hidden:
            layers += [nn.Linear(in_dim, width), nn.Tanh()]
            in_dim = width
        self.encoder = nn.Sequential(*layers)
        self.gru = nn.GRU(in_dim, self.config.gru_hidden)
        self.mean_head = nn.Linear(self.config.gru_hidden, self.action_dim)
        self.log_std_head = nn.Linear(self.config.gru_hidden, self.action_dim)
        self.value_head = nn.Linear(self.config.gru_hidden, 1)
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
        return log_std_bounds(self.config.squash_heads, self.config.log_std_min)

    def heads(
        self, hidden: torch.Tensor, exploit: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """mean [..., A], log_std [..., A], value [...] from GRU outputs [..., G]; where ``exploit`` [...] is
        set, log σ is capped at ``exploit_log_std`` (the exploit episodes of a training trial)."""
        mean, log_std = self.mean_head(hidden), self.log_std_head(hidden)
        low, high = self.log_std_bounds
        if self.config.squash_heads:
            mean, log_std = torch.tanh(mean), torch.tanh(log_std)
            if low != SQUASHED_LOG_STD[0]:  # the tanh range stretched onto [low, high]
                log_std = low + (high - low) * 0.5 * (log_std + 1.0)
        else:
            log_std = log_std.clamp(low, high)
        if self.config.log_std_cap_end is not None:
            log_std = torch.minimum(log_std, self.log_std_cap)
        if exploit is not None:
            capped = log_std.clamp_max(self.config.exploit_log_std)
            log_std = torch.where(exploit.unsqueeze(-1), capped, log_std)
        return mean, log_std, self.value_head(hidden).squeeze(-1)

    def set_log_std_cap(self, env_steps: int) -> float:
        """Move the log σ cap to where the schedule puts it after ``env_steps`` training steps."""
        high, end = self.log_std_bounds[1], self.config.log_std_cap_end
        cap = high if end is None else linear_schedule(high, end, env_steps, self.config.log_std_cap_steps)
        self.log_std_cap.fill_(cap)
        return cap

    # -- engine contract --------------------------------------------------------------------
    def initial_state(self, num_slots: int) -> torch.Tensor:  # [S, G]
        return torch.zeros(num_slots, self.config.gru_hidden, device=self.device)

    @torch.no_grad()
    def act(
        self, step: StepBatch, state: torch.Tensor, exploit: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        h = state[step.slot]  # [R, G]
        h = torch.where(step.trial_start.unsqueeze(-1), torch.zeros_like(h), h)
        x = self.encoder(self.inputs(step.obs, step.prev_action, step.prev_reward, step.prev_done))
        out, h_new = self.gru(x.unsqueeze(0), h.unsqueeze(0))
        mean, log_std, value = self.heads(out[0], exploit)
        a = mean if step.deterministic else mean + log_std.exp() * step.noise  # [R, A] normalised units
        log_prob = gaussian_log_prob(a, mean, log_std)
        state = state.index_copy(0, step.slot, h_new[0])
        action = self.action_bias + self.action_scale * a
        return action, state, {"log_prob": log_prob, "value": self.denormalize_value(value)}

    # -- training ---------------------------------------------------------------------------
    def forward_sequence(
        self, inputs: torch.Tensor, h0: torch.Tensor, exploit: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run sequences: inputs [C, B, O+A+2], h0 [B, G] → mean [C, B, A], log_std, value [C, B], h_last [B, G]
        (``exploit`` [C, B]: see :meth:`heads`)."""
        mean, log_std, value, hidden = self.forward_hidden(inputs, h0, exploit)
        return mean, log_std, value, hidden[-1]

    def forward_hidden(
        self, inputs: torch.Tensor, h0: torch.Tensor, exploit: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """As :meth:`forward_sequence`, with the hidden state after every step: hidden [C, B, G]."""
        x = self.encoder(inputs)
        if x.device.type == "cpu":  # the same GRU with a fused backward (metarl.agents.gru): fewer calls per step
            out = gru_sequence(self.gru, x, h0)
        else:  # CUDA: nn.GRU runs cuDNN's fused kernels
            out, _ = self.gru(x, h0.unsqueeze(0))
        mean, log_std, value = self.heads(out, exploit)
        return mean, log_std, value, out


# -- trials: from [task, episode, time] to compact per-trial sequences -------------------------


@dataclass
class TrialBatch:
    """Trials as time-major sequences with padding removed between episodes.

    Steps of one trial are contiguous (episode after episode); ``mask`` marks real steps
    (a trial shorter than ``L`` is padded at its end).
    """

    obs: torch.Tensor  # [L, T, O]
    actions: torch.Tensor  # [L, T, A]
    rewards: torch.Tensor  # [L, T]
    prev_action: torch.Tensor  # [L, T, A]
    prev_reward: torch.Tensor  # [L, T]
    prev_done: torch.Tensor  # [L, T] bool: the previous step ended an episode of this trial
    log_prob: torch.Tensor  # [L, T]
    value: torch.Tensor  # [L, T]
    mask: torch.Tensor  # [L, T] bool
    lengths: torch.Tensor  # [T]
    first_success: torch.Tensor | None = None  # [L, T] bool: the first step of its episode with info["success"]
    success: torch.Tensor | None = None  # [L, T] bool: every step with info["success"]

    @property
    def episode_index(self) -> torch.Tensor:  # [L, T] int64: 0 for the trial's first episode, 1 for the next...
        return torch.cumsum(self.prev_done.to(torch.int64), 0)


def trials_from_trajectories(traj: Trajectories) -> TrialBatch:
    """Regroup ``traj`` ([N, E, H, ...] with ``k`` episodes per trial) into compact trial sequences."""
    n, e, h = traj.valid.shape
    k = traj.episodes_per_trial
    if e % k:
        raise ValueError(f"{e} episodes per task is not a multiple of {k} episodes per trial")
    t = n * (e // k)

    def per_trial(x: torch.Tensor) -> torch.Tensor:  # [N, E, H, ...] -> [T, k*H, ...]
        return x.reshape(t, k * h, *x.shape[3:])

    valid = per_trial(traj.valid)  # [T, k*H]
    lengths = valid.sum(1)
    max_len = int(lengths.max())
    # stable sort puts valid steps first, keeping their order
    order = torch.sort((~valid).to(torch.int8), dim=1, stable=True).indices[:, :max_len]  # [T, L]
    mask = torch.arange(max_len).unsqueeze(0) < lengths.unsqueeze(1)  # [T, L]

    def gather(x: torch.Tensor) -> torch.Tensor:  # [T, k*H, ...] -> [L, T, ...], zero where padded
        idx = order.reshape(t, max_len, *([1] * (x.dim() - 2))).expand(t, max_len, *x.shape[2:])
        out = torch.gather(x, 1, idx)
        out = out * mask.reshape(t, max_len, *([1] * (x.dim() - 2))).to(out.dtype)
        return out.transpose(0, 1).contiguous()

    obs = gather(per_trial(traj.obs))
    actions = gather(per_trial(traj.actions))
    rewards = gather(per_trial(traj.rewards))
    done = gather(per_trial((traj.terminated | traj.truncated).to(torch.float32))) > 0  # [L, T]
    prev_action = torch.cat([torch.zeros_like(actions[:1]), actions[:-1]], 0)
    prev_reward = torch.cat([torch.zeros_like(rewards[:1]), rewards[:-1]], 0)
    prev_done = torch.cat([torch.zeros_like(done[:1]), done[:-1]], 0)
    # the engine zeroes prev_action / prev_reward at each episode start (see StepBatch)
    prev_action = prev_action * (~prev_done).unsqueeze(-1).to(prev_action.dtype)
    prev_reward = prev_reward * (~prev_done).to(prev_reward.dtype)
    extras = {name: gather(per_trial(traj.extras[name])) for name in ("log_prob", "value")}
    success = traj.success & traj.valid  # [N, E, H]
    first = success & (torch.cumsum(success.to(torch.int32), dim=-1) == 1)
    return TrialBatch(
        obs=obs,
        actions=actions,
        rewards=rewards,
        prev_action=prev_action,
        prev_reward=prev_reward,
        prev_done=prev_done,
        log_prob=extras["log_prob"],
        value=extras["value"],
        mask=mask.T.contiguous(),
        lengths=lengths,
        first_success=gather(per_trial(first)),
        success=gather(per_trial(success)),
    )


def gae_over_trials(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE along each trial ([L, T] time-major, padded at the end where ``mask`` is False).

    Episode ends inside a trial (terminated or truncated) do not cut the advantage: the next
    episode continues the same meta-episode.  The end of the trial is terminal (no bootstrap).
    Returns ``(advantages, returns)``, zero at padding.
    """
    adv = gae(rewards, values, mask, gamma, lam, dim=0)
    return adv, (adv + values) * mask.to(rewards.dtype)


def chunk_starts_hidden(policy: RL2Policy, inputs: torch.Tensor, chunk: int) -> torch.Tensor:
    """Hidden states at the start of each BPTT chunk: [ceil(L / C), T, G], by one no-grad pass."""
    length, trials, _ = inputs.shape
    h = torch.zeros(trials, policy.config.gru_hidden, device=inputs.device)
    starts = []
    with torch.no_grad():
        for s in range(0, length, chunk):
            starts.append(h)
            _, _, _, h = policy.forward_sequence(inputs[s : s + chunk], h)
    return torch.stack(starts)


def as_chunks(x: torch.Tensor, chunk: int) -> torch.Tensor:
    """[L, T, ...] → [C, ceil(L/C) * T, ...]: chunk j of trial t becomes sequence j * T + t (zero-padded)."""
    length, trials = x.shape[:2]
    n_chunks = -(-length // chunk)
    pad = n_chunks * chunk - length
    if pad:
        x = torch.cat([x, x.new_zeros(pad, *x.shape[1:])], 0)
    x = x.reshape(n_chunks, chunk, trials, *x.shape[2:]).transpose(0, 1)
    return x.reshape(chunk, n_chunks * trials, *x.shape[3:])


# -- PPO over trials ----------------------------------------------------------------------------


def _optional_number_in(value: object, low: float, high: float) -> bool:
    """None, or a finite number (not a bool) in [low, high]."""
    if value is None:
        return True
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return number and math.isfinite(value) and low <= value <= high  # type: ignore[arg-type,operator]


@dataclass(frozen=True)
class RL2PPOConfig:
    """PPO hyperparameters.  Defaults follow metaworld-algorithms' RL²-PPO on Meta-World (its ML1/ML10/ML45
    example configs and ``rl/algorithms/rl2.py``)."""

    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 0.95
    """GAE λ, applied along the whole trial."""
    clip_eps: float = 0.2
    """PPO ratio clip."""
    epochs: int = 10
    """Passes over the batch per update."""
    minibatches: int = 4
    """With chunk_order shuffled: minibatches of whole BPTT sequences per epoch."""
    lr: float = 5e-4
    """Adam learning rate."""
    lr_end: float | None = None
    """Anneal the learning rate linearly from ``lr`` to this over ``lr_anneal_steps`` training env steps, then
    hold it (None: constant ``lr``, the reference).  On ML1-reach, annealing to 0 over 2.5M steps scored 0.28
    held-out with the mean action against 0.74 without (README: Learning on Meta-World), so it stays off."""
    lr_anneal_steps: int = 5_000_000
    """Training env steps over which the learning rate falls to ``lr_end``."""
    max_grad_norm: float = 1.0
    """Gradient-norm clip."""
    ent_coef: float = 5e-3
    """Entropy bonus weight."""
    vf_coef: float = 0.5
    """Value-loss weight (baseline value only)."""
    bptt_chunk: int = 250
    """Truncated-BPTT chunk length in steps."""
    bptt_overlap: int = 50
    """With chunk_order sequential: steps shared by consecutive chunks (chunks start every bptt_chunk -
    bptt_overlap steps; metaworld-algorithms: 50)."""
    train_tail: bool = True
    """With chunk_order sequential: add one last chunk ending at the trial's end when the regular starts leave a
    tail without gradient (5,000-step trials, chunk 250, overlap 50: 25 chunks, the last over steps 4,750-5,000);
    false: metaworld-algorithms' 24, whose last ends at 4,850."""
    chunk_order: ChunkOrder = "sequential"
    """sequential: each Adam step takes the next chunk of every trial, in time order, starting from the
    hidden state the current weights reach (metaworld-algorithms); shuffled: chunks in random minibatches,
    starting from hidden states computed once before the update."""
    baseline: Baseline = "linear"
    """linear: advantages from a linear feature baseline fitted per trial, no value loss (metaworld-algorithms);
    value: the policy's value head, trained with the policy (vf_coef)."""
    normalize_advantages: bool = False
    """Standardise advantages over the batch (off in metaworld-algorithms' Meta-World configs)."""
    target_kl: float | None = None
    """Stop the update early once an Adam step's approx. KL to the behaviour policy exceeds 1.5 x this
    (metaworld-algorithms' target_kl; off by default, as in its configs)."""
    target_kl_log_std: float | None = None
    """With ``target_kl``: the early stop measures KL as if σ were at least e^this.  The approx. KL is
    multiplied by (σ / e^this)² when the batch's mean log σ lies below this: a shift Δμ of the
    mean costs Δμ²/2σ² nats, so under a fixed ``target_kl`` the update shrinks with σ² and stops after a few
    Adam steps once σ is small (README: Learning on Meta-World).  None: the plain approx. KL (the reference)."""
    success_bonus: float = 0.0
    """Add this to the reward the update learns from at the first step of every episode where the env reports
    ``info["success"]`` (0: the env's reward alone, the reference).  The policy's reward input is untouched, so
    evaluation sees what training saw; the protocol's score is success at any step, which this rewards directly.
    Meta-World's reach reward is 98–99% of its maximum at 6 cm while success needs 5 cm.  On ML1-reach with exploit
    episodes a bonus of 100 scored 0.52 held-out with the mean action against 0.66 without (seed 0, 2.5M steps;
    README: Learning on Meta-World), so it stays off."""
    exploit_clip_eps: float | None = None
    """The clip range of the exploit episodes' steps (``policy.exploit_episodes``); None: ``clip_eps``.  The
    same shift Δμ of the mean moves the log-ratio by about Δμ/σ, so at the exploit σ (e^-2 by default) the
    ratio leaves [1 - clip_eps, 1 + clip_eps] about e^2 / σ_explore times sooner than on the explore steps, and
    the clip stops the exploit steps' gradient after a much smaller change of the mean.  A wider range here lets
    them move the mean about as far as the explore steps do.  On ML1-reach, 0.8 scored 0.24 held-out with the
    mean action against 0.66 with the shared clip (seed 0, 2.5M steps; README: Learning on Meta-World): the
    agent stopped adapting, so the default stays None."""
    success_reward: float = 0.0
    """Add this to the reward the update learns from at every step where the env reports ``info["success"]``
    (0: the env's reward alone, the reference).  Unlike ``success_bonus`` it pays for staying inside the success
    region, not for touching it once: a policy whose noise jitters it across Meta-World's 5 cm boundary earns it
    on some steps, one whose mean sits inside earns it on all, so it rewards a precise mean action.  The policy's
    reward input is untouched.  On ML1-reach, ``rl2-ml1-tuned`` with 1.0 scored 0.64 held-out with the mean action
    against 0.74 / 0.72 / 0.56 over three seeds without it (seed 0, 2.5M steps; README), so it stays off."""
    adam_eps: float = 1e-5
    """Adam's ε (metaworld-algorithms, through optax: 1e-8)."""
    autocast_bf16: bool = False
    """Run the update's network passes under bfloat16 autocast (the losses stay float32).  Gradients agree with
    float32 to a cosine of 0.99 per parameter (tests/test_rl2_bf16.py) and an ML1-reach run with it matched
    float32's at 1M env steps (README); opt-in because its speed depends on the CPU's bfloat16 support."""

    def __post_init__(self) -> None:
        for name in ("gamma", "gae_lambda"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise UserError(f"{name} must be in [0, 1], got {value!r}")
        for name in ("clip_eps", "lr", "max_grad_norm"):
            if not getattr(self, name) > 0:
                raise UserError(f"{name} must be positive, got {getattr(self, name)!r}")
        for name in ("epochs", "minibatches", "bptt_chunk"):
            check_int_field(self, name)
        for name in ("ent_coef", "vf_coef"):
            if getattr(self, name) < 0:
                raise UserError(f"{name} must be non-negative, got {getattr(self, name)!r}")
        check_int_field(self, "bptt_overlap", 0)
        if self.bptt_overlap >= self.bptt_chunk:
            raise UserError(
                f"bptt_overlap ({self.bptt_overlap}) must be smaller than bptt_chunk ({self.bptt_chunk}); "
                "give a smaller --bptt-overlap with a shorter --bptt-chunk"
            )
        if self.chunk_order not in CHUNK_ORDERS:
            raise UserError(f"chunk_order must be one of {list(CHUNK_ORDERS)}, got {self.chunk_order!r}")
        if self.baseline not in BASELINES:
            raise UserError(f"baseline must be one of {list(BASELINES)}, got {self.baseline!r}")
        for name in ("normalize_advantages", "autocast_bf16", "train_tail"):
            if not isinstance(getattr(self, name), bool):
                raise UserError(f"{name} must be true or false, got {getattr(self, name)!r}")
        self._check_optional_fields()

    def _check_optional_fields(self) -> None:
        if self.target_kl is not None and not (isinstance(self.target_kl, int | float) and self.target_kl > 0):
            raise UserError(f"target_kl must be a positive number or None, got {self.target_kl!r}")
        if not _optional_number_in(self.target_kl_log_std, -10.0, 2.0):
            raise UserError(f"target_kl_log_std must be None or a log σ in [-10, 2], got {self.target_kl_log_std!r}")
        check_int_field(self, "lr_anneal_steps")
        if self.adam_eps is None or not _optional_number_in(self.adam_eps, 1e-12, 1.0):
            raise UserError(f"adam_eps must be a number in [1e-12, 1], got {self.adam_eps!r}")
        if self.success_bonus is None or not _optional_number_in(self.success_bonus, 0.0, 1e6):
            raise UserError(f"success_bonus must be a number in [0, 1e6], got {self.success_bonus!r}")
        if not _optional_number_in(self.exploit_clip_eps, 1e-6, 10.0):
            raise UserError(f"exploit_clip_eps must be None or a number in (0, 10], got {self.exploit_clip_eps!r}")
        if self.success_reward is None or not _optional_number_in(self.success_reward, 0.0, 1e6):
            raise UserError(f"success_reward must be a number in [0, 1e6], got {self.success_reward!r}")
        if not _optional_number_in(self.lr_end, 0.0, self.lr):
            raise UserError(f"lr_end must be None or a number in [0, lr={self.lr:g}], got {self.lr_end!r}")


def chunk_starts(length: int, chunk: int, overlap: int, tail: bool = True) -> list[int]:
    """Start steps of the sequential schedule's chunks over a trial of ``length`` steps.

    metaworld-algorithms' starts ``0, C-O, 2(C-O), ...`` while a whole chunk fits; with ``tail`` metarl adds one
    last chunk ending at ``length`` when those leave a tail untrained (for 5,000-step trials, C 250, O 50:
    24 chunks ending at 4,850, plus one at 4,750-5,000).
    """
    chunk = min(chunk, length)
    stride = chunk - min(overlap, chunk - 1)
    starts = list(range(0, length - chunk + 1, stride))
    if tail and starts[-1] + chunk < length:
        starts.append(length - chunk)
    return starts


def optimizer_steps_per_update(config: RL2PPOConfig, trial_length: int, num_chunk_sequences: int) -> int:
    """Adam steps one :func:`ppo_update` takes: epochs x chunks (sequential) or epochs x minibatches (shuffled)."""
    if config.chunk_order == "sequential":
        return config.epochs * len(
            chunk_starts(trial_length, config.bptt_chunk, config.bptt_overlap, config.train_tail)
        )
    return config.epochs * min(config.minibatches, num_chunk_sequences)


def discounted_trial_returns(rewards: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """Discounted returns along each trial ([L, T] time-major), across its episode boundaries; 0 at padding."""
    return discounted_returns(rewards.T, mask.T.to(rewards.dtype), gamma).T


def linear_trial_baseline(
    inputs: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, reg: float = 1e-5
) -> torch.Tensor:
    """metaworld-algorithms' RL² baseline: the linear feature baseline fitted per trial, the whole trial as one
    episode (``t`` counts steps from the trial's start), on the policy inputs.  inputs [L, T, D], returns/mask
    [L, T] → values [L, T].
    """
    valid = mask.T.unsqueeze(1)  # [T, 1, L]: each trial one group of one long episode
    feats = baseline_features(inputs.transpose(0, 1).unsqueeze(1).to(torch.float64), valid)
    return fit_linear_baseline(feats, returns.T.unsqueeze(1), valid.to(returns.dtype), reg).squeeze(1).T


@dataclass
class _PPOBatch:
    """What both chunk schedules read, time-major [L, T, ...] on the policy's device."""

    inputs: torch.Tensor
    actions: torch.Tensor  # normalised units
    old_log_prob: torch.Tensor
    adv: torch.Tensor
    ret: torch.Tensor  # value targets (value baseline only)
    mask: torch.Tensor
    exploit: torch.Tensor | None = None  # [L, T] bool: an exploit episode's step; None: exploit episodes off

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> _PPOBatch:
        """The same batch with ``fn`` applied to every field."""
        return _PPOBatch(**{f.name: None if (x := getattr(self, f.name)) is None else fn(x) for f in fields(self)})  # type: ignore[arg-type]

    def __getitem__(self, index: Any) -> _PPOBatch:
        """Every field indexed alike (a time slice, a minibatch of sequences)."""
        return self.map(lambda x: x[index])


def _ppo_losses(
    config: RL2PPOConfig, mean: torch.Tensor, log_std: torch.Tensor, value: torch.Tensor, part: _PPOBatch
) -> tuple[torch.Tensor, dict[str, float]]:
    """The clipped PPO loss (plus the value loss with the learned baseline) as masked means over real steps."""
    m = part.mask.to(torch.float32)
    denom = m.sum().clamp_min(1.0)
    log_prob = gaussian_log_prob(part.actions, mean, log_std)
    log_ratio = log_prob - part.old_log_prob
    ratio = log_ratio.exp()
    adv = part.adv
    clip: float | torch.Tensor = config.clip_eps
    if config.exploit_clip_eps is not None and part.exploit is not None:
        clip = torch.where(part.exploit, config.exploit_clip_eps, config.clip_eps)
    pg = -torch.min(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv)
    policy_loss = (pg * m).sum() / denom
    entropy = (gaussian_entropy(log_std) * m).sum() / denom
    loss = policy_loss - config.ent_coef * entropy
    stats = {"policy_loss": float(policy_loss.detach()), "entropy": float(entropy.detach())}
    if config.baseline == "value":
        value_loss = 0.5 * ((value - part.ret).pow(2) * m).sum() / denom
        loss = loss + config.vf_coef * value_loss
        stats["value_loss"] = float(value_loss.detach())
    with torch.no_grad():
        kl = ((ratio - 1) - log_ratio) * m
        stats["approx_kl"] = float(kl.sum() / denom)
        if config.target_kl_log_std is not None or part.exploit is not None:
            stats["stop_kl"] = _stop_kl(config, kl, log_std, m if part.exploit is None else m * ~part.exploit)
        clipped = ((ratio - 1).abs() > clip).float() * m
        stats["clip_frac"] = float(clipped.sum() / denom)
        if part.exploit is not None:
            stats["exploit_clip_frac"] = float((clipped * part.exploit).sum() / (m * part.exploit).sum().clamp_min(1.0))
    return loss, stats


def _stop_kl(config: RL2PPOConfig, kl: torch.Tensor, log_std: torch.Tensor, m: torch.Tensor) -> float:
    """The KL the early stop reads: the mean of ``kl`` over the steps ``m`` marks (the explore steps: an exploit
    episode's σ is set by the cap, and the same shift of the mean would cost it many times the KL), times
    (σ / e^target_kl_log_std)² where that σ is smaller: the KL of the same mean shift at σ = e^ref."""
    d = m.sum().clamp_min(1.0)
    out = float((kl * m).sum() / d)
    if config.target_kl_log_std is not None:
        mean_log_std = float((log_std.mean(-1) * m).sum() / d)
        out *= math.exp(-2 * max(0.0, config.target_kl_log_std - mean_log_std))
    return out


def _kl_stop(stats: Mapping[str, list[float]], config: RL2PPOConfig) -> bool:
    """True once the last Adam step's approx. KL passed 1.5 x target_kl (metaworld-algorithms' rule); with
    ``target_kl_log_std`` or exploit episodes, the KL :func:`_stop_kl` gives (``stop_kl``)."""
    kls = stats.get("stop_kl", stats.get("approx_kl"))
    return config.target_kl is not None and bool(kls) and kls[-1] > 1.5 * config.target_kl  # type: ignore[index]


def _network_precision(policy: RL2Policy, config: RL2PPOConfig) -> torch.autocast:
    """bfloat16 autocast for the update's network passes when ``config.autocast_bf16``, else a no-op."""
    return torch.autocast(device_type=policy.device.type, dtype=torch.bfloat16, enabled=config.autocast_bf16)


def _float32(*xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return tuple(x.float() for x in xs)


def _train_step(
    policy: RL2Policy,
    optimizer: torch.optim.Optimizer,
    config: RL2PPOConfig,
    heads: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    part: _PPOBatch,
    stats: dict[str, list[float]],
) -> None:
    """One Adam step on the PPO loss of ``part`` given the policy's (mean, log_std, value) there; records its stats."""
    loss, st = _ppo_losses(config, *heads, part)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    st["grad_norm"] = float(nn.utils.clip_grad_norm_(policy.parameters(), config.max_grad_norm))
    optimizer.step()
    for k, v in st.items():
        stats.setdefault(k, []).append(v)
    if len(stats["policy_loss"]) == 1:  # a test may stop the run here, partway through the update
        stop_point("update")


def _update_sequential(
    policy: RL2Policy, optimizer: torch.optim.Optimizer, b: _PPOBatch, config: RL2PPOConfig
) -> dict[str, list[float]]:
    """metaworld-algorithms' schedule: per epoch, the chunks of all trials in time order, one Adam step each;
    each chunk starts from the hidden state the previous chunk's forward pass (before its step) reached."""
    length, trials = b.mask.shape
    chunk = min(config.bptt_chunk, length)
    starts = chunk_starts(length, config.bptt_chunk, config.bptt_overlap, config.train_tail)
    stats: dict[str, list[float]] = {}
    for _ in range(config.epochs):
        h = torch.zeros(trials, policy.config.gru_hidden, device=b.inputs.device)  # the state before step starts[j]
        for j, s in enumerate(starts):
            if _kl_stop(stats, config):
                return stats
            part = b[s : s + chunk]
            with _network_precision(policy, config):
                mean, log_std, value, hidden = policy.forward_hidden(part.inputs, h, part.exploit)
            mean, log_std, value = _float32(mean, log_std, value)
            if j + 1 < len(starts):  # the state after step starts[j + 1] - 1, carried without gradient
                h = hidden[starts[j + 1] - s - 1].detach().float()
            _train_step(policy, optimizer, config, (mean, log_std, value), part, stats)
    return stats


def _update_shuffled(
    policy: RL2Policy,
    optimizer: torch.optim.Optimizer,
    b: _PPOBatch,
    config: RL2PPOConfig,
    generator: torch.Generator | None,
) -> dict[str, list[float]]:
    """Chunks of every trial, hidden states at their starts computed once, in random minibatches."""
    chunk = min(config.bptt_chunk, b.inputs.shape[0])
    with _network_precision(policy, config):
        h0 = chunk_starts_hidden(policy, b.inputs, chunk).float().reshape(-1, policy.config.gru_hidden)  # [M, G]
    seq = b.map(lambda x: as_chunks(x, chunk))
    keep = seq.mask.any(0)  # drop all-padding chunks
    seq, h0 = seq[:, keep], h0[keep]
    num_seq = int(keep.sum())
    stats: dict[str, list[float]] = {}
    for _ in range(config.epochs):
        perm = torch.randperm(num_seq, generator=generator).to(b.inputs.device)
        for idx in perm.chunk(min(config.minibatches, num_seq)):
            if _kl_stop(stats, config):
                return stats
            with _network_precision(policy, config):
                part = seq[:, idx]
                mean, log_std, value, _ = policy.forward_sequence(part.inputs, h0[idx], part.exploit)
            mean, log_std, value = _float32(mean, log_std, value)
            _train_step(policy, optimizer, config, (mean, log_std, value), part, stats)
    return stats


def exploit_steps(episode_index: torch.Tensor, episodes_per_trial: int, exploit_episodes: int) -> torch.Tensor:
    """Where the step of episode ``episode_index`` (0-based within its trial) is in an exploit episode: one
    of the trial's last ``exploit_episodes``."""
    return episode_index >= episodes_per_trial - exploit_episodes if exploit_episodes else episode_index < 0


def learning_rewards(batch: TrialBatch, success_bonus: float, success_reward: float = 0.0) -> torch.Tensor:
    """The rewards the update learns from: the env's, plus ``success_bonus`` at each episode's first success
    and ``success_reward`` at every successful step."""
    rewards = batch.rewards
    if success_bonus and batch.first_success is not None:
        rewards = rewards + success_bonus * batch.first_success.to(rewards.dtype)
    if success_reward and batch.success is not None:
        rewards = rewards + success_reward * batch.success.to(rewards.dtype)
    return rewards


def ppo_update(
    policy: RL2Policy,
    optimizer: torch.optim.Optimizer,
    traj: Trajectories,
    config: RL2PPOConfig,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """One PPO update over whole trials with truncated BPTT; returns loss metrics (means over Adam steps),
    ``optimizer_steps`` and the baseline's ``explained_variance``."""
    device = policy.device
    batch = trials_from_trajectories(traj)
    mask = batch.mask
    inputs = policy.inputs(batch.obs, batch.prev_action, batch.prev_reward, batch.prev_done)
    rewards = learning_rewards(batch, config.success_bonus, config.success_reward)
    if config.baseline == "linear":
        values = linear_trial_baseline(inputs, discounted_trial_returns(rewards, mask, config.gamma), mask)
    else:
        values = batch.value
    adv, ret = gae_over_trials(rewards, values, mask, config.gamma, config.gae_lambda)
    sel_ret, sel_val = ret[mask], values[mask]
    var_ret = float(sel_ret.var()) if sel_ret.numel() > 1 else 0.0
    explained = 1.0 - float((sel_ret - sel_val).var()) / var_ret if var_ret > 0 else float("nan")
    if config.baseline == "value" and policy.config.normalize_value:
        policy.update_return_stats(ret[mask].to(device))
        ret = ((ret - policy.ret_mean.cpu()) / policy.ret_std.cpu()) * mask
    if config.normalize_advantages:
        sel = adv[mask]
        adv = (adv - sel.mean()) / (sel.std() + 1e-8) * mask
    b = _PPOBatch(
        inputs=inputs.to(device),
        actions=policy.normalize_action(batch.actions.to(device)),
        old_log_prob=batch.log_prob.to(device),
        adv=adv.to(device),
        ret=ret.to(device),
        mask=mask.to(device),
        exploit=(
            exploit_steps(batch.episode_index, traj.episodes_per_trial, policy.config.exploit_episodes).to(device)
            if policy.config.exploit_episodes
            else None
        ),
    )
    if config.chunk_order == "sequential":
        stats = _update_sequential(policy, optimizer, b, config)
    else:
        stats = _update_shuffled(policy, optimizer, b, config, generator)
    out = {k: sum(v) / len(v) for k, v in stats.items()}
    out["optimizer_steps"] = float(len(stats.get("policy_loss", [])))
    # before the first Adam step: how far the policy already is from the one that sampled the batch
    # (about 0 when synchronous; the lag's KL with --overlap)
    out["behaviour_kl"] = stats["approx_kl"][0] if stats.get("approx_kl") else float("nan")
    out["explained_variance"] = explained
    out["advantage_std"] = float(adv[mask].std()) if int(mask.sum()) > 1 else 0.0
    return out


# -- the agent ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RL2Config:
    """RL² agent settings."""

    episodes_per_trial: int = 10
    """Consecutive episodes of one task that share the hidden state (a trial)."""
    policy: RL2PolicyConfig = RL2PolicyConfig()
    ppo: RL2PPOConfig = RL2PPOConfig()

    def __post_init__(self) -> None:
        check_int_field(self, "episodes_per_trial")
        if self.policy.exploit_episodes >= self.episodes_per_trial:
            raise UserError(
                f"policy.exploit_episodes ({self.policy.exploit_episodes}) must be below episodes_per_trial "
                f"({self.episodes_per_trial}): the episodes before them explore"
            )
        if self.ppo.exploit_clip_eps is not None and not self.policy.exploit_episodes:
            raise UserError(
                f"ppo.exploit_clip_eps ({self.ppo.exploit_clip_eps}) needs exploit episodes: "
                "set policy.exploit_episodes too, or drop ppo.exploit_clip_eps"
            )


class RL2Agent:
    """RL² with PPO over trials.  ``meta_train_step`` collects ``episodes_per_task`` episodes per task in
    trials of ``episodes_per_trial`` and takes one PPO update; ``meta_test`` runs one trial of
    adaptation + evaluation episodes per task, keeping the hidden state throughout.
    """

    name = "rl2"
    adaptation_unit = "episodes"
    metaworld_info_in_obs = True  # as metaworld-algorithms' test envs (recurrent_info_in_obs)

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        config: RL2Config,
        *,
        episodes_per_task: int,
        seed: int = 0,
        device: str | torch.device = "cpu",
        action_low: Any = None,
        action_high: Any = None,
    ) -> None:
        if episodes_per_task % config.episodes_per_trial:
            raise UserError(
                f"episodes_per_task ({episodes_per_task}) must be a multiple of episodes_per_trial "
                f"({config.episodes_per_trial}): RL² collects whole trials"
            )
        self.config = config
        self.episodes_per_task = episodes_per_task
        torch.manual_seed(seed)
        self.policy = RL2Policy(obs_dim, action_dim, config.policy, action_low, action_high).to(device)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=config.ppo.lr, eps=config.ppo.adam_eps)
        self.generator = torch.Generator().manual_seed(seed)
        self.env_steps = 0  # training steps so far, for the log σ cap schedule
        self.updates = 0  # PPO updates so far: the policy version a batch is tagged with
        self._pending: dict[str, Any] | None = None  # --overlap: the next batch, collected during the last update

    def learning_rate(self, env_steps: int) -> float:
        """The Adam learning rate the schedule gives after ``env_steps`` training steps."""
        ppo = self.config.ppo
        if ppo.lr_end is None:
            return float(ppo.lr)
        return linear_schedule(ppo.lr, ppo.lr_end, env_steps, ppo.lr_anneal_steps)

    def _set_schedules(self) -> float:
        """Move the log σ cap and the learning rate to where their schedules put them; returns the cap."""
        lr = self.learning_rate(self.env_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return self.policy.set_log_std_cap(self.env_steps)

    def _behaviour(self, policy: RL2Policy) -> Any:
        """What collects training batches: ``policy``, wrapped to cap σ in exploit episodes when they are on."""
        if policy.config.exploit_episodes:
            return _ExploitingPolicy(policy, self.config.episodes_per_trial)
        return policy

    def _collect(self, engine: Any, tasks: Sequence[Task]) -> Trajectories:
        return engine.collect(
            self._behaviour(self.policy), list(tasks), episodes_per_task=self.episodes_per_task,
            episodes_per_trial=self.config.episodes_per_trial,
        )  # fmt: skip

    def meta_train_step(self, engine: Any, tasks: Sequence[Task]) -> dict[str, float]:
        cap = self._set_schedules()
        t0 = time.perf_counter()
        traj = self._collect(engine, tasks)
        t1 = time.perf_counter()
        losses = ppo_update(self.policy, self.optimizer, traj, self.config.ppo, self.generator)
        t2 = time.perf_counter()
        self.updates += 1
        return self._step_metrics(traj, losses, cap, sampling_s=t1 - t0, learning_s=t2 - t1)

    def meta_train_step_overlapped(
        self, engine: Any, tasks: Sequence[Task], next_tasks: Sequence[Task] | None
    ) -> dict[str, float]:
        """:meth:`meta_train_step` with sampling overlapped with learning (``--overlap``).

        The update for ``tasks`` uses the batch the previous call collected for them with the policy as it
        was before that call's update: one iteration of policy lag, and PPO's ratio is taken against the
        behaviour log-probabilities stored with the batch.  Meanwhile a frozen copy of the policy collects the
        batch for ``next_tasks`` in a background thread; it is kept (and checkpointed) for the next call.
        Without such a batch (the first iteration) ``tasks`` are collected first, on-policy."""
        cap = self._set_schedules()
        t0 = time.perf_counter()
        pending, self._pending = self._pending, None
        if pending is not None and pending["traj"]["task_ids"] == [t.id for t in tasks]:
            traj, version = Trajectories.from_state(pending["traj"], tasks), int(pending["version"])
        else:
            traj, version = self._collect(engine, tasks), self.updates
        t1 = time.perf_counter()
        job = None
        if next_tasks:
            behaviour = self._behaviour(copy.deepcopy(self.policy))  # the learner changes self.policy meanwhile
            job = BackgroundCollect(
                engine, behaviour, next_tasks, self.episodes_per_task, self.config.episodes_per_trial
            )
        try:
            losses = ppo_update(self.policy, self.optimizer, traj, self.config.ppo, self.generator)
            t2 = time.perf_counter()
            ahead = job.result() if job is not None else None
        except BaseException:  # Ctrl-C, SIGTERM, an error: stop the collect before the engine is closed
            if job is not None:
                job.cancel()
            raise
        t3 = time.perf_counter()
        if ahead is not None:
            self._pending = {"traj": ahead.to_state(), "version": self.updates}
        lag = self.updates - version
        self.updates += 1
        metrics = self._step_metrics(traj, losses, cap, sampling_s=t1 - t0, learning_s=t2 - t1)
        metrics["time/sampling_wait_s"] = t3 - t2  # the background collect outlasting the update
        metrics["overlap/policy_lag"] = float(lag)
        return metrics

    def _step_metrics(
        self, traj: Trajectories, losses: Mapping[str, float], cap: float, *, sampling_s: float, learning_s: float
    ) -> dict[str, float]:
        returns = traj.episode_returns  # [N, E]
        success = traj.episode_success.float()
        k = self.config.episodes_per_trial
        by_position = returns.reshape(returns.shape[0], -1, k)  # [N, trials, k]
        self.env_steps += int(traj.num_steps)
        return {
            "env_steps": float(traj.num_steps),
            "charts/episode_return": float(returns.mean()),
            "charts/success_rate": float(success.mean()),
            "charts/first_episode_return": float(by_position[..., 0].mean()),
            "charts/last_episode_return": float(by_position[..., -1].mean()),
            **{f"losses/{name}": value for name, value in losses.items()},
            **({"charts/log_std_cap": cap} if self.config.policy.log_std_cap_end is not None else {}),
            **self._exploit_metrics(success),
            **({"charts/lr": self.optimizer.param_groups[0]["lr"]} if self.config.ppo.lr_end is not None else {}),
            "time/sampling_s": sampling_s,
            "time/learning_s": learning_s,
        }

    def _exploit_metrics(self, success: torch.Tensor) -> dict[str, float]:
        """With exploit episodes: success in them and in the episodes before (success [N, E])."""
        n, k = self.config.policy.exploit_episodes, self.config.episodes_per_trial
        if not n:
            return {}
        by_position = success.reshape(success.shape[0], -1, k)  # [N, trials, k]
        return {
            "charts/exploit_success_rate": float(by_position[..., k - n :].mean()),
            "charts/explore_success_rate": float(by_position[..., : k - n].mean()),
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
        """One trial per task: ``adaptation_episodes`` sampled episodes, then ``eval_episodes`` evaluation episodes
        that each start from the hidden state reached after the adaptation episodes (as Meta-World's evaluator
        does), so an evaluation episode never learns from an earlier one.  ``deterministic`` makes the
        evaluation episodes take the mean action; adaptation episodes are always sampled (as metaworld-algorithms
        does: they are how the agent explores).  ``feedback=False`` is the adaptation control: the previous
        reward enters the input as 0 throughout the trial, so the agent cannot learn the task from its rewards.
        ``sample_adaptation=False`` (with ``deterministic``) takes the adaptation episodes on the mean action too.
        """
        total = adaptation_episodes + eval_episodes
        policy = AdaptedStatePolicy(
            self.policy, adaptation_episodes, reward_feedback=feedback, deterministic_eval=deterministic
        )
        traj = engine.collect(
            policy, list(tasks), episodes_per_task=total, episodes_per_trial=total,
            deterministic=deterministic and not sample_adaptation,
        )  # fmt: skip
        success = traj.episode_success.float()  # [N, K+n]
        returns = traj.episode_returns
        k = adaptation_episodes
        curve_s = torch.cat([success[:, :k], success[:, k:].mean(1, keepdim=True)], 1)
        curve_r = torch.cat([returns[:, :k], returns[:, k:].mean(1, keepdim=True)], 1)
        return MetaTestRollouts(
            tasks=list(traj.tasks),
            curve_success=curve_s,
            curve_return=curve_r,
            eval_success=traj.episode_success[:, k:],
            eval_return=returns[:, k:],
            unit="episodes",
        )

    def adapt(self, engine: Any, tasks: Sequence[Task], adaptation_episodes: int) -> AdaptedRL2Policy:
        """One trial of ``adaptation_episodes`` sampled episodes per task; the adapted policy starts every episode
        from the hidden state its task reached at the end of them (as a meta-test's evaluation episodes do)."""
        check_int("adaptation_episodes", adaptation_episodes, 0)
        if getattr(engine, "policy_runs_remotely", False):
            raise UserError(
                "RL²'s adapt() reads each task's hidden state from the policy as it acts, which a Ray engine runs "
                "in its actors; use a process or inline engine (meta_test and metarl eval work on any backend)"
            )
        tasks = list(tasks)
        recorder = _FinalHidden(self.policy, len(tasks))
        if adaptation_episodes:
            engine.collect(
                recorder, tasks, episodes_per_task=adaptation_episodes, episodes_per_trial=adaptation_episodes
            )
        return AdaptedRL2Policy(self.policy, recorder.final, adapted=adaptation_episodes > 0)

    def eval_slots(self, adaptation_episodes: int, eval_episodes: int) -> int:
        return 1  # a meta-test is one trial per task

    def metaworld_adapter(
        self, num_envs: int, *, deterministic: bool, seed: int, info_in_obs: bool = False, exact: bool = False
    ) -> Any:
        from metarl.agents.rl2_metaworld import RL2MetaWorldAgent

        return RL2MetaWorldAgent(
            self.policy, num_envs, deterministic=deterministic, seed=seed, info_in_obs=info_in_obs,
            deterministic_adaptation=exact,
        )  # fmt: skip

    @property
    def metaworld_adaptation_steps(self) -> int:
        return 1  # the evaluator's adapt() only snapshots the hidden state

    def learner_record(self) -> dict[str, str]:
        return {"gru_loop": gru_loop(self.config.policy.gru_hidden, self.policy.device)}

    def state_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "env_steps": self.env_steps,
            "updates": self.updates,
            "pending": self._pending,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.env_steps = int(state.get("env_steps", 0))  # checkpoints from before the schedule lack it
        self.updates = int(state.get("updates", 0))
        self._pending = state.get("pending")
        self._set_schedules()


def build(observation_space: Any, action_space: Any, config: RL2Config, train: Any, device: torch.device) -> RL2Agent:
    """Agent factory used by the training loop (``train`` is a :class:`metarl.config.TrainConfig`)."""
    return RL2Agent(
        int(math.prod(observation_space.shape)),
        int(math.prod(action_space.shape)),
        config,
        episodes_per_task=train.episodes_per_task,
        seed=train.seed,
        device=device,
        action_low=action_space.low,
        action_high=action_space.high,
    )


class AdaptedStatePolicy:
    """An RL² policy for meta-tests: after ``k`` episodes of a trial, every later episode starts from the
    hidden state reached at the end of episode ``k`` (the adapted state), not from where the previous
    evaluation episode left it.

    ``deterministic_eval``: the evaluation episodes (after the ``k`` adaptation episodes) take the mean
    action, the adaptation episodes stay sampled.  ``reward_feedback=False``: the previous reward enters
    the input as 0 in every episode of the trial (the no-feedback control).

    State per slot: (hidden, snapshot of the adapted hidden, episode number within the trial).
    """

    def __init__(
        self, policy: RL2Policy, k: int, reward_feedback: bool = True, deterministic_eval: bool = False
    ) -> None:
        self.policy = policy
        self.k = int(k)
        self.reward_feedback = reward_feedback
        self.deterministic_eval = deterministic_eval
        self.device = policy.device

    def initial_state(self, num_slots: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.policy.initial_state(num_slots)
        return h, torch.zeros_like(h), torch.zeros(num_slots, dtype=torch.long, device=h.device)

    @torch.no_grad()
    def act(
        self, step: StepBatch, state: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]:
        hidden, snapshot, count = state
        c, count = _count_episodes(count, step, first=1)
        first_eval = step.episode_start & (c == self.k + 1)  # the adapted state: snapshot it
        adapted = torch.where(step.trial_start.unsqueeze(-1), torch.zeros_like(hidden[step.slot]), hidden[step.slot])
        snapshot = snapshot.index_copy(0, step.slot[first_eval], adapted[first_eval])
        later = step.episode_start & (c > self.k + 1)  # later evaluation episodes: restore it
        hidden = hidden.index_copy(0, step.slot[later], snapshot[step.slot[later]])
        if not self.reward_feedback:
            step.prev_reward = torch.zeros_like(step.prev_reward)
        if self.deterministic_eval and not step.deterministic:
            step.noise = torch.where((c > self.k).unsqueeze(-1), torch.zeros_like(step.noise), step.noise)
        action, hidden, extras = self.policy.act(step, hidden)
        return action, (hidden, snapshot, count), extras


def _count_episodes(count: torch.Tensor, step: StepBatch, first: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's episode number within its trial (``first`` at a trial's start, one more at each episode
    start) and the per-slot ``count`` updated with it."""
    c = count[step.slot]
    c = torch.where(step.trial_start, torch.full_like(c, first), torch.where(step.episode_start, c + 1, c))
    return c, count.index_copy(0, step.slot, c)


class _ExploitingPolicy:
    """The RL² policy collecting training trials with exploit episodes: it counts each slot's episode within
    its trial and caps log σ in the trial's last ``exploit_episodes`` (:meth:`RL2Policy.heads`), as the
    update does from the episode index of each step.  State per slot: (hidden, episode index from 0)."""

    def __init__(self, policy: RL2Policy, episodes_per_trial: int) -> None:
        self.policy = policy
        self.device = policy.device
        self.episodes_per_trial = int(episodes_per_trial)

    def initial_state(self, num_slots: int) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.policy.initial_state(num_slots)
        return h, torch.zeros(num_slots, dtype=torch.long, device=h.device)

    @torch.no_grad()
    def act(
        self, step: StepBatch, state: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]:
        hidden, count = state
        c, count = _count_episodes(count, step, first=0)
        exploit = exploit_steps(c, self.episodes_per_trial, self.policy.config.exploit_episodes)
        action, hidden, extras = self.policy.act(step, hidden, exploit)
        return action, (hidden, count), extras


class _FinalHidden:
    """The RL² policy, recording each task's hidden state after its latest step (``final[task]``)."""

    def __init__(self, policy: RL2Policy, num_tasks: int) -> None:
        self.policy = policy
        self.device = policy.device
        self.final = policy.initial_state(num_tasks)

    def initial_state(self, num_slots: int) -> torch.Tensor:
        return self.policy.initial_state(num_slots)

    @torch.no_grad()
    def act(self, step: StepBatch, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        action, state, extras = self.policy.act(step, state)
        self.final = self.final.index_copy(0, step.task, state[step.slot])
        return action, state, extras


class AdaptedRL2Policy:
    """What :meth:`RL2Agent.adapt` returns: for ``engine.collect`` on the same task list, every episode of
    task ``i`` starts from ``hidden[i]`` (the state after its adaptation episodes) with the done flag set,
    exactly as the evaluation episodes of a meta-test start; without adaptation (``adapted=False``) from a
    fresh trial.  ``act`` takes the engine's ``deterministic`` (evaluation on the mean action) as given."""

    def __init__(self, policy: RL2Policy, hidden: torch.Tensor, *, adapted: bool = True) -> None:
        self.policy = policy
        self.device = policy.device
        self.hidden = hidden
        self.adapted = adapted

    def initial_state(self, num_slots: int) -> torch.Tensor:
        return self.policy.initial_state(num_slots)

    @torch.no_grad()
    def act(self, step: StepBatch, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        if self.adapted:
            start = step.episode_start
            state = state.index_copy(0, step.slot[start], self.hidden[step.task[start]])
            step.prev_done = step.prev_done | start
            step.trial_start = torch.zeros_like(step.trial_start)
        return self.policy.act(step, state)
