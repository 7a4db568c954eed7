"""`metarl compare` over the learning benchmark's result JSONs (benchmarks/learning/metaworld.py): seeds of one
setting pooled as from run directories, the gap to the control, and results of mixed settings refused (what
``benchmarks/learning/seeds.py`` did before it was folded into compare)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from metarl.errors import UserError
from metarl.evaluation.compare import compare
from metarl.evaluation.result import protocol_name
from metarl.evaluation.stats import aggregate

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MEAN_ACTION, SAMPLED = protocol_name(True), protocol_name(False)


def _figures(seed: int, heldout: float, control: float, sampled: float) -> dict[str, Any]:
    def evaluation(success: float) -> dict[str, Any]:
        return {
            "success": {"mean": success}, "return": 100 * success, "env_steps": 5_000_000,
            "per_family": {"reach-v3": {"success": success, "return": 100 * success}},
            "curve": {"x": [0, 1], "unit": "episodes", "success": [0.1, success], "return": [10.0, 100 * success]},
        }  # fmt: skip

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


def _report(paths: list[Path], out: Path, reps: int = 2000) -> str:
    compare(paths, out, reps=reps)
    return (out / "compare.md").read_text()


def _row(text: str, protocol: str, control: bool = False) -> list[str]:
    """The cells of the one table row of that protocol and feedback."""
    rows = [
        [c.strip() for c in line.split("|")[1:-1]]
        for line in text.splitlines()
        if line.startswith("| `") and f"| {protocol} |" in line and ("control: no reward feedback" in line) == control
    ]
    assert len(rows) == 1, rows
    return rows[0]


def test_three_seeds_give_the_mean_and_the_gap_worked_out_by_hand(tmp_path: Path) -> None:
    text = _report(_write(tmp_path, THREE), tmp_path / "out", reps=500)
    heldout = _row(text, MEAN_ACTION)
    # 3 seeds: the IQM trims nothing, so both columns' points are the mean (0.78 + 0.90 + 0.70) / 3 = 0.7933
    assert heldout[1] == "3" and heldout[2].startswith("0.793 [") and heldout[3].startswith("0.793 [")
    assert _row(text, MEAN_ACTION, control=True)[2].startswith("0.253 [")  # (0.26 + 0.20 + 0.30) / 3
    assert _row(text, SAMPLED)[2].startswith("0.923 [")  # (0.93 + 0.96 + 0.88) / 3
    # gaps 0.52, 0.70, 0.40: mean 0.54; the bootstrap's interval lies within the smallest and largest gap
    gap = next(
        line
        for line in text.splitlines()
        if line.startswith("| `rl2` (rl2-ml1 + ppo.target_kl=0.02, 5,000,000 env steps) |")
    )
    cells = [c.strip() for c in gap.split("|")[1:-1]]
    point, low, high = (float(v) for v in cells[2].replace("[", "").replace("]", "").replace(",", "").split())
    assert point == pytest.approx(0.54, abs=5e-4) and 0.40 - 1e-9 <= low <= point <= high <= 0.70 + 1e-9
    assert cells[4] == "+0.52, +0.70, +0.40" and "training seeds [0, 1, 2]" in text


def test_intervals_are_metarl_compares(tmp_path: Path) -> None:
    expected = aggregate(np.array([[0.78], [0.90], [0.70]]), reps=300, seed=0)["iqm"].format()
    assert expected in _report(_write(tmp_path, THREE), tmp_path / "out", reps=300)


def test_committed_2_5M_seeds_reproduce_the_committed_metarl_compare_report(tmp_path: Path) -> None:
    """The three 2.5M seeds of the best setting of the time: the figures `metarl compare` wrote from their
    EvalResults, now from their JSONs."""
    ablations = RESULTS / "ablations" / "ML1-reach"
    text = _report([ablations / f"rl2-kl02-noact-s{s}-2.5M.json" for s in range(3)], tmp_path)
    committed = (ablations / "rl2-kl02-noact-3seeds-2.5M-compare.md").read_text()
    assert "0.673 [0.560, 0.740]" in committed  # the committed report's IQM
    assert _row(text, MEAN_ACTION)[2:4] == ["0.673 [0.560, 0.740]", "0.673 [0.560, 0.740]"]


def test_committed_5M_shaped_seeds_reproduce_metarl_compare_over_their_runs(tmp_path: Path) -> None:
    """The three 5M seeds of ``rl2-ml1-tuned`` with ``--env-success-reward 10``: compare over their JSONs gives the
    IQM that `metarl compare` wrote from the runs' own EvalResults (committed beside them), and names the shaping."""
    text = _report([RESULTS / "ML1-reach" / f"rl2-tuned-sr10-s{s}-5M.json" for s in range(3)], tmp_path)
    committed = (RESULTS / "ML1-reach" / "rl2-tuned-sr10-3seeds-5M-metarl-compare.md").read_text()
    assert "| `rl2` | 3 | 0.813 [0.740, 0.860] | 0.813 [0.740, 0.860] |" in committed
    assert _row(text, MEAN_ACTION)[1:4] == ["3", "0.813 [0.740, 0.860]", "0.813 [0.740, 0.860]"]
    assert "`--env-success-reward 10`" in text and "| 5,000,000 |" in text


