"""benchmarks/learning/rl2_init_kl.py: one PPO update per weight initialisation and Adam ε on real ML1-reach."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def test_rl2_init_kl_prints_a_row_per_init_and_eps() -> None:
    """benchmarks/learning/rl2_init_kl.py on one tiny real ML1-reach trial: 4 rows of finite figures."""
    script = ROOT / "benchmarks" / "learning" / "rl2_init_kl.py"
    cmd = [sys.executable, str(script), "--trials", "1", "--episodes", "1", "--epochs", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line.split(" | ") for line in proc.stdout.splitlines() if line.startswith(("| torch", "| reference"))]
    assert [(r[0].strip("| "), float(r[1])) for r in rows] == [
        ("torch", 1e-5), ("torch", 1e-8), ("reference", 1e-5), ("reference", 1e-8)
    ]  # fmt: skip
    for r in rows:
        steps, kl, grad = int(r[2]), float(r[3]), float(r[4].strip(" |"))
        # one epoch of a 500-step trial: chunks at 0, 200 and the tail at 250, so at most 3 Adam steps
        assert 1 <= steps <= 3 and np.isfinite(kl) and kl >= 0 and np.isfinite(grad) and grad > 0
    bad = subprocess.run([sys.executable, str(script), "--trials", "0"], capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "--trials must be a positive integer, got 0" in bad.stderr
