"""Helpers shared by test modules (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any


def metarl_cli(
    *args: str, timeout: float = 300, env_extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the ``metarl`` command (the installed script, else ``python -m metarl.cli``), with ``env_extra`` added
    to this process's environment."""
    exe = shutil.which("metarl")
    cmd = [exe, *args] if exe else [sys.executable, "-m", "metarl.cli", *args]
    env = {k: v for k, v in os.environ.items() if k != "METARL_DEBUG"} | (env_extra or {})
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False)


def progress_rows(run: Path) -> list[dict[str, str]]:
    """The rows of a run's progress.csv."""
    with (run / "progress.csv").open() as fh:
        return list(csv.DictReader(fh))


def tiny_rl2_config(bptt_chunk: int = 50) -> Any:
    """An RL² config small enough for CLI and backend smoke runs (trials of 2 episodes, 8 hidden units)."""
    from metarl.agents.rl2 import RL2Config, RL2PolicyConfig, RL2PPOConfig

    return RL2Config(
        episodes_per_trial=2,
        policy=RL2PolicyConfig(mlp_hidden=(8,), gru_hidden=8),
        ppo=RL2PPOConfig(epochs=1, minibatches=1, bptt_chunk=bptt_chunk, bptt_overlap=bptt_chunk // 5),
    )


def tiny_official_ml1_envs() -> Any:
    """Meta-World's own ML1 reach test envs (2 envs, 2 tasks, 15-step episodes) for its evaluator."""
    import gymnasium as gym
    import metaworld  # noqa: F401  (registers the Meta-World/* env ids)

    return gym.make_vec(
        "Meta-World/ML1-test", env_name="reach-v3", seed=0, vector_strategy="sync",
        meta_batch_size=2, total_tasks_per_cls=2, max_episode_steps=15,
    )  # fmt: skip


def one_row_step(
    obs: Any, *, trial_start: bool, episode_start: bool, noise: Any, reward: float = 0.0, slot: int = 0
) -> Any:
    """A one-row StepBatch (2-d actions): the done flag is set at episode starts after the trial's first."""
    import torch

    from metarl.rollout.types import StepBatch

    return StepBatch(
        obs=obs,
        prev_action=torch.zeros(1, 2),
        prev_reward=torch.tensor([reward]),
        prev_done=torch.tensor([episode_start and not trial_start]),
        episode_start=torch.tensor([episode_start]),
        trial_start=torch.tensor([trial_start]),
        slot=torch.tensor([slot]),
        task=torch.tensor([0]),
        noise=noise,
    )


def refused_train_setting(tmp_path: Path, name: str, value: str) -> str:
    """Start a one-iteration point-nav RL² run with the environment variable ``name`` set to ``value``; check it is
    refused as a user error (exit 2, no traceback, no run directory) and return the last line of stderr."""
    run = tmp_path / "run"
    proc = metarl_cli("train", "rl2", "--benchmark", "point-nav", "--iterations", "1", "--out", str(run),
                      "--no-progress", env_extra={name: value})  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and not run.exists()
    return proc.stderr.strip().splitlines()[-1]
