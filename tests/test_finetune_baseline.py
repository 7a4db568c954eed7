"""Pre-training + fine-tuning baseline (`metarl baseline sb3 --multitask --fine-tune`): the fine-tuned copy starts
at the pre-trained weights, fine-tunes on exactly K x horizon env steps per held-out task, and pre-training never
sees a held-out task; the result is its own row in `metarl compare`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from _helpers import metarl_cli

from metarl.envs import make_distribution
from metarl.evaluation.baselines import BaselineSettings, run_baseline
from metarl.evaluation.finetune import AGENT, PRETRAIN_TASKS, PRETRAINED_MODEL, finetune_model, pretrain
from metarl.evaluation.runner import select_tasks


@pytest.fixture(scope="module")
def nav_pretrained(tmp_path_factory: pytest.TempPathFactory) -> Any:
    dist = make_distribution("point-nav")
    out = tmp_path_factory.mktemp("pretrained")
    return dist, pretrain(dist, out, total_env_steps=256, seed=0, workers=1)


def test_pretraining_saves_the_model_and_counts_its_steps(nav_pretrained: Any) -> None:
    _, pre = nav_pretrained
    assert pre.path.name == PRETRAINED_MODEL and pre.path.is_file()
    assert pre.env_steps == 2048  # SB3 PPO stops at its first whole rollout (2048 steps, one env) past 256
    record = json.loads((pre.path.parent / PRETRAIN_TASKS).read_text())
    assert record["env_steps"] == pre.env_steps and record["task_ids"] == list(pre.task_ids)
    assert all("/train/" in t for t in pre.task_ids) and len(pre.task_ids) > 1  # tasks resampled per episode


def test_finetuned_copy_starts_at_the_pretrained_weights_and_moves_after_its_first_update(nav_pretrained: Any) -> None:
    from stable_baselines3.common.save_util import load_from_zip_file

    from metarl.integrations.sb3 import TaskVecEnv

    dist, pre = nav_pretrained
    task = select_tasks(dist, "test", 1, seed=0)[0]
    _, params, _ = load_from_zip_file(pre.path, device="cpu")
    assert params is not None
    saved = params["policy"]
    venv = TaskVecEnv(dist, split="test", tasks=[task], backend="inline")
    try:
        model = finetune_model(pre.path, venv, budget=2 * dist.max_episode_steps, seed=0)
        start = {k: v.clone() for k, v in model.policy.state_dict().items()}
        assert start.keys() == saved.keys() and all(torch.equal(start[k], saved[k]) for k in saved)
        assert model.policy.optimizer.state_dict()["state"] == {}  # a fresh Adam, not the pre-training one
        widths = [m.out_features for m in model.policy.mlp_extractor.policy_net if hasattr(m, "out_features")]
        assert widths == [512, 512]
        assert (model.n_steps, 2 * dist.max_episode_steps // model.n_steps) == (50, 4)  # 4 updates in the budget
        model.learn(total_timesteps=model.n_steps)  # one rollout, one update
        after = model.policy.state_dict()
        assert model.num_timesteps == model.n_steps
        assert any(not torch.equal(after[k], start[k]) for k in start)
    finally:
        venv.close()


def test_point_nav_fine_tune_budget_held_out_tasks_and_record(tmp_path: Path) -> None:
    dist = make_distribution("point-nav")
    settings = BaselineSettings(benchmark="point-nav", multitask=True, fine_tune=True, fine_tune_episodes=(3, 1),
                                total_env_steps=300, tasks_per_family=3, eval_episodes=2, jobs=2)  # fmt: skip
    seen: list[tuple[int, int]] = []
    result, written = run_baseline(settings, tmp_path / "ft", progress=lambda d, n: seen.append((d, n)))
    assert seen == [(1, 3), (2, 3), (3, 3)]
    assert written[0] == tmp_path / "ft/eval/final.json" and written[0].is_file()
    assert result.agent == AGENT == "sb3-ppo-pretrain-finetune"
    assert result.curve["x"] == [0, 1, 3] and result.curve["unit"] == "episodes" and result.adaptation_episodes == 3
    assert result.return_mean == pytest.approx(result.curve["return"][-1])
    horizon = dist.max_episode_steps
    steps = result.extra["finetune_env_steps_by_task"]
    assert len(steps) == 3 and all(v == [horizon, 3 * horizon] for v in steps.values())  # counted, per task and K
    assert result.extra["finetune_env_steps_per_task"] == [horizon, 3 * horizon]
    assert result.extra["finetune_updates_per_task"] == [4, 4]
    assert result.env_steps == result.extra["pretrain_env_steps"] == 2048  # pre-training recorded apart
    # held-out tasks never appear in pre-training: by id and by what defines them
    ids = json.loads((tmp_path / "ft" / PRETRAIN_TASKS).read_text())["task_ids"]
    train = {t.id: t for t in dist.tasks("train")}
    assert ids and set(ids) <= set(train)
    pretrained_content = {(train[i].family, train[i].params) for i in ids}
    held_out = select_tasks(dist, "test", 3, seed=0)
    assert not pretrained_content & {(t.family, t.params) for t in held_out}
    assert result.extra["held_out_tasks_seen_in_pretraining"] == 0
    config = json.loads((tmp_path / "ft/config.json").read_text())["baseline"]
    assert config["kind"] == "sb3-pretrain-finetune" and config["fine_tune_episodes"] == [3, 1]
    assert (tmp_path / "ft" / PRETRAINED_MODEL).is_file()


def test_cli_ml1_reach_fine_tune_then_compare_shows_its_own_row(tmp_path: Path) -> None:
    out = tmp_path / "ft"
    proc = metarl_cli("baseline", "sb3", "--benchmark", "ML1-reach-v3", "--multitask", "--fine-tune",
                      "--total-env-steps", "64", "--fine-tune-episodes", "1", "--tasks-per-family", "2",
                      "--eval-episodes", "1", "--jobs", "2", "--out", str(out), timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "sb3-ppo-pretrain-finetune on 2 test task(s) of ML1-reach-v3" in proc.stdout
    result = json.loads((out / "eval/final.json").read_text())
    assert result["curve"]["x"] == [0, 1] and result["protocol"] == "sampled adaptation, mean-action evaluation"
    assert all(v == [500] for v in result["finetune_env_steps_by_task"].values())
    # beside a meta-learner's result of the same benchmark: compare keeps the baseline its own row
    other = dict(result, agent="maml-trpo", config_name="maml-trpo-ml1-reach", env_steps=2_000_000)
    (tmp_path / "maml.json").write_text(json.dumps(other))
    cmp = metarl_cli("compare", str(out), str(tmp_path / "maml.json"), "--out", str(tmp_path / "cmp"), "--reps", "50")
    assert cmp.returncode == 0, cmp.stderr
    rows = [line for line in (tmp_path / "cmp/compare.md").read_text().splitlines() if line.startswith("| `")]
    assert any("`sb3-ppo-pretrain-finetune`" in r for r in rows) and any("`maml-trpo`" in r for r in rows)
    assert not any("sb3-ppo-pretrain-finetune" in r and "maml-trpo" in r for r in rows)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fine-tune"], "--fine-tune fine-tunes the multi-task PPO; add --multitask"),
        (
            ["--multitask", "--fine-tune", "--fine-tune-episodes", "0"],
            "--fine-tune-episodes must be positive integers, got [0]",
        ),
        (["--multitask", "--fine-tune", "--fine-tune-episodes", "10", "-2"], "got [10, -2]"),
        (
            ["--multitask", "--fine-tune", "--total-env-steps", "0"],
            "--total-env-steps must be a positive integer, got 0",
        ),
        (["--multitask", "--fine-tune", "--jobs", "0"], "--jobs must be a positive integer, got 0"),
        (["--multitask", "--fine-tune-episodes", "10"], "add --multitask --fine-tune"),
        (["--multitask", "--fine-tune", "--adaptation-episodes", "5"], "not --adaptation-episodes"),
        (["--jobs", "4"], "--jobs and --envs-per-family set the multi-task PPO's envs; add --multitask"),
    ],
)
def test_bad_fine_tune_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    proc = metarl_cli("baseline", "sb3", "--benchmark", "point-nav", "--out", str(tmp_path / "o"), *args)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_help_documents_the_fine_tune_baseline() -> None:
    proc = metarl_cli("baseline", "sb3", "--help")
    assert proc.returncode == 0
    for words in ("--fine-tune", "--fine-tune-episodes", "sb3-ppo-pretrain-finetune", "2x512 tanh", "--jobs"):
        assert words in proc.stdout
