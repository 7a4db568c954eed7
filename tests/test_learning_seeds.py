"""benchmarks/learning/seeds.py: seeds of one learning-benchmark setting aggregated as ``metarl compare`` does."""

from __future__ import annotations

import copy
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from metarl.errors import UserError
from metarl.evaluation.stats import aggregate

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SCRIPT = ROOT / "benchmarks" / "learning" / "seeds.py"


def _module() -> Any:
    spec = importlib.util.spec_from_file_location("learning_seeds", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


seeds = _module()


def _figures(seed: int, heldout: float, control: float, sampled: float) -> dict[str, Any]:
    def evaluation(success: float) -> dict[str, Any]:
        return {"success": {"mean": success}, "per_family": {"reach-v3": {"success": success}}, "env_steps": 5_000_000}

    return {
        "agent": "rl2", "benchmark": "ML1-reach-v3", "config": "rl2-ml1", "overrides": ["ppo.target_kl=0.02"],
        "overlap": False, "goals_per_family": None, "seed": seed, "train_wall_minutes": 50.0,
        "heldout": evaluation(heldout), "heldout_sampled": evaluation(sampled), "control": evaluation(control),
    }  # fmt: skip


THREE = [_figures(0, 0.78, 0.26, 0.93), _figures(1, 0.90, 0.20, 0.96), _figures(2, 0.70, 0.30, 0.88)]


def _write(tmp_path: Path, figures: list[dict[str, Any]]) -> list[Path]:
    paths = []
    for f in figures:
        path = tmp_path / f"s{f['seed']}.json"
        path.write_text(json.dumps(f))
        paths.append(path)
    return paths


def test_three_seeds_give_the_mean_and_the_gap_worked_out_by_hand(tmp_path: Path) -> None:
    paths = _write(tmp_path, THREE)
    text = seeds.report(paths, reps=500)
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| ")}
    # 3 seeds: the IQM trims nothing, so both columns' points are the mean (0.78 + 0.90 + 0.70) / 3 = 0.7933
    assert rows["held-out, mean action (`metarl eval --deterministic`)"].split(" | ")[1].startswith("0.793 [")
    assert rows["held-out, mean action (`metarl eval --deterministic`)"].split(" | ")[2].startswith("0.793 [")
    assert rows["adaptation control"].split(" | ")[1].startswith("0.253 [")  # (0.26 + 0.20 + 0.30) / 3
    # gaps 0.52, 0.70, 0.40: mean 0.54; the bootstrap's interval lies within the smallest and largest gap
    gap = rows["gap: mean action − control"].split(" | ")[1]
    point, low, high = (float(v) for v in gap.replace("[", "").replace("]", "").replace(",", "").split())
    assert point == pytest.approx(0.54, abs=5e-4) and 0.40 - 1e-9 <= low <= point <= high <= 0.70 + 1e-9
    assert "+0.52, +0.70, +0.40" in text and "training seeds [0, 1, 2]" in text


def test_intervals_are_metarl_compares(tmp_path: Path) -> None:
    paths = _write(tmp_path, THREE)
    expected = aggregate(np.array([[0.78], [0.90], [0.70]]), reps=300, seed=0)["iqm"].format()
    assert expected in seeds.report(paths, reps=300)


def test_committed_2_5M_seeds_reproduce_the_committed_metarl_compare_report() -> None:
    """The three 2.5M seeds of the best setting: the figures `metarl compare` wrote from their EvalResults."""
    names = [
        "rl2-ml1-reach-s0-targetkl002-noactioninput-2.5M.json",
        "rl2-ml1-reach-s1-targetkl002-noactioninput-2.5M.json",
        "rl2-ml1-reach-s2-targetkl002-noactioninput-2.5M.json",
    ]
    text = seeds.report([RESULTS / n for n in names])
    compare = (RESULTS / "rl2-ml1-reach-3seeds-2.5M-compare.md").read_text()
    assert "0.673 [0.560, 0.740]" in compare  # the committed report's IQM
    row = "| held-out, mean action (`metarl eval --deterministic`) | 0.673 [0.560, 0.740] | 0.673 [0.560, 0.740] |"
    assert row in text


def test_committed_5M_shaped_seeds_reproduce_metarl_compare_over_their_runs() -> None:
    """The three 5M seeds of ``rl2-ml1-shaped``: seeds.py over their JSONs gives the IQM that `metarl compare`
    wrote from the runs' own EvalResults (committed beside them), and names the shaping."""
    names = [f"rl2-ml1-reach-s{s}-tuned-envsuccessreward10-5M.json" for s in range(3)]
    text = seeds.report([RESULTS / n for n in names])
    compare = (RESULTS / "rl2-ml1-reach-3seeds-envsuccessreward10-5M-metarl-compare.md").read_text()
    assert "| `rl2` | 3 | 0.813 [0.740, 0.860] | 0.813 [0.740, 0.860] |" in compare
    row = "| held-out, mean action (`metarl eval --deterministic`) | 0.813 [0.740, 0.860] | 0.813 [0.740, 0.860] |"
    assert row in text
    assert "`--success-reward 10`" in text and "5,000,000 env steps" in text


def test_committed_4_seed_shaped_compare_is_the_aggregate_of_the_four_jsons() -> None:
    """Seeds 0-2 (``--config rl2-ml1-tuned --success-reward 10``) and seed 3 (``--config rl2-ml1-shaped``) are one
    setting under two names, so seeds.py refuses to pool them; `metarl compare` over their runs did, and its IQM is
    the stratified-bootstrap aggregate of the four JSONs' held-out success."""
    names = [f"rl2-ml1-reach-s{s}-tuned-envsuccessreward10-5M.json" for s in range(3)]
    names.append("rl2-ml1-reach-s3-shaped-5M.json")
    figs = [json.loads((RESULTS / n).read_text()) for n in names]
    assert {f["success_reward"] for f in figs} == {10.0} and {f["heldout"]["env_steps"] for f in figs} == {5_000_000}
    assert [f["seed"] for f in figs] == [0, 1, 2, 3]
    scores = np.array([[f["heldout"]["success"]["mean"]] for f in figs])
    iqm = aggregate(scores, reps=2000, seed=0)["iqm"].format()
    compare = (RESULTS / "rl2-ml1-reach-4seeds-shaped-5M-metarl-compare.md").read_text()
    assert iqm == "0.850 [0.740, 0.880]"
    assert f"| `rl2` | 4 | {iqm} |" in compare


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"config": "rl2-ml10"}, r"differs from .* in config: 'rl2-ml10' against 'rl2-ml1'"),
        ({"overrides": []}, r"in overrides"),
        ({"seed": 0}, r"training seeds repeat \(\[0, 0\]\)"),
        ({"success_reward": 10.0}, r"in success_reward: 10.0 against 0.0"),
    ],
)
def test_results_of_different_settings_are_refused(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    other = {**_figures(1, 0.9, 0.2, 0.9), **change}
    (tmp_path / "b").mkdir()
    paths = [*_write(tmp_path, [_figures(0, 0.8, 0.2, 0.9)]), *_write(tmp_path / "b", [other])]
    with pytest.raises(UserError, match=message):
        seeds.report(paths)


def test_meta_batch_and_episodes_per_task_must_agree_where_both_results_give_them(tmp_path: Path) -> None:
    new = _figures(0, 0.8, 0.2, 0.9) | {"meta_batch": 10, "episodes_per_task": 10}
    for i, (change, message) in enumerate(
        [({"meta_batch": 20}, r"in meta_batch: 20 against 10"), ({"episodes_per_task": 13}, r"in episodes_per_task")]
    ):
        folder = tmp_path / str(i)
        folder.mkdir()
        paths = _write(folder, [new, _figures(1, 0.9, 0.2, 0.9) | {"meta_batch": 10, "episodes_per_task": 10} | change])
        with pytest.raises(UserError, match=message):
            seeds.report(paths)
    # a result written before the fields existed does not say, so it is not refused for them
    (tmp_path / "old").mkdir()
    text = seeds.report(_write(tmp_path / "old", [new, _figures(1, 0.9, 0.2, 0.9)]))
    assert "0.850" in text  # the IQM (= mean) of 0.8 and 0.9


def test_results_at_different_env_steps_are_refused(tmp_path: Path) -> None:
    late = _figures(1, 0.9, 0.2, 0.9)
    late["heldout"] = copy.deepcopy(late["heldout"]) | {"env_steps": 2_500_000}
    with pytest.raises(UserError, match=r"evaluated at 2,500,000 env steps, .* at 5,000,000"):
        seeds.report(_write(tmp_path, [_figures(0, 0.8, 0.2, 0.9), late]))


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"agent": "rl2"}))
    for args, message in [
        ([str(tmp_path / "missing.json"), str(bad)], "does not exist"),
        ([str(bad), str(bad)], "is not a learning-benchmark result (no benchmark, config"),
        ([str(bad)], "give at least two results"),
    ]:
        proc = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, check=False)
        assert proc.returncode == 2, proc.stderr
        assert message in proc.stderr and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1


