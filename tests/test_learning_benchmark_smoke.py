"""Smoke test of benchmarks/learning/metaworld.py: a one-iteration Meta-World run, sampling overlapped with
learning (``--overlap true``), evaluated on 2 held-out goals with the control and the untrained agent; the JSON's
figures are checked, not its speed."""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "learning" / "metaworld.py"


def _bench() -> Any:
    spec = importlib.util.spec_from_file_location("learning_metaworld", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_metaworld_learning_benchmark_quick_writes_its_figures(tmp_path: Path) -> None:
    out, js = tmp_path / "run", tmp_path / "figures.json"
    cmd = [sys.executable, str(SCRIPT), "--agent", "rl2", "--benchmark", "ML1-reach-v3",
           "--out", str(out), "--json", str(js), "--quick", "--overlap", "true"]  # fmt: skip
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


def test_the_learning_benchmark_records_exploit_episode_success_when_the_run_has_it(tmp_path: Path) -> None:
    bench = _bench()
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
        ("--env-success-reward=-1", "env_success_reward must be a number in [0, 1e6], got -1.0"),
        (
            "--episodes-per-task=7",
            r"episodes_per_task (7) must be a multiple of episodes_per_trial (10): RL² collects whole trials",
        ),
    ],
)
def test_the_learning_benchmark_rejects_a_bad_train_flag_in_one_line(tmp_path: Path, flag: str, message: str) -> None:
    cmd = [sys.executable, str(SCRIPT), "--agent", "rl2", "--benchmark", "ML1-reach-v3", flag]
    proc = subprocess.run(
        [*cmd, "--out", str(tmp_path / "run"), "--json", str(tmp_path / "x.json")], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].endswith(message) and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


def _train_flags() -> set[str]:
    """The flags of `metarl train rl2` that set config fields (not its own run-handling flags)."""
    from metarl.cli import build_parser

    top = build_parser(["train", "rl2"])
    sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction)).choices["train"]
    own = {"-h", "--help", "--config", "--out", "--overwrite", "--resume", "--no-progress", "--seeds", "--jobs"}
    return {o for a in sub._actions for o in a.option_strings} - own


def test_the_learning_benchmark_takes_metarl_trains_field_flags_and_no_other_override_syntax() -> None:
    parser = _bench().build_parser(["--agent", "rl2"])
    flags = {o for a in parser._actions for o in a.option_strings}
    train = _train_flags()
    assert {"--env-success-reward", "--target-kl", "--action-input", "--meta-batch", "--total-env-steps"} <= train
    assert train <= flags
    assert "--set" not in flags
    maml = {o for a in _bench().build_parser(["--agent", "maml-trpo"])._actions for o in a.option_strings}
    assert "--hvp-subsample" in maml and "--target-kl" not in maml


def test_the_learning_benchmarks_flags_reach_the_configs_and_the_recorded_overrides(tmp_path: Path) -> None:
    bench = _bench()
    argv = ["--agent", "rl2", "--benchmark", "ml1-reach-v3", "--env-success-reward", "10", "--target-kl", "0.02",
            "--action-input", "false", "--total-env-steps", "1000", "--seed", "3",
            "--out", str(tmp_path / "run"), "--json", str(tmp_path / "x.json")]  # fmt: skip
    parser = bench.build_parser(argv)
    args = parser.parse_args(argv)
    name, named = bench.named_config(parser, args)
    train, given = bench.train_config(parser, args, named)
    agent, overrides = bench.agent_config(parser, args, named.agent)
    assert name == "rl2-ml1" and train.benchmark == "ML1-reach-v3" and train.seed == 3
    assert train.env_success_reward == 10.0 and train.total_env_steps == 1000 and train.max_minutes is None
    assert given == {"benchmark": "ml1-reach-v3", "seed": 3, "env_success_reward": 10.0, "total_env_steps": 1000}
    assert agent.ppo.target_kl == 0.02 and agent.policy.action_input is False
    assert named.agent.policy.action_input is True  # the named config itself is untouched
    assert sorted(overrides) == ["policy.action_input=False", "ppo.target_kl=0.02"]
