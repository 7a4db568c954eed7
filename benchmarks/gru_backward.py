"""Is RL²'s GRU bound by its per-step calls or by its products?  ``nn.GRU``'s forward + backward on one BPTT chunk
of the reference update (250 steps x 20 trials, 256 -> 256) against the same GRU written as one
``torch.autograd.Function`` with a hand-derived backward: the input projection as one product, one ``addmm`` and
a few fused element-wise calls per step each way, the recurrent weight's gradient as one product over all steps.

    python benchmarks/gru_backward.py                 # 2 threads, 5 alternating rounds
    python benchmarks/gru_backward.py --threads 1 --rounds 7
    python benchmarks/gru_backward.py --quick         # small shapes: a smoke run, not a measurement

Prints both medians, their ratio and the largest relative gradient difference; ``--json PATH`` writes them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn


class HandGRU(torch.autograd.Function):
    """out [C, B, G] from the input projection ``xp`` [C, B, 3G] (PyTorch's gate order r, z, n), ``h0`` [B, G]."""

    @staticmethod
    def forward(ctx: Any, xp: torch.Tensor, h0: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor) -> torch.Tensor:
        steps, batch, g3 = xp.shape
        g = g3 // 3
        out, rz, n, ghn = (xp.new_empty(steps, batch, k) for k in (g, 2 * g, g, g))
        h, wt = h0, w_hh.t()
        for t in range(steps):
            gh = torch.addmm(b_hh, h, wt)
            torch.sigmoid(xp[t, :, : 2 * g] + gh[:, : 2 * g], out=rz[t])
            ghn[t].copy_(gh[:, 2 * g :])
            torch.tanh(torch.addcmul(xp[t, :, 2 * g :], rz[t, :, :g], ghn[t]), out=n[t])
            torch.addcmul(n[t], rz[t, :, g:], h - n[t], out=out[t])  # h' = n + z (h - n)
            h = out[t]
        ctx.save_for_backward(h0, w_hh, out, rz, n, ghn)
        return out

    @staticmethod
    def backward(ctx: Any, dout: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h0, w_hh, out, rz, n, ghn = ctx.saved_tensors
        steps, batch, g = out.shape
        h_prev = torch.cat([h0.unsqueeze(0), out[:-1]], 0)
        dx, dgh = dout.new_empty(steps, batch, 3 * g), dout.new_empty(steps, batch, 3 * g)
        dh = torch.zeros_like(h0)
        for t in range(steps - 1, -1, -1):
            dh = dh + dout[t]
            r, z = rz[t, :, :g], rz[t, :, g:]
            dn = dh * (1 - z) * (1 - n[t] * n[t])
            dx[t, :, :g] = dn * ghn[t] * r * (1 - r)
            dx[t, :, g : 2 * g] = dh * (h_prev[t] - n[t]) * z * (1 - z)
            dx[t, :, 2 * g :] = dn
            dgh[t, :, : 2 * g] = dx[t, :, : 2 * g]
            torch.mul(dn, r, out=dgh[t, :, 2 * g :])
            dh = torch.addmm(dh * z, dgh[t], w_hh)
        dw = dgh.reshape(-1, 3 * g).t() @ h_prev.reshape(-1, g)
        return dx, dh, dw, dgh.sum((0, 1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds, 5 passes each (default 5)")
    parser.add_argument("--quick", action="store_true", help="20 steps x 4 trials, 32 wide, 1 round")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args()
    if args.threads < 1 or args.rounds < 1:
        parser.error(f"--threads and --rounds must be positive integers, got {args.threads} and {args.rounds}")
    torch.set_num_threads(args.threads)
    steps, batch, width = (20, 4, 32) if args.quick else (250, 20, 256)
    rounds = 1 if args.quick else args.rounds
    torch.manual_seed(0)
    gru = nn.GRU(width, width)
    x = torch.randn(steps, batch, width, requires_grad=True)
    h0, dout = torch.randn(batch, width) * 0.1, torch.randn(steps, batch, width)

    def reference() -> torch.Tensor:
        return gru(x, h0.unsqueeze(0))[0]

    def hand() -> torch.Tensor:
        xp = torch.addmm(gru.bias_ih_l0, x.reshape(-1, width), gru.weight_ih_l0.t()).reshape(steps, batch, -1)
        return HandGRU.apply(xp, h0, gru.weight_hh_l0, gru.bias_hh_l0)

    def grads(fn: Any) -> list[torch.Tensor]:
        gru.zero_grad()
        x.grad = None
        fn().backward(dout)
        return [p.grad.clone() for p in gru.parameters()] + [x.grad.clone()]  # type: ignore[union-attr]

    rel = max(float((a - b).norm() / a.norm()) for a, b in zip(grads(reference), grads(hand), strict=True))
    times: dict[str, list[float]] = {"nn_gru": [], "hand_gru": []}
    for i in range(rounds):
        order = [("nn_gru", reference), ("hand_gru", hand)]
        for name, fn in order if i % 2 == 0 else order[::-1]:
            t0 = time.perf_counter()
            for _ in range(5):
                grads(fn)
            times[name].append((time.perf_counter() - t0) / 5 * 1e3)
    figures = {k: statistics.median(v) for k, v in times.items()}
    figures |= {"ratio": figures["nn_gru"] / figures["hand_gru"], "max_relative_grad_diff": rel}
    figures |= {"steps": steps, "batch": batch, "width": width, "threads": args.threads, "rounds": rounds}
    print(f"GRU forward + backward, {steps} steps x {batch} trials, {width} -> {width}, {args.threads} thread(s), "
          f"median of {rounds} alternating round(s)")  # fmt: skip
    print(f"  nn.GRU            {figures['nn_gru']:8.1f} ms")
    print(f"  hand-written GRU  {figures['hand_gru']:8.1f} ms   ({figures['ratio']:.2f}x nn.GRU's speed)")
    print(f"  gradients agree to a relative {rel:.1e}")
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
