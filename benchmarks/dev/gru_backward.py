"""RL²'s GRU forward + backward on one BPTT chunk of the reference update (250 steps x 20 trials, 256 -> 256):
``nn.GRU`` against metarl's fused GRU (``metarl.agents.gru.gru_sequence``, what the CPU update runs) with its Python
time loop (``fused_*``) and with its compiled one (``compiled_*``, where it builds), each in float32 and under CPU
bfloat16 autocast, each with glibc's default allocator settings and with ``metarl.allocator.keep_freed_memory``
(what ``metarl train`` sets).

    python benchmarks/dev/gru_backward.py                 # 2 threads, 5 alternating rounds
    python benchmarks/dev/gru_backward.py --threads 1 --rounds 7
    python benchmarks/dev/gru_backward.py --quick         # small shapes, 1 round: a smoke run, not a measurement

An allocator setting holds for a whole process, so each round runs one child process per setting (in
alternating order), and each child times the four variants (in alternating order), 5 passes each.  Prints the
medians over rounds, each variant's speed relative to ``nn.GRU`` float32 with the default allocator, and the
gradients' agreement: the fused GRU's largest relative difference from ``nn.GRU`` in float32, and the
smallest cosine between a bfloat16 gradient and float32's.  ``--json PATH`` writes them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks._common` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch
from torch import nn

VARIANTS = ("nn_gru_float32", "fused_float32", "compiled_float32", "nn_gru_bf16", "fused_bf16", "compiled_bf16")
ALLOCATORS = ("default", "kept")


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """Time the variants in this process (allocator already chosen by the parent's environment)."""
    import metarl.agents.gru as gru_module
    from metarl.agents.gru import gru_sequence
    from metarl.allocator import keep_freed_memory

    compiled = gru_module.native_gru()
    variants = [v for v in VARIANTS if compiled is not None or not v.startswith("compiled")]

    kept = keep_freed_memory()
    torch.set_num_threads(spec["threads"])
    steps, batch, width = spec["shape"]
    torch.manual_seed(0)
    gru = nn.GRU(width, width)
    x = torch.randn(steps, batch, width, requires_grad=True)
    h0, dout = torch.randn(batch, width) * 0.1, torch.randn(steps, batch, width)

    def grads(variant: str) -> list[torch.Tensor]:
        gru.zero_grad()
        x.grad = None
        gru_module._native_module = compiled if variant.startswith("compiled") else None  # the loop to run
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=variant.endswith("bf16")):
            out = gru(x, h0.unsqueeze(0))[0] if variant.startswith("nn_gru") else gru_sequence(gru, x, h0)
        (out.float() * dout).sum().backward()
        return [p.grad.clone() for p in gru.parameters()] + [x.grad.clone()]  # type: ignore[union-attr]

    ref = grads("nn_gru_float32")
    rel = max(
        float((a - b).norm() / b.norm())
        for v in variants
        if v.endswith("float32") and v != "nn_gru_float32"
        for a, b in zip(grads(v), ref, strict=True)
    )
    cosine = min(
        float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))
        for v in variants
        if v.endswith("bf16")
        for a, b in zip(grads(v), ref, strict=True)
    )
    order = variants if spec["round"] % 2 == 0 else variants[::-1]
    times = {}
    for variant in order:
        grads(variant)  # warm-up
        t0 = time.perf_counter()
        for _ in range(5):
            grads(variant)
        times[variant] = (time.perf_counter() - t0) / 5 * 1e3
    return {"times_ms": times, "kept": kept, "max_relative_grad_diff": rel, "min_bf16_cosine": cosine}


def run_child(spec: dict[str, Any], allocator: str) -> dict[str, Any]:
    env = dict(os.environ, METARL_KEEP_FREED_MEMORY="1" if allocator == "kept" else "0")
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                          env=env, check=False, timeout=1800)  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"measurement {allocator} {spec} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds, 5 passes each (default 5)")
    parser.add_argument("--quick", action="store_true", help="20 steps x 4 trials, 32 wide, 1 round")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    if args.threads < 1 or args.rounds < 1:
        parser.error(f"--threads and --rounds must be positive integers, got {args.threads} and {args.rounds}")
    shape = (20, 4, 32) if args.quick else (250, 20, 256)
    rounds = 1 if args.quick else args.rounds
    samples: dict[str, list[float]] = {}  # the compiled variants only where the compiled loop builds
    rel, cosine, kept = 0.0, 1.0, []
    for i in range(rounds):
        for allocator in ALLOCATORS if i % 2 == 0 else ALLOCATORS[::-1]:
            res = run_child({"threads": args.threads, "shape": shape, "round": i}, allocator)
            for variant, ms in res["times_ms"].items():
                samples.setdefault(f"{variant}_{allocator}", []).append(ms)
            rel, cosine = max(rel, res["max_relative_grad_diff"]), min(cosine, res["min_bf16_cosine"])
            if allocator == "kept":
                kept.append(res["kept"])
    base = statistics.median(samples["nn_gru_float32_default"])
    figures: dict[str, Any] = {k: statistics.median(v) for k, v in samples.items()}
    figures |= {f"{k}_speedup": base / figures[k] for k in samples}
    figures |= {"max_relative_grad_diff": rel, "min_bf16_cosine": cosine, "allocator_kept": all(kept),
                "steps": shape[0], "batch": shape[1], "width": shape[2], "threads": args.threads,
                "rounds": rounds}  # fmt: skip
    print(f"GRU forward + backward, {shape[0]} steps x {shape[1]} trials, {shape[2]} -> {shape[2]}, "
          f"{args.threads} thread(s), median of {rounds} alternating round(s)"
          + (" (--quick: not the reference shapes)" if args.quick else ""))  # fmt: skip
    print(f"  {'variant':<16}{'allocator':>11}{'ms':>10}{'speed':>9}")
    for allocator in ALLOCATORS:
        for variant in VARIANTS:
            key = f"{variant}_{allocator}"
            if key not in figures:
                print(f"  {variant:<16}{allocator:>11}{'(the compiled loop did not build)':>36}")
                continue
            print(f"  {variant:<16}{allocator:>11}{figures[key]:>10.1f}{figures[key + '_speedup']:>8.2f}x")
    print(f"  speed: against nn_gru_float32 with the default allocator; 'kept' = metarl.allocator.keep_freed_memory"
          f"{'' if figures['allocator_kept'] else ' (NOT applied on this C library)'}")  # fmt: skip
    print(
        f"  fused/compiled float32 gradients agree with nn.GRU's to a relative {rel:.1e}; "
        f"bfloat16 gradients' smallest cosine to float32's: {cosine:.4f}"
    )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
