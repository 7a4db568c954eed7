"""SB3 baselines scored like meta-learners: from scratch per held-out task, and multi-task zero-shot."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from _helpers import metarl_cli

from metarl.envs import make_distribution
from metarl.evaluation.baselines import run_episodes, sb3_multitask, sb3_scratch
from metarl.evaluation.runner import select_tasks


@pytest.fixture(scope="module")
def nav():  # type: ignore[no-untyped-def]
    dist = make_distribution("point-nav")
    return dist, select_tasks(dist, "test", 2, seed=0)


def test_run_episodes_counts_exactly_n_episodes(nav) -> None:  # type: ignore[no-untyped-def]
    from stable_baselines3 import PPO

    from metarl.integrations.sb3 import TaskVecEnv

    dist, tasks = nav
    venv = TaskVecEnv(dist, split="test", tasks=tasks[:1], backend="inline")
    try:
        model = PPO("MlpPolicy", venv, n_steps=64, batch_size=64, device="cpu", seed=0)
        successes, returns = run_episodes(model, dist, tasks[0], 3, seed=0, deterministic=True)
    finally:
        venv.close()
    assert len(successes) == len(returns) == 3
    assert all(np.isfinite(r) and r < 0 for r in returns)  # point-nav rewards are minus distances
    again = run_episodes(model, dist, tasks[0], 3, seed=0, deterministic=True)
    assert again == (successes, returns)  # deterministic policy, seeded resets


def test_sb3_scratch_trains_per_task_and_reports_before_and_after(nav, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    dist, tasks = nav
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    result = sb3_scratch(dist, tasks, algo="ppo", adaptation_episodes=2, eval_episodes=2, seed=0)
    assert not list(tmp_path.glob("SB3-*"))  # SB3's default logger would leave an empty folder per task here
    assert result.agent == "sb3-ppo-scratch" and result.env_steps == 0
    assert result.curve["x"] == [0, 2] and result.curve["unit"] == "episodes"
    assert set(result.per_task) == {t.id for t in tasks}
    assert result.eval_episodes_per_task == 2 and result.extra["budget_env_steps_per_task"] == 200
    assert result.extra["trained_env_steps_per_task"] == 200  # whole PPO rollouts that add up to the budget
    assert result.return_mean == pytest.approx(result.curve["return"][-1])
    assert 0.0 <= result.success_mean <= 1.0 and np.isfinite(result.return_mean)


def test_sb3_multitask_is_evaluated_zero_shot(nav, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    dist, tasks = nav
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    result = sb3_multitask(dist, tasks, total_env_steps=256, eval_episodes=1, seed=0, workers=1)
    assert not list(tmp_path.glob("SB3-*"))
    assert result.agent == "sb3-ppo-multitask" and result.curve["x"] == [0]
    assert result.env_steps >= 256 and len(result.per_task) == 2


def test_cli_baseline_then_compare_beside_a_meta_learner(tmp_path: Path) -> None:
    out = tmp_path / "bl"
    proc = metarl_cli("baseline", "sb3", "--benchmark", "point-nav", "--tasks-per-family", "2",
                      "--adaptation-episodes", "2", "--eval-episodes", "1", "--out", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / "eval/final.json").read_text())
    assert result["agent"] == "sb3-ppo-scratch" and len(result["per_task"]) == 2
    assert (out / "eval/report.md").is_file()
    cmp = metarl_cli("compare", str(out), "--out", str(tmp_path / "cmp"), "--reps", "100")
    assert cmp.returncode == 0, cmp.stderr
    assert "sb3-ppo-scratch" in (tmp_path / "cmp/compare.md").read_text()
    again = metarl_cli("eval", str(out))
    assert again.returncode == 2 and "holds a baseline" in again.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--multitask", "--algo", "sac"], "--multitask trains SB3 PPO; got --algo sac"),
        (["--total-env-steps", "0"], "--total-env-steps must be a positive integer, got 0"),
        (["--benchmark", "ML11"], "unknown distribution 'ML11'"),
    ],
)
def test_bad_baseline_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    base = ["baseline", "sb3", "--out", str(tmp_path / "o")]
    if "--benchmark" not in args:
        base += ["--benchmark", "point-nav"]
    proc = metarl_cli(*base, *args)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1
    assert not (tmp_path / "o" / "config.json").exists()


def test_ppo_rollouts_add_up_to_the_budget() -> None:
    from metarl.evaluation.baselines import ppo_rollout

    for budget in (200, 1000, 5000, 100_000):
        n_steps, batch = ppo_rollout(budget)
        assert budget % n_steps == 0 and budget // n_steps >= 4 and n_steps <= 2048
        assert n_steps % batch == 0 and batch <= 64