def test_the_learning_benchmark_records_exploit_episode_success_when_the_run_has_it(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location(
        "learning_metaworld", ROOT / "benchmarks" / "learning" / "metaworld.py"
    )
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    head = "iteration,charts/env_steps,charts/episode_return,charts/success_rate,losses/entropy,time/iteration_s"
    plain, exploit = tmp_path / "plain", tmp_path / "exploit"
    for run, extra_head, rows in (
        (plain, "", ["1,100,5.0,0.5,2.0,1.0", "2,200,6.0,0.75,1.9,1.1"]),
        (exploit, ",charts/exploit_success_rate", ["1,100,5.0,0.5,2.0,1.0,0.25", "2,200,6.0,0.75,1.9,1.1,0.5"]),
    ):
        run.mkdir()
        (run / "progress.csv").write_text("\n".join([head + extra_head, *rows]) + "\n")
    assert "train_exploit_success" not in bench.training_curves(plain)
    curves = bench.training_curves(exploit)
    assert curves["train_exploit_success"] == [0.25, 0.5]
    assert curves["train_success"] == [0.5, 0.75] and curves["env_steps"] == [100.0, 200.0]


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("--meta-batch=0", "meta_batch must be a positive integer, got 0"),
        ("--episodes-per-task=0", "episodes_per_task must be a positive integer, got 0"),
        ("--success-reward=-1", "env_success_reward must be a number in [0, 1e6], got -1.0"),
        (
            "--episodes-per-task=7",
            r"episodes_per_task (7) must be a multiple of episodes_per_trial (10): RL² collects whole trials",
        ),
    ],
)
def test_the_learning_benchmark_rejects_a_bad_train_flag_in_one_line(tmp_path: Path, flag: str, message: str) -> None:
    script = ROOT / "benchmarks" / "learning" / "metaworld.py"
    cmd = [sys.executable, str(script), "--agent", "rl2", "--benchmark", "ML1-reach-v3", flag]
    proc = subprocess.run(
        [*cmd, "--out", str(tmp_path / "run"), "--json", str(tmp_path / "x.json")], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].endswith(message) and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


def test_the_report_names_a_success_reward_only_where_the_runs_had_one(tmp_path: Path) -> None:
    plain = seeds.report(_write(tmp_path, THREE), reps=50)
    assert "--success-reward" not in plain
    (tmp_path / "shaped").mkdir()
    shaped = seeds.report(_write(tmp_path / "shaped", [f | {"success_reward": 10.0} for f in THREE]), reps=50)
    assert "overrides `ppo.target_kl=0.02`, `--success-reward 10`; training seeds" in shaped
