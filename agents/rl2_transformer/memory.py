"""A causal transformer as RL²'s memory (:class:`~metarl.agents.rl2.memory.RecurrentMemory`): every step of a
trial attends to the recent steps of its own episode and to one summary token per earlier episode of the trial
(docs/rl2-transformer.md says why this design, with its sources).

One token per step.  At every layer ``l`` the token of step ``i`` attends to:

- **the window**: the tokens of its own episode at most ``window - 1`` steps back (itself included);
- **the running summary**: the mean of layer ``l``'s inputs over its own episode so far (its whole episode,
  also the part that left the window);
- **the episode summaries**: for each of the last ``max_episodes`` finished episodes of the trial, the mean of
  layer ``l``'s inputs over that episode, frozen when the episode ended.

So an evaluation episode sees every adaptation episode (up to ``max_episodes`` of them), and a step costs
``window + max_episodes`` keys per layer whatever the trial's length.  A summary depends only on steps before the
step that reads it, so the memory is causal; the state is reset at a trial's start, so nothing crosses trials.

The memory reads the episode boundaries from its input: the last column of ``x`` is the previous step's done
flag (the policy appends it, :class:`~metarl.agents.rl2_transformer.policy.TransformerRL2Policy`); a set flag
after at least one step of the episode starts a new episode.  Positions: a fixed sinusoidal embedding of the step
in the episode and a learned embedding of the episode's index in the trial (the last index shared by later ones).

State of a slot (a dict of tensors, slot axis first; ``L`` layers, ``W`` window, ``E`` max_episodes, ``d`` width):
``kv`` [L, 2, W, d] keys and values of the window (a ring indexed by step mod W), ``pos`` [W] their steps in the
episode (-1: empty), ``acc`` [L, d] the sums of each layer's inputs over the episode so far, ``summ`` [L, E, d]
and ``summ_ep`` [E] the episode summaries and their episode indices (a ring indexed by episode mod E; -1: empty),
``t`` the steps of the episode seen so far and ``ep`` the episode's index in the trial.
"""

from __future__ import annotations

import math
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

State = dict[str, torch.Tensor]
_LONG_FIELDS = {"pos": -1, "summ_ep": -1, "t": 0, "ep": 0}


def sinusoid(position: torch.Tensor, width: int) -> torch.Tensor:
    """Fixed sinusoidal embedding [..., width] of integer positions [...] (Vaswani et al. 2017)."""
    freq = torch.exp(torch.arange(0, width, 2, device=position.device, dtype=torch.float32) * (-math.log(1e4) / width))
    angle = position.to(torch.float32).unsqueeze(-1) * freq
    return torch.stack([angle.sin(), angle.cos()], -1).flatten(-2)[..., :width]