def test_committed_4_seed_shaped_compare_is_the_aggregate_of_the_four_jsons(tmp_path: Path) -> None:
    """Seeds 0-2 (``--config rl2-ml1-tuned --env-success-reward 10``) and seed 3 (``--config rl2-ml1-shaped``) are
    one setting under two names, so compare keeps them in two rows; `metarl compare` over their runs (whose results
    did not record the config) pooled them, and its IQM is the stratified-bootstrap aggregate of the four JSONs'
    held-out success."""
    names = [f"rl2-tuned-sr10-s{s}-5M.json" for s in range(3)] + ["rl2-shaped-s3-5M.json"]
    figs = [json.loads((RESULTS / "ML1-reach" / n).read_text()) for n in names]
    assert {f["success_reward"] for f in figs} == {10.0} and {f["heldout"]["env_steps"] for f in figs} == {5_000_000}
    assert [f["seed"] for f in figs] == [0, 1, 2, 3]
    scores = np.array([[f["heldout"]["success"]["mean"]] for f in figs])
    iqm = aggregate(scores, reps=2000, seed=0)["iqm"].format()
    committed = (RESULTS / "ML1-reach" / "rl2-shaped-4seeds-5M-metarl-compare.md").read_text()
    assert iqm == "0.850 [0.740, 0.880]"
    assert f"| `rl2` | 4 | {iqm} |" in committed
    text = _report([RESULTS / "ML1-reach" / n for n in names], tmp_path)
    assert "not pooled as seeds: its results differ in config" in text


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"seed": 0}, r"training seeds repeat \(\[0, 0\]\)"),
        ({"env_success_reward": 10.0}, r"in env_success_reward: 10.0 against 0.0"),
        ({"success_reward": 10.0}, r"in env_success_reward: 10.0 against 0.0"),  # the key's name in older JSONs
        ({"goals_per_family": 10}, r"in goals_per_family: 10 against None"),
        ({"overlap": True}, r"in overlap: True against False"),
    ],
)
def test_results_of_different_settings_are_refused(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    other = {**_figures(1, 0.9, 0.2, 0.9), **change}
    (tmp_path / "b").mkdir()
    paths = [*_write(tmp_path, [_figures(0, 0.8, 0.2, 0.9)]), *_write(tmp_path / "b", [other])]
    with pytest.raises(UserError, match=message):
        compare(paths, tmp_path / "out")


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"config": "rl2-ml1-tuned"}, "config"),
        ({"overrides": []}, "protocol, reward feedback, settings changed from the config"),
        (None, "env steps"),
    ],
)
def test_results_of_another_config_or_budget_get_their_own_rows(
    tmp_path: Path, change: dict[str, Any] | None, words: str
) -> None:
    other = _figures(1, 0.9, 0.2, 0.9)
    if change is None:  # evaluated at another budget
        for key in ("heldout", "heldout_sampled", "control"):
            other[key] = copy.deepcopy(other[key]) | {"env_steps": 2_500_000}
    else:
        other |= change
    text = _report(_write(tmp_path, [_figures(0, 0.8, 0.2, 0.9), other]), tmp_path / "out", reps=50)
    assert f"`rl2` has 6 rows, not pooled as seeds: its results differ in {words}" in text


