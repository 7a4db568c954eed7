"""The linear feature baseline of garage and MAML, shared by MAML (per task, per episode) and RL² (per trial):
a ridge fit of discounted returns on ``[x, x², t, t², t³, 1]`` (x clipped to ±10, t = step / 100).

Shapes: ``N`` groups fitted apart (tasks, or trials), ``E`` episodes, ``H`` steps, ``O``/``D`` input/feature dims.
"""

from __future__ import annotations

import torch


def discounted_returns(rewards: torch.Tensor, valid: torch.Tensor, gamma: float) -> torch.Tensor:
    """Returns-to-go along the last axis ([..., H]); zero past each episode's end (no bootstrap)."""
    out = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[..., 0])
    r = rewards * valid
    for t in range(rewards.shape[-1] - 1, -1, -1):
        running = r[..., t] + gamma * running * valid[..., t]
        out[..., t] = running
    return out


def gae(
    rewards: torch.Tensor, values: torch.Tensor, valid: torch.Tensor, gamma: float, lam: float, dim: int = -1
) -> torch.Tensor:
    """GAE(γ, λ) along ``dim`` of sequences padded at their end where ``valid`` is False; the value past a
    sequence's last valid step is 0 (its end is terminal, no bootstrap); zero at padding.

    One recursion for both agents; what a sequence is, is the caller's boundary rule: MAML passes
    ``[..., H]`` episodes (an episode end cuts the advantage), RL² passes ``[L, T]`` whole trials (the episode
    ends inside a trial do not: the next episode continues the same meta-episode)."""
    r, v, m = (x.movedim(dim, -1) for x in (rewards, values, valid.to(rewards.dtype)))
    adv = torch.zeros_like(r)
    last = torch.zeros_like(r[..., 0])
    next_value = torch.zeros_like(v[..., 0])
    for t in range(r.shape[-1] - 1, -1, -1):
        # next_value and last are 0 past the sequence's last real step, because padding is masked out
        delta = r[..., t] + gamma * next_value - v[..., t]
        last = (delta + gamma * lam * last) * m[..., t]
        adv[..., t] = last
        next_value = v[..., t] * m[..., t]
    return adv.movedim(-1, dim)


def baseline_features(obs: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """garage/MAML linear-baseline features of [N, E, H, O] observations.

    ``[obs, obs², t, t², t³, 1]`` with ``t = step / 100`` and obs clipped to ±10; zero on padding.
    """
    h = obs.shape[2]
    o = obs.clamp(-10, 10)
    t = (torch.arange(h, device=obs.device, dtype=obs.dtype) / 100.0).view(1, 1, h, 1).expand(*obs.shape[:3], 1)
    feats = torch.cat([o, o.pow(2), t, t.pow(2), t.pow(3), torch.ones_like(t)], dim=-1)
    return feats * valid.unsqueeze(-1).to(feats.dtype)


def fit_linear_baseline(features: torch.Tensor, returns: torch.Tensor, valid: torch.Tensor, reg: float) -> torch.Tensor:
    """Per-task ridge regression of returns on features: [N, E, H, D], [N, E, H] → predictions [N, E, H].

    Solved in float64; the ridge coefficient is raised x10 (up to 5 times) where a solve is not finite.
    """
    n, e, h, d = features.shape
    x = features.reshape(n, e * h, d).double()
    y = (returns * valid).reshape(n, e * h, 1).double()
    xtx = x.transpose(1, 2) @ x
    xty = x.transpose(1, 2) @ y
    eye = torch.eye(d, dtype=torch.float64, device=x.device)
    coef = torch.zeros(n, d, 1, dtype=torch.float64, device=x.device)
    todo = torch.ones(n, dtype=torch.bool, device=x.device)
    r = reg
    for _ in range(6):
        sol = torch.linalg.solve(xtx[todo] + r * eye, xty[todo])
        ok = torch.isfinite(sol).all(dim=(1, 2))
        idx = todo.nonzero().squeeze(1)
        coef[idx[ok]] = sol[ok]
        todo[idx[ok]] = False
        if not todo.any():
            break
        r *= 10
    pred = (x @ coef).reshape(n, e, h).to(returns.dtype)
    return pred * valid