class Block(nn.Module):
    """A pre-norm transformer block with AMAGO's stabilisers: NormFormer's extra norms after the attention and
    after the feed-forward activation, and a learned scale per attention head."""

    def __init__(self, width: int, heads: int, ff_mult: int, normformer: bool) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.out = nn.Linear(width, width)
        self.head_scale = nn.Parameter(torch.ones(heads, 1, 1))
        self.norm_attn: nn.Module = nn.LayerNorm(width) if normformer else nn.Identity()
        self.norm2 = nn.LayerNorm(width)
        self.ff1 = nn.Linear(width, ff_mult * width)
        self.norm_ff: nn.Module = nn.LayerNorm(ff_mult * width) if normformer else nn.Identity()
        self.ff2 = nn.Linear(ff_mult * width, width)

    def qkv_of(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, k, v = self.qkv(self.norm1(h)).chunk(3, -1)
        return q, k, v

    def kv_of(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of summary vectors (layer inputs): as a token's, without the query."""
        _, k, v = self.qkv_of(h)
        return k, v

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """q [B, Q, d], k/v [B, K, d], mask [B, Q, K] (True: attend) → the attention's residual branch [B, Q, d]."""
        b, nq, d = q.shape
        split = lambda x: x.to(q.dtype).reshape(b, x.shape[1], self.heads, d // self.heads).transpose(1, 2)  # noqa: E731
        att = F.scaled_dot_product_attention(split(q), split(k), split(v), attn_mask=mask.unsqueeze(1))
        att = (att * self.head_scale.to(att.dtype)).transpose(1, 2).reshape(b, nq, d)
        return self.norm_attn(self.out(att))

    def feed_forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.ff2(self.norm_ff(F.leaky_relu(self.ff1(self.norm2(h)))))


class TransformerMemory(nn.Module):
    """The memory described in the module docstring, as :class:`~metarl.agents.rl2.memory.RecurrentMemory`.
    Inputs ``x`` [..., D + 1]: D features then the done flag."""

    def __init__(
        self,
        input_size: int,
        width: int,
        layers: int,
        heads: int,
        window: int,
        max_episodes: int,
        ff_mult: int = 4,
        normformer: bool = True,
    ) -> None:
        super().__init__()
        self.d, self.window, self.max_episodes = int(width), int(window), int(max_episodes)
        self.in_proj = nn.Linear(input_size, width)
        self.episode_embedding = nn.Embedding(max_episodes + 1, width)
        self.blocks = nn.ModuleList(Block(width, heads, ff_mult, normformer) for _ in range(layers))
        self.norm = nn.LayerNorm(width)

    @property
    def width(self) -> int:
        return self.d

    @property
    def _blocks(self) -> list[Block]:
        return cast(list[Block], list(self.blocks))

    # -- per-slot state ---------------------------------------------------------------------
    def initial_state(self, num_slots: int, device: torch.device) -> State:
        n, lyr, w, e, d = num_slots, len(self.blocks), self.window, self.max_episodes, self.d
        return {
            "kv": torch.zeros(n, lyr, 2, w, d, device=device),
            "pos": torch.full((n, w), -1, dtype=torch.long, device=device),
            "acc": torch.zeros(n, lyr, d, device=device),
            "summ": torch.zeros(n, lyr, e, d, device=device),
            "summ_ep": torch.full((n, e), -1, dtype=torch.long, device=device),
            "t": torch.zeros(n, dtype=torch.long, device=device),
            "ep": torch.zeros(n, dtype=torch.long, device=device),
        }

    def gather(self, state: State, index: torch.Tensor) -> State:
        return {k: v[index] for k, v in state.items()}

    def scatter(self, state: State, index: torch.Tensor, rows: State) -> State:
        return {k: v.index_copy(0, index, rows[k].to(v.dtype)) for k, v in state.items()}

    def reset(self, rows: State, mask: torch.Tensor) -> State:
        def fresh(name: str, x: torch.Tensor) -> torch.Tensor:
            m = mask.reshape(-1, *([1] * (x.dim() - 1)))
            return torch.where(m, torch.full_like(x, _LONG_FIELDS.get(name, 0)), x)

        return {k: fresh(k, v) for k, v in rows.items()}

    def _embed(self, feat: torch.Tensor, step: torch.Tensor, ep: torch.Tensor) -> torch.Tensor:
        return (
            self.in_proj(feat)
            + sinusoid(step, self.d).to(feat.dtype)
            + self.episode_embedding(ep.clamp(max=self.max_episodes))
        )

    # -- one step per row (the engine's batched call) ---------------------------------------
    def step(self, x: torch.Tensor, rows: State) -> tuple[torch.Tensor, State]:
        feat, flag = x[:, :-1], x[:, -1] > 0.5
        t, ep, acc, pos, kv = rows["t"], rows["ep"], rows["acc"], rows["pos"], rows["kv"]
        summ, summ_ep = rows["summ"], rows["summ_ep"]
        w, e = self.window, self.max_episodes
        new = flag & (t > 0)  # the previous step ended an episode: freeze its summary, start the next one
        done_slot = (torch.arange(e, device=x.device) == (ep % e).unsqueeze(1)) & new.unsqueeze(1)  # [R, E]
        mean = acc / t.clamp(min=1).reshape(-1, 1, 1).to(acc.dtype)  # [R, L, d]
        summ = torch.where(done_slot[:, None, :, None], mean.unsqueeze(2).to(summ.dtype), summ)
        summ_ep = torch.where(done_slot, ep.unsqueeze(1), summ_ep)
        ep = ep + new.long()
        t = torch.where(new, torch.zeros_like(t), t)
        pos = torch.where(new.unsqueeze(1), torch.full_like(pos, -1), pos)
        acc = torch.where(new.reshape(-1, 1, 1), torch.zeros_like(acc), acc)
        here = torch.arange(w, device=x.device) == (t % w).unsqueeze(1)  # [R, W]: this step's ring slot
        pos = torch.where(here, t.unsqueeze(1), pos)
        window_ok = (pos >= 0) & (t.unsqueeze(1) - pos < w)
        summ_ok = (summ_ep >= 0) & (ep.unsqueeze(1) - summ_ep <= e)
        mask = torch.cat([window_ok, torch.ones_like(new).unsqueeze(1), summ_ok], 1).unsqueeze(1)  # [R, 1, W+1+E]
        h = self._embed(feat, t, ep)  # [R, d]
        kvs, accs = [], []
        for layer, block in enumerate(self._blocks):
            acc_l = acc[:, layer] + h  # the episode's sum of this layer's inputs, this step included
            q, k, v = block.qkv_of(h)
            kv_l = torch.where(here[:, None, :, None], torch.stack([k, v], 1).unsqueeze(2).to(kv.dtype), kv[:, layer])
            run_k, run_v = block.kv_of(acc_l / (t + 1).unsqueeze(1).to(acc_l.dtype))  # the running summary
            sum_k, sum_v = block.kv_of(summ[:, layer])  # [R, E, d]
            keys = torch.cat([kv_l[:, 0], run_k.unsqueeze(1), sum_k], 1)
            values = torch.cat([kv_l[:, 1], run_v.unsqueeze(1), sum_v], 1)
            h = h + block.attend(q.unsqueeze(1), keys, values, mask)[:, 0]
            h = block.feed_forward(h)
            kvs.append(kv_l)
            accs.append(acc_l)
        state = {
            "kv": torch.stack(kvs, 1), "pos": pos, "acc": torch.stack(accs, 1).to(acc.dtype), "summ": summ,
            "summ_ep": summ_ep, "t": t + 1, "ep": ep,
        }  # fmt: skip
        return self.norm(h), state

    # -- a chunk of steps (the update) ------------------------------------------------------
    def sequence(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, dict[str, Any]]:
        xb = x.transpose(0, 1)  # [B, C, D + 1]
        feat, flag = xb[..., :-1], xb[..., -1] > 0.5
        b, c = flag.shape
        w, e, dev = self.window, self.max_episodes, x.device
        t0, ep0, pos0, se0 = state["t"], state["ep"], state["pos"], state["summ_ep"]
        j = torch.arange(c, device=dev)
        new = flag & ~((j == 0).unsqueeze(0) & (t0 == 0).unsqueeze(1))  # [B, C]
        ep = ep0.unsqueeze(1) + new.long().cumsum(1)
        start = torch.where(new, j.expand(b, c), torch.full_like(ep, -1)).cummax(1).values
        step = torch.where(start >= 0, j - start, t0.unsqueeze(1) + j)  # step of each token in its episode
        end = torch.cat([new[:, 1:], torch.zeros_like(new[:, :1])], 1)  # the token ends its episode
        qi, kj = (slice(None), slice(None), None), (slice(None), None, slice(None))  # [B, C, 1] / [B, 1, K]
        window_ok = (pos0[kj] >= 0) & (ep[qi] == ep0.reshape(-1, 1, 1)) & (step[qi] - pos0[kj] < w)
        summ_ok = (se0[kj] >= 0) & (ep[qi] - se0[kj] <= e)
        causal = j.unsqueeze(1) >= j.unsqueeze(0)  # [C(query), C(key)]
        chunk_ok = causal & (ep[qi] == ep[kj]) & (step[qi] - step[kj] < w)
        done_ok = end[kj] & (j.unsqueeze(1) > j.unsqueeze(0)) & (ep[qi] - ep[kj] <= e)  # episodes ended before i
        running = torch.eye(c, dtype=torch.bool, device=dev).expand(b, c, c)
        # the state's episode when it ended at the chunk's start: its summary is the state's running one
        pending_ok = new[:, :1].unsqueeze(1) & (ep[qi] - ep0.reshape(-1, 1, 1) <= e)  # [B, C, 1]
        mask = torch.cat([window_ok, summ_ok, pending_ok, chunk_ok, done_ok | running], 2)  # [B, C, W+E+1+2C]
        h = self._embed(feat, step, ep)
        cs_base = torch.where((start >= 0).unsqueeze(-1), 0.0, 1.0)  # the state's sums count until a new episode
        count = (step + 1).unsqueeze(-1)
        pending = state["acc"] / t0.clamp(min=1).reshape(-1, 1, 1).to(state["acc"].dtype)  # [B, L, d]
        ks, vs, sums = [], [], []
        for layer, block in enumerate(self._blocks):
            cs = torch.cat([torch.zeros_like(h[:, :1]), h.cumsum(1)], 1)  # [B, C + 1, d]
            before = cs.gather(1, start.clamp(min=0).unsqueeze(-1).expand(b, c, h.shape[-1]))
            prefix = cs[:, 1:] - before + cs_base * state["acc"][:, layer].unsqueeze(1)  # episode sum so far
            q, k, v = block.qkv_of(h)
            run_k, run_v = block.kv_of(prefix / count.to(prefix.dtype))
            sum_k, sum_v = block.kv_of(torch.cat([state["summ"][:, layer], pending[:, layer].unsqueeze(1)], 1))
            kv0 = state["kv"][:, layer]
            keys = torch.cat([kv0[:, 0].to(k.dtype), sum_k.to(k.dtype), k, run_k.to(k.dtype)], 1)
            values = torch.cat([kv0[:, 1].to(v.dtype), sum_v.to(v.dtype), v, run_v.to(v.dtype)], 1)
            h = h + block.attend(q, keys, values, mask)
            h = block.feed_forward(h)
            ks.append(k)
            vs.append(v)
            sums.append(prefix)
        trace = {
            "state": state, "k": torch.stack(ks, 1), "v": torch.stack(vs, 1), "prefix": torch.stack(sums, 1),
            "ep": ep, "step": step, "end": end, "new0": new[:, 0],
        }  # fmt: skip
        return self.norm(h).transpose(0, 1), trace

    def handover(self, trace: dict[str, Any], t: int) -> State:
        """The state after step ``t`` of the chunk: the window and summaries rebuilt from the chunk's tokens."""
        state, ep, step, end = trace["state"], trace["ep"], trace["step"], trace["end"]
        b, c = ep.shape
        t = t % c
        w, e = self.window, self.max_episodes
        ep_t, step_t = ep[:, t], step[:, t]
        k, v, prefix = (trace[name].detach().float() for name in ("k", "v", "prefix"))  # [B, L, C, d]
        lyr, d = k.shape[1], k.shape[-1]
        same = (ep_t == state["ep"]).unsqueeze(1)
        # the window: the episode's last W tokens, the state's if the episode began before the chunk
        pos = torch.where(same, state["pos"], torch.full_like(state["pos"], -1))
        sel = (ep[:, : t + 1] == ep_t.unsqueeze(1)) & (step_t.unsqueeze(1) - step[:, : t + 1] < w)
        slot = torch.where(sel, step[:, : t + 1] % w, torch.full_like(step[:, : t + 1], w))  # w: dropped
        pos = torch.cat([pos, pos[:, :1]], 1).scatter(1, slot, step[:, : t + 1])[:, :w]
        pos = torch.where(step_t.unsqueeze(1) - pos < w, pos, torch.full_like(pos, -1))
        kv = torch.cat([state["kv"].float(), torch.zeros_like(state["kv"][:, :, :, :1]).float()], 3)
        index = slot.reshape(b, 1, 1, t + 1, 1).expand(b, lyr, 2, t + 1, d)
        kv = kv.scatter(3, index, torch.stack([k[:, :, : t + 1], v[:, :, : t + 1]], 2))[:, :, :, :w]
        # the summaries: the state's, its own episode's if that ended at the chunk's start, and those of the
        # episodes that ended in the chunk before step t
        acc0, ep0 = state["acc"].float(), state["ep"].unsqueeze(1)
        ended = torch.cat([trace["new0"].unsqueeze(1), end[:, :t]], 1)  # [B, 1 + t]
        ep_s = torch.cat([ep0, ep[:, :t]], 1)
        mean = torch.cat([
            (acc0 / state["t"].clamp(min=1).reshape(b, 1, 1).float()).unsqueeze(2),
            prefix[:, :, :t] / (step[:, :t] + 1).reshape(b, 1, t, 1).float(),
        ], 2)  # fmt: skip
        done = ended & (ep_t.unsqueeze(1) - ep_s <= e)
        slot_e = torch.where(done, ep_s % e, torch.full_like(ep_s, e))
        summ_ep = torch.cat([state["summ_ep"], state["summ_ep"][:, :1]], 1).scatter(1, slot_e, ep_s)[:, :e]
        summ_ep = torch.where(ep_t.unsqueeze(1) - summ_ep <= e, summ_ep, torch.full_like(summ_ep, -1))
        summ = torch.cat([state["summ"].float(), torch.zeros_like(state["summ"][:, :, :1]).float()], 2)
        summ = summ.scatter(2, slot_e.reshape(b, 1, t + 1, 1).expand(b, lyr, t + 1, d), mean)[:, :, :e]
        return {
            "kv": kv, "pos": pos, "acc": prefix[:, :, t], "summ": summ, "summ_ep": summ_ep,
            "t": step_t + 1, "ep": ep_t,
        }  # fmt: skip
