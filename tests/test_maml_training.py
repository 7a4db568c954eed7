"""The MAML family through the shared training loop: CLI smoke runs, resume, load, bad input."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from _helpers import metarl_cli
from _helpers import progress_rows as _rows

import metarl
from metarl.agents.maml import MAMLAgent, MAMLConfig, ReptileConfig
from metarl.config import TrainConfig
from metarl.run import load_checkpoint

TINY = [
    "--meta-batch", "3", "--episodes-per-task", "2", "--hidden", "16", "16", "--slots-per-family", "6",
    "--eval-every", "1", "--eval-tasks", "2", "--adaptation-episodes", "1", "--eval-episodes", "1",
    "--checkpoint-every", "1", "--no-progress",
]  # fmt: skip


def test_cli_train_maml_trpo_then_resume(tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = metarl_cli(
        "train", "maml-trpo", "--config", "maml-trpo-point-nav", "--iterations", "2", "--out", str(run), *TINY
    )
    assert proc.returncode == 0, proc.stderr
    for name in ("config.json", "meta.json", "progress.csv", "checkpoints/latest.pt", "eval/latest.json"):
        assert (run / name).is_file(), name
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["agent"] == "maml-trpo" and config["agent"]["hidden"] == [16, 16]
    rows = _rows(run)
    assert [r["iteration"] for r in rows] == ["1", "2"]
    for row in rows:
        for key in ("charts/pre_adaptation_return", "charts/post_adaptation_return", "losses/kl", "trpo/accepted"):
            assert math.isfinite(float(row[key])), key
        assert float(row["losses/kl"]) <= 0.01 * (1 + 1e-4)
    # pre + post phases: 2 x 3 tasks x 2 episodes of at most 100 steps
    assert 0 < float(rows[0]["charts/env_steps"]) <= 1200
    result = json.loads((run / "eval/latest.json").read_text())
    assert (result["agent"], result["split"]) == ("maml-trpo", "test")
    assert result["curve"]["unit"] == "gradient_steps" and result["curve"]["x"] == [0, 1]
    assert result["return_mean"] == pytest.approx(result["curve"]["return"][-1])

    proc = metarl_cli("train", "--resume", str(run), "--iterations", "3", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert [r["iteration"] for r in _rows(run)] == ["1", "2", "3"]
    assert load_checkpoint(run / "checkpoints/latest.pt")["run"]["iteration"] == 3


@pytest.mark.parametrize("agent", ["maml-ppo", "fomaml", "reptile"])
def test_cli_trains_every_variant(tmp_path: Path, agent: str) -> None:
    run = tmp_path / agent
    proc = metarl_cli("train", agent, "--iterations", "1", "--out", str(run), *TINY)
    assert proc.returncode == 0, proc.stderr
    config = json.loads((run / "config.json").read_text())
    assert config["config_name"] == f"{agent}-point-nav" and config["train"]["agent"] == agent
    row = _rows(run)[0]
    assert math.isfinite(float(row["charts/post_adaptation_return"]))
    assert json.loads((run / "eval/latest.json").read_text())["agent"] == agent


def _tiny(iterations: int, agent: str = "maml-trpo") -> TrainConfig:
    return TrainConfig(
        agent=agent, benchmark="point-nav", seed=4, iterations=iterations, meta_batch=3, episodes_per_task=2,
        workers=1, backend="inline", slots_per_family=6, eval_every=0, checkpoint_every=1,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("agent", "cfg"), [("maml-trpo", MAMLConfig(hidden=(8,))), ("reptile", ReptileConfig(hidden=(8,)))]
)
def test_two_plus_two_iterations_after_resume_equal_four(tmp_path: Path, agent: str, cfg: MAMLConfig) -> None:
    metarl.train(_tiny(4, agent), cfg, out=tmp_path / "straight", progress=False)
    metarl.train(_tiny(2, agent), cfg, out=tmp_path / "split", progress=False)
    metarl.resume(tmp_path / "split", iterations=4, progress=False)
    a = load_checkpoint(tmp_path / "straight/checkpoints/latest.pt")
    b = load_checkpoint(tmp_path / "split/checkpoints/latest.pt")
    assert a["run"] == {**b["run"], "wall_s": a["run"]["wall_s"]}
    for name, tensor in a["agent"]["policy"].items():
        assert torch.equal(tensor, b["agent"]["policy"][name]), name
    first = load_checkpoint(tmp_path / "straight/checkpoints/iter-000001.pt")["agent"]["policy"]
    assert any(not torch.equal(first[k], v) for k, v in a["agent"]["policy"].items())


def test_load_returns_a_maml_agent_that_adapts(tmp_path: Path) -> None:
    run = metarl.train(_tiny(1), MAMLConfig(hidden=(8,)), out=tmp_path / "run", progress=False)
    agent = metarl.load(run)
    assert isinstance(agent, MAMLAgent) and agent.name == "maml-trpo"
    saved = load_checkpoint(run / "checkpoints/latest.pt")["agent"]["policy"]
    for name, tensor in agent.policy.state_dict().items():
        assert torch.equal(tensor, saved[name])


def test_repeat_tasks_allows_a_meta_batch_larger_than_the_split(tmp_path: Path) -> None:
    cfg = TrainConfig(
        agent="maml-trpo", benchmark="cheetah-dir", max_episode_steps=10, meta_batch=4, repeat_tasks=True,
        episodes_per_task=1, iterations=1, workers=1, backend="inline", eval_every=0,
    )  # fmt: skip
    run = metarl.train(cfg, MAMLConfig(hidden=(8,)), out=tmp_path / "run", progress=False)
    # 4 tasks (the 2 directions, twice) x 1 episode x 10 steps, before and after adaptation
    assert float(_rows(run)[0]["charts/env_steps"]) == 4 * 10 * 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "maml-trpo", "--inner-lr", "0", "--iterations", "1"],
         "inner_lr must be a positive finite number, got 0.0"),
        (["train", "maml-trpo", "--inner-steps", "0", "--iterations", "1"],
         "inner_steps must be a positive integer, got 0"),
        (["train", "maml-trpo", "--max-kl", "-1", "--iterations", "1"],
         "max_kl must be a positive finite number, got -1.0"),
        (["train", "reptile", "--config", "maml-trpo-point-nav"],
         "config 'maml-trpo-point-nav' is for agent 'maml-trpo', not 'reptile'"),
        (["train", "maml-trpo", "--max-episode-steps", "0", "--iterations", "1"],
         "max_episode_steps must be a positive integer"),
        (["train", "maml-trpo", "--benchmark", "ML1-reach-v3", "--max-episode-steps", "50", "--iterations", "1"],
         "max_episode_steps"),
    ],
)  # fmt: skip
def test_bad_maml_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    proc = metarl_cli(*args, "--out", str(tmp_path / "out"))
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert re.search(message, proc.stderr), proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert not (tmp_path / "out" / "config.json").exists()
