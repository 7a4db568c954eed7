"""What one time step of RL²'s CPU GRU costs, and how much of it a faster product or a fused kernel could remove.

The fused GRU (``metarl.agents.gru``) runs each BPTT chunk as a Python loop over time steps: per step one product
of the [B, 256] state with the recurrent weight, forward and backward, plus a few element-wise calls.  This
script times, in one process and in alternating rounds:

- ``forward_step``: the fused forward's Python loop per time step (``gru_sequence`` without autograd, bfloat16
  autocast, minus the input projection, which is one product over the whole chunk), and ``forward_step_compiled``:
  the same through the compiled loop (``csrc/gru_cpu.cpp``: the product plus one pass over the gates), where it builds;
- ``product_*``: that step's product alone, [B, 256] x [256, 768] forward and [B, 768] x [768, 256] backward,
  as the loop calls it (``addmm``/``mm`` in bfloat16), with B rows and with B/2 rows (what each of 2 threads would
  take if the batch were split), and with the weight reordered once for oneDNN (``mkldnn._linear_pointwise``)
  where this torch has it;
- ``elementwise_call``: one element-wise call on a [B, 256] float32 array, the floor of any call in the loop.

From these it prints the share of a forward step that is the product, and ``fused_step_floor``: the product plus
one element-wise call, what a compiled kernel fusing each step's element-wise calls into one pass could reach.

    python benchmarks/dev/gru_step.py                     # threads 1 and 2, B = 20 (the rl2-ml10 chunk), 5 rounds
    python benchmarks/dev/gru_step.py --threads 2 --json benchmarks/results/dev/gru-step-2cores.json
    python benchmarks/dev/gru_step.py --quick             # B = 4, 10 steps, 1 round: a smoke run, not a measurement
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks._common` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch
from torch import nn

from benchmarks._common import machine_info, package_versions

WIDTH = 256


def per_call_us(fn: Callable[[], Any], calls: int) -> float:
    for _ in range(max(1, calls // 10)):
        fn()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls * 1e6


def reordered_product(w: torch.Tensor, rows: int) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """x -> x @ w.T through oneDNN with ``w`` reordered once, or None where this torch build lacks it."""
    try:
        ops = torch.ops.mkldnn
        if not (torch.backends.mkldnn.is_available() and ops._is_mkldnn_bf16_supported()):
            return None
        packed = ops._reorder_linear_weight(w.contiguous(), rows)
        linear = ops._linear_pointwise
        return lambda x: linear(x, packed, None, "none", [], "")
    except (AttributeError, RuntimeError):
        return None


def products(rows: int, w: torch.Tensor, b: torch.Tensor, calls: int) -> dict[str, float]:
    """µs per call of one step's products on ``rows`` rows in bfloat16: forward [rows, G] x [G, 3G] (``addmm``, as
    the Python loop calls it) and backward [rows, 3G] x [3G, G] (``mm``), and both with the weight reordered once."""
    bf16 = torch.bfloat16
    h, d = torch.randn(rows, WIDTH).to(bf16), torch.randn(rows, 3 * WIDTH).to(bf16)
    wf, bias = w.to(bf16), b.to(bf16)
    gh, dh = torch.empty(rows, 3 * WIDTH, dtype=bf16), torch.empty(rows, WIDTH, dtype=bf16)
    out = {
        "product_forward": per_call_us(lambda: torch.addmm(bias, h, wf.t(), out=gh), calls),
        "product_backward": per_call_us(lambda: torch.mm(d, wf, out=dh), calls),
    }
    fwd, bwd = reordered_product(wf, rows), reordered_product(wf.t(), rows)
    if fwd is not None and bwd is not None:
        out["product_forward_reordered"] = per_call_us(lambda: fwd(h), calls)
        out["product_backward_reordered"] = per_call_us(lambda: bwd(d), calls)
    return out


def measure(threads: int, batch: int, steps: int, calls: int) -> dict[str, float]:
    """One round's figures (µs per time step or per call) at ``threads`` torch threads."""
    import metarl.agents.gru as gru_module
    from metarl.agents.gru import gru_sequence

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    bf16 = torch.bfloat16
    gru = nn.GRU(WIDTH, WIDTH)
    x, h0 = torch.randn(steps, batch, WIDTH), torch.zeros(batch, WIDTH)
    w = gru.weight_hh_l0.detach()  # [3G, G]
    out: dict[str, float] = {}

    def forward_chunk() -> None:
        with torch.no_grad(), torch.autocast("cpu", dtype=bf16):
            gru_sequence(gru, x, h0)

    def projection() -> None:
        with torch.no_grad(), torch.autocast("cpu", dtype=bf16):
            nn.functional.linear(x, gru.weight_ih_l0, gru.bias_ih_l0)

    reps = max(3, calls // (10 * steps))
    compiled = gru_module.native_gru()
    for module, key in ((None, "forward_step"), (compiled, "forward_step_compiled")):
        if key == "forward_step" or module is not None:
            gru_module._native_module = module  # the loop gru_sequence runs
            out[key] = (per_call_us(forward_chunk, reps) - per_call_us(projection, reps)) / steps
    gru_module._native_module = compiled
    for rows, suffix in ((batch, ""), (max(1, batch // 2), "_half")):
        out |= {f"{k}{suffix}": v for k, v in products(rows, w, gru.bias_hh_l0.detach(), calls).items()}
    a, b, c = torch.randn(batch, WIDTH), torch.randn(batch, WIDTH), torch.empty(batch, WIDTH)
    out["elementwise_call"] = per_call_us(lambda: torch.add(a, b, out=c), calls)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts (default 1 2)")
    parser.add_argument("--batch", type=int, default=20, help="trials per chunk, B (default 20: rl2-ml10)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    parser.add_argument("--quick", action="store_true", help="B = 4, 10 steps, 1 round, few calls")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args()
    if min(args.threads) < 1 or args.batch < 1 or args.rounds < 1:
        parser.error(
            f"--threads, --batch and --rounds must be positive integers, got {args.threads}, {args.batch} "
            f"and {args.rounds}"
        )
    from metarl.allocator import keep_freed_memory

    keep_freed_memory()  # as metarl train's learner process
    batch, steps, rounds, calls = (4, 10, 1, 50) if args.quick else (args.batch, 250, args.rounds, 2000)
    samples: dict[int, dict[str, list[float]]] = {t: {} for t in args.threads}
    for i in range(rounds):
        for threads in args.threads if i % 2 == 0 else args.threads[::-1]:
            for key, value in measure(threads, batch, steps, calls).items():
                samples[threads].setdefault(key, []).append(value)
    figures: dict[str, Any] = {}
    quick = " (--quick: not the reference shapes)" if args.quick else ""
    print(f"RL²'s GRU per time step: B = {batch} trials, {WIDTH} -> {WIDTH}, products in bfloat16, "
          f"median of {rounds} alternating round(s), µs{quick}")  # fmt: skip
    for threads in args.threads:
        med = {k: statistics.median(v) for k, v in samples[threads].items()}
        med["product_share_of_forward_step"] = med["product_forward"] / med["forward_step"]
        med["fused_step_floor"] = min(med["product_forward"], med.get("product_forward_reordered", float("inf")))
        med["fused_step_floor"] += med["elementwise_call"]
        figures[f"threads_{threads}"] = med
        print(f"  {threads} thread(s):")
        for key, value in med.items():
            print(f"    {key:<38}{value:>9.2f}" if "share" in key else f"    {key:<38}{value:>9.1f}")
    figures["meta"] = {"batch": batch, "steps": steps, "rounds": rounds, "quick": args.quick,
                       "machine": machine_info(), "versions": package_versions(),
                       "command": " ".join(["gru_step.py", *sys.argv[1:]])}  # fmt: skip
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
