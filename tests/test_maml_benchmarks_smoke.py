"""Smoke tests of the MAML benchmarks: they compute what they claim (no timing assertions)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import torch

import metarl
from metarl.agents.maml import MAMLConfig
from metarl.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.dev import maml_inference  # noqa: E402
from benchmarks.learning import maml_point_nav  # noqa: E402


def test_inference_step_holds_every_task_with_shuffled_rows() -> None:
    step = maml_inference.make_step(num_tasks=4, rows_per_task=3, device=torch.device("cpu"))
    assert step.obs.shape == (12, maml_inference.OBS_DIM)
    assert torch.bincount(step.task).tolist() == [3, 3, 3, 3]
    assert not torch.equal(step.task, torch.sort(step.task).values)  # not grouped by task already


def test_inference_measure_checks_equality_and_reports_a_ratio() -> None:
    row = maml_inference.measure(3, (8,), 2, torch.device("cpu"), repeats=1, inner=2)
    assert (row["tasks"], row["hidden"], row["rows"]) == (3, "8", 6)
    assert all(math.isfinite(float(row[k])) and float(row[k]) > 0 for k in ("vmap_us", "loop_us", "speedup"))
    assert float(row["speedup"]) == float(row["loop_us"]) / float(row["vmap_us"])


def test_inference_script_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "inf.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/dev/maml_inference.py"), "--quick", "--rows-per-task", "1",
         "--device", "cpu", "--json", str(out)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out.read_text())["rows"]
    assert {(r["tasks"], r["hidden"]) for r in rows} == {(20, "64x64"), (45, "64x64"), (20, "512x512"), (45, "512x512")}
    assert "target >= 5x at 45 tasks" in proc.stdout


def test_learning_benchmark_reads_the_curve_and_evaluates_a_run(tmp_path: Path) -> None:
    cfg = TrainConfig(
        agent="maml-trpo", benchmark="point-nav", iterations=2, meta_batch=2, episodes_per_task=2, workers=1,
        backend="inline", eval_every=1, eval_tasks=2, adaptation_episodes=1, eval_episodes=1,
    )  # fmt: skip
    run = metarl.train(cfg, MAMLConfig(hidden=(8,)), out=tmp_path / "run", progress=False)
    curve = maml_point_nav.training_curve(run)
    assert [r["iteration"] for r in curve] == [1, 2]
    assert all(r["pre"] < 0 and r["post"] < 0 for r in curve)  # point-nav rewards are negative distances
    final = maml_point_nav.final_evaluation(run, eval_episodes=1, seed=0)
    assert final["tasks"] == 100 and final["adaptation_episodes"] == 1
    assert math.isfinite(float(final["pre"])) and math.isfinite(float(final["post"]))