def test_meta_batch_and_episodes_per_task_must_agree_where_both_results_give_them(tmp_path: Path) -> None:
    new = _figures(0, 0.8, 0.2, 0.9) | {"meta_batch": 10, "episodes_per_task": 10}
    for i, (change, message) in enumerate(
        [({"meta_batch": 20}, r"in meta_batch: 20 against 10"), ({"episodes_per_task": 13}, r"in episodes_per_task")]
    ):
        folder = tmp_path / str(i)
        folder.mkdir()
        paths = _write(folder, [new, _figures(1, 0.9, 0.2, 0.9) | {"meta_batch": 10, "episodes_per_task": 10} | change])
        with pytest.raises(UserError, match=message):
            compare(paths, folder / "out")
    # a result written before the fields existed does not say, so it is not refused for them
    (tmp_path / "old").mkdir()
    text = _report(_write(tmp_path / "old", [new, _figures(1, 0.9, 0.2, 0.9)]), tmp_path / "old" / "out", reps=50)
    assert _row(text, MEAN_ACTION)[2].startswith("0.850")  # the IQM (= mean) of 0.8 and 0.9


def test_a_maml_result_gives_its_two_evaluations_and_its_curve_holds_the_control(tmp_path: Path) -> None:
    maml = _figures(0, 0.8, 0.2, 0.9) | {"agent": "maml-trpo", "config": "maml-trpo-ml1", "overrides": []}
    maml["control"] = {"kind": "curve point 0 (no inner step)", "success": 0.1, "return": 10.0}
    text = _report(_write(tmp_path, [maml]), tmp_path / "out", reps=50)
    assert _row(text, MEAN_ACTION)[0] == "`maml-trpo`" and _row(text, SAMPLED)[2] == "0.900 (1 run: no CI)"
    assert "2 runs in 2 rows" in text and "no reward feedback |" not in text  # no control row


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"agent": "rl2", "heldout": {}}))
    incomplete = tmp_path / "incomplete.json"
    incomplete.write_text(json.dumps(_figures(0, 0.8, 0.2, 0.9) | {"heldout": {"per_family": {}}}))
    for args, message in [
        ([str(tmp_path / "missing.json"), str(bad)], "no such run directory or result file"),
        ([str(bad), str(bad)], "is not a learning-benchmark result (no benchmark, config, seed)"),
        ([str(incomplete)], "its 'heldout' evaluation is incomplete"),
    ]:
        cmd = [sys.executable, "-c", "from metarl.cli import main; raise SystemExit(main())", "compare", *args]
        proc = subprocess.run([*cmd, "--out", str(tmp_path / "out")], capture_output=True, text=True, check=False)
        assert proc.returncode == 2, proc.stderr
        assert message in proc.stderr and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1


def test_the_report_names_a_success_reward_only_where_the_runs_had_one(tmp_path: Path) -> None:
    plain = _report(_write(tmp_path, THREE), tmp_path / "out", reps=50)
    assert "--env-success-reward" not in plain
    (tmp_path / "shaped").mkdir()
    shaped_figures = [f | {"env_success_reward": 10.0} for f in THREE]
    shaped = _report(_write(tmp_path / "shaped", shaped_figures), tmp_path / "shaped" / "out", reps=50)
    assert "overrides `ppo.target_kl=0.02`, `--env-success-reward 10`; training seeds [0, 1, 2]" in shaped
