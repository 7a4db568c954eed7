"""A one-layer GRU over a whole sequence for the CPU update, with a hand-derived backward.

``nn.GRU`` on the CPU records about thirty autograd nodes per time step, and its backward runs each of them, plus
one small product for the recurrent weight's gradient per step.  RL²'s update runs a 250-step chunk of 20 trials
per Adam step, so those per-step calls, not the arithmetic, set its speed.  :func:`gru_sequence` computes the
same function as ``nn.GRU`` (PyTorch's gate order and equations) in one :class:`torch.autograd.Function`:

- forward: the input projection as one product over all steps; per step one product with the recurrent weight
  and five element-wise calls;
- backward: every gate's local derivative depends only on the forward's values, so they are computed once over
  all steps; the step loop then carries ``dh`` with one element-wise product, one ``mul`` and one product per step;
  the weight's gradient is one product over all steps.

Under CPU bfloat16 autocast the products run in bfloat16 (the recurrent weight cast once per call, not per step)
and the state, the gates and the gradients' accumulation stay float32; without autocast everything is float32 and
matches ``nn.GRU`` to rounding (``tests/test_gru.py``).  ``benchmarks/gru_backward.py`` measures both against
``nn.GRU``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def _low_precision(device: torch.device) -> torch.dtype | None:
    """The autocast dtype in force for ``device`` (bfloat16 or float16), or None when autocast is off there."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return None


class _GRUSequence(torch.autograd.Function):
    """out [C, B, G] from the input projection ``xp`` [C, B, 3G] (b_ih included), ``h0`` [B, G],
    ``w_hh`` [3G, G] and ``b_hh`` [3G]; products in ``low`` (a dtype) when given.  Every buffer is allocated
    once per call and written in place (``out=``): each step's calls read and write rows of them."""

    @staticmethod
    def forward(
        ctx: Any, xp: torch.Tensor, h0: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor, low: torch.dtype | None
    ) -> torch.Tensor:
        steps, batch, g3 = xp.shape
        g = g3 // 3
        dtype = low or xp.dtype
        wt, bias = w_hh.t().to(dtype), b_hh.to(dtype)
        hs = h0.new_empty(steps + 1, batch, g)  # h0, then every step's output (float32)
        hs[0] = h0
        # the states as the products read them: hs itself in float32, a cast copy under autocast
        h_in = hs if low is None else xp.new_empty(steps, batch, g, dtype=dtype)
        gh = xp.new_empty(steps, batch, g3, dtype=dtype)  # W_hh h + b_hh
        rz = hs.new_empty(steps, batch, 2 * g)
        n = hs.new_empty(steps, batch, g)
        diff = hs.new_empty(batch, g)
        for t in range(steps):
            if low is not None:
                h_in[t].copy_(hs[t])
            torch.addmm(bias, h_in[t], wt, out=gh[t])
            torch.add(xp[t, :, : 2 * g], gh[t, :, : 2 * g], out=rz[t]).sigmoid_()
            torch.addcmul(xp[t, :, 2 * g :], rz[t, :, :g], gh[t, :, 2 * g :], out=n[t]).tanh_()
            torch.sub(hs[t], n[t], out=diff)
            torch.addcmul(n[t], rz[t, :, g:], diff, out=hs[t + 1])  # h' = n + z (h - n)
        ctx.save_for_backward(hs, h_in, w_hh, gh, rz, n)
        ctx.low, ctx.x_dtype = low, xp.dtype
        return hs[1:]

    @staticmethod
    def backward(ctx: Any, dout: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        hs, h_in, w_hh, gh, rz, n = ctx.saved_tensors
        low: torch.dtype | None = ctx.low
        dtype = low or hs.dtype
        steps, batch, g = n.shape
        dout = dout.to(hs.dtype)
        r, z, ghn = rz[..., :g], rz[..., g:], gh[..., 2 * g :]
        # local derivatives of h' = n + z (h - n), n = tanh(x_n + r (W_hn h + b_hn)), r/z = σ(x + W h + b): with
        # D the gradient reaching h', d(x_n) = D a, d(gh_n) = D a r, d(x_r) = d(gh_r) = D a gh_n r (1 - r) and
        # d(x_z) = d(gh_z) = D (h - n) z (1 - z), where a = (1 - z)(1 - n²).  None depends on D.
        coeff = hs.new_empty(steps, batch, 3, g)  # d(gh) = D ⊗ coeff
        one_minus_z = 1 - z
        a = (1 - n * n).mul_(one_minus_z)
        torch.mul(a, r, out=coeff[:, :, 2])
        torch.mul(coeff[:, :, 2], ghn, out=coeff[:, :, 0]).mul_(1 - r)
        torch.sub(hs[:-1], n, out=coeff[:, :, 1]).mul_(z).mul_(one_minus_z)
        w = w_hh.to(dtype)
        dgh = hs.new_empty(steps, batch, 3, g, dtype=dtype)
        d_at = hs.new_empty(steps, batch, g)  # D at every step
        dh = torch.zeros_like(hs[0])
        for t in range(steps - 1, -1, -1):
            torch.add(dh, dout[t], out=d_at[t])
            torch.mul(d_at[t].unsqueeze(1), coeff[t], out=dgh[t])
            # the gradient reaching h: through W_hh h, plus z through h' = ... + z h
            dh = torch.addcmul(torch.mm(dgh[t].view(batch, 3 * g), w), d_at[t], z[t])
        dgh_flat = dgh.view(steps * batch, 3 * g)
        dw = torch.mm(dgh_flat.t(), h_in[:steps].reshape(-1, g)).to(w_hh.dtype)
        db = torch.sum(dgh_flat, 0, dtype=w_hh.dtype)
        # d(x) is d(gh) but for the new gate's part, D a (not D a r): overwrite it in place
        torch.mul(d_at, a, out=dgh[:, :, 2])
        return dgh.view(steps, batch, 3 * g).to(ctx.x_dtype), dh, dw, db, None


def gru_sequence(gru: nn.GRU, inputs: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """``gru(inputs, h0.unsqueeze(0))[0]`` for a one-layer, unidirectional, time-major ``gru`` with biases: outputs
    [C, B, G] from inputs [C, B, I] and h0 [B, G], through :class:`_GRUSequence` (see the module docstring).

    Under CPU autocast the products run in the autocast dtype; the outputs are float32.
    """
    if gru.num_layers != 1 or gru.bidirectional or gru.batch_first or not gru.bias:
        raise ValueError("gru_sequence takes a one-layer, unidirectional, time-major nn.GRU with biases")
    low = _low_precision(inputs.device)
    w_ih, b_ih, w_hh, b_hh = (gru.get_parameter(f"{k}_l0") for k in ("weight_ih", "bias_ih", "weight_hh", "bias_hh"))
    # the input projection for every step at once (bfloat16 under autocast; the gates are float32)
    xp = torch.nn.functional.linear(inputs, w_ih, b_ih)
    with torch.autocast(inputs.device.type, enabled=False):
        out: torch.Tensor = _GRUSequence.apply(xp, h0.float(), w_hh, b_hh, low)
    return out
