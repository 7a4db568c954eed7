"""Runs written before a config field was removed stay loadable: ``--resume``, ``metarl eval`` and ``metarl.load``
all read ``config.json`` through :func:`metarl.run.read_run_config`, which accepts a removed field at its old
default and refuses any other value in one line naming the last commit that had it.

The fixtures under ``fixtures/old_configs/`` are copies of committed run directories' ``config.json`` files, written
before the RL² fields they hold were removed: ``rl2-ml10.json`` and ``maml-trpo-ml10.json`` as committed, and
``rl2-ml10-exploit-episodes.json`` the RL² one with ``policy.exploit_episodes`` set to 3 (a lost experiment).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from metarl.agents.configs import get_config
from metarl.agents.rl2 import LAST_COMMIT_WITH_EXPERIMENTS, RL2Config, RL2PolicyConfig, RL2PPOConfig
from metarl.config import TrainConfig, removed_field
from metarl.errors import UserError
from metarl.run import load, load_checkpoint, read_run_config

FIXTURES = Path(__file__).parent / "fixtures" / "old_configs"
ROOT = Path(__file__).resolve().parents[1]
RL2_RUN = ROOT / "benchmarks" / "results" / "ML10" / "rl2-ml10-s0"
REMOVED_RL2 = {
    RL2PolicyConfig: ("log_std_cap_end", "log_std_cap_steps", "log_std_min", "exploit_episodes", "exploit_log_std"),
    RL2PPOConfig: (
        "lr_end", "lr_anneal_steps", "target_kl_log_std", "success_bonus", "exploit_clip_eps", "success_reward",
    ),
}  # fmt: skip


def _run_dir(tmp_path: Path, fixture: str) -> Path:
    """A run directory holding only the fixture as its ``config.json`` (what the loader reads)."""
    run = tmp_path / fixture.removesuffix(".json")
    run.mkdir()
    shutil.copy(FIXTURES / fixture, run / "config.json")
    return run


def test_the_eleven_removed_rl2_fields_are_registered_with_their_old_defaults() -> None:
    old = json.loads((FIXTURES / "rl2-ml10.json").read_text())["agent"]
    for cls, names in REMOVED_RL2.items():
        section = old["policy" if cls is RL2PolicyConfig else "ppo"]
        for name in names:
            record = removed_field(cls, name)
            assert record is not None, name
            assert record.commit == LAST_COMMIT_WITH_EXPERIMENTS and not record.ignored
            assert record.default == section[name], name  # the default the old code wrote
            assert name not in {f.name for f in dataclasses.fields(cls)}  # gone from the code
    assert sum(len(names) for names in REMOVED_RL2.values()) == 11


def test_an_rl2_config_written_before_the_removal_loads_as_the_named_config(tmp_path: Path) -> None:
    train, agent, name = read_run_config(_run_dir(tmp_path, "rl2-ml10.json"))
    assert name == "rl2-ml10" and isinstance(train, TrainConfig) and isinstance(agent, RL2Config)
    # the settings it ran with: the named config plus the run's own budget flag
    named = get_config("rl2-ml10")
    assert agent == named.agent
    assert train == dataclasses.replace(named.train, max_minutes=160.0)


def test_a_removed_field_set_to_another_value_is_refused_naming_the_commit(tmp_path: Path) -> None:
    run = _run_dir(tmp_path, "rl2-ml10-exploit-episodes.json")
    with pytest.raises(UserError) as info:
        read_run_config(run)
    message = str(info.value)
    assert "\n" not in message
    assert "RL2PolicyConfig.exploit_episodes = 3" in message and LAST_COMMIT_WITH_EXPERIMENTS in message
    assert "config.json" in message  # the file it came from


def test_the_refusal_is_one_line_and_exit_2_in_metarl_eval(tmp_path: Path) -> None:
    run = _run_dir(tmp_path, "rl2-ml10-exploit-episodes.json")
    shutil.copy(RL2_RUN / "meta.json", run / "meta.json")
    exe = shutil.which("metarl")
    cmd = [exe] if exe else [sys.executable, "-m", "metarl.cli"]
    proc = subprocess.run([*cmd, "eval", str(run)], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.strip().count("\n") == 0
    assert f"at commit {LAST_COMMIT_WITH_EXPERIMENTS}" in proc.stderr and "exploit_episodes" in proc.stderr


def test_a_maml_config_written_before_the_changes_loads(tmp_path: Path) -> None:
    """The loader ``--resume``, ``metarl eval`` and ``metarl.load`` share accepts the committed MAML run's config."""
    train, agent, name = read_run_config(_run_dir(tmp_path, "maml-trpo-ml10.json"))
    assert name == "maml-trpo-ml10" and train.agent == "maml-trpo" and train.benchmark == "ML10"
    assert dataclasses.is_dataclass(agent)


def test_the_committed_rl2_run_loads_and_evaluates_its_checkpoint() -> None:
    """``metarl eval``'s loader (``metarl.load``) takes the committed ML10 run: its config and its checkpoint, every
    policy tensor as saved, and the loaded policy acts."""
    agent = load(RL2_RUN)
    saved = load_checkpoint(RL2_RUN / "checkpoints" / "latest.pt")["agent"]["policy"]
    loaded = agent.policy.state_dict()  # type: ignore[attr-defined]
    assert set(loaded) == set(saved)
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)
    from metarl.evaluation.runner import EvalSettings, evaluated_tasks

    tasks = evaluated_tasks(RL2_RUN, EvalSettings(tasks_per_family=1))
    assert len(tasks) == 5 and {t.split for t in tasks} == {"test"}  # ML10's five held-out families
