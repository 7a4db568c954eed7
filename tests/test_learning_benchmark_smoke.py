"""Smoke test of benchmarks/learning/metaworld.py: a one-iteration Meta-World run, sampling overlapped with
learning (``--overlap``), evaluated on 2 held-out goals with the control and the untrained agent; the JSON's
figures are checked, not its speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_metaworld_learning_benchmark_quick_writes_its_figures(tmp_path: Path) -> None:
    out, js = tmp_path / "run", tmp_path / "figures.json"
    cmd = [sys.executable, str(ROOT / "benchmarks/learning/metaworld.py"), "--agent", "rl2",
           "--benchmark", "ML1-reach-v3", "--out", str(out), "--json", str(js), "--quick", "--overlap"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    fig = json.loads(js.read_text())
    assert fig["quick"] is True and fig["config"] == "rl2-ml1" and fig["agent"] == "rl2"
    assert fig["training"]["env_steps"] == [10_000.0]  # 2 tasks x 10 episodes x 500 steps
    for key in ("heldout", "heldout_sampled", "control", "untrained"):
        s = fig[key]["success"]
        assert s["goals"] == 2 and 0.0 <= s["low"] <= s["mean"] <= s["high"] <= 1.0, key
        assert len(fig[key]["curve"]["success"]) == 11  # after 0..10 adaptation episodes
    assert fig["heldout"]["feedback"] is True and fig["control"]["feedback"] is False
    assert fig["untrained"]["env_steps"] == 0 and fig["heldout"]["env_steps"] == 10_000
    assert json.loads((out / "eval/no_feedback.json").read_text())["feedback"] is False
    assert "held-out success (2 goals)" in proc.stdout
    assert json.loads((out / "config.json").read_text())["train"]["overlap"] is True  # --overlap reaches the run
    assert fig["overlap"] is True
