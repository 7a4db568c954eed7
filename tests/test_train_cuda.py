"""Whole training iterations with the learner on CUDA (skipped without a GPU): they run, and they take
the step the CPU learner takes, up to floating-point order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import metarl
from metarl.agents.maml import MAMLConfig
from metarl.agents.rl2 import RL2Config, RL2PolicyConfig
from metarl.config import TrainConfig
from metarl.run import build_agent, load_checkpoint, make_run_distribution

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _config(agent: str, device: str) -> TrainConfig:
    return TrainConfig(
        agent=agent, benchmark="point-nav", seed=3, iterations=1, meta_batch=3, episodes_per_task=2,
        workers=1, backend="inline", slots_per_family=6, eval_every=0, checkpoint_every=1, device=device,
        torch_threads=1,
    )  # fmt: skip


def _flat(policy: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.detach().cpu().double().flatten() for t in policy.values() if t.is_floating_point()])


@pytest.mark.parametrize(
    ("agent", "cfg"),
    [
        ("rl2", RL2Config(episodes_per_trial=2, policy=RL2PolicyConfig(mlp_hidden=(16,), gru_hidden=16))),
        ("maml-trpo", MAMLConfig(hidden=(16,))),
    ],
)
def test_one_iteration_on_cuda_takes_the_cpu_learners_step(tmp_path: Path, agent: str, cfg: Any) -> None:
    init_cfg = _config(agent, "cpu")
    init = build_agent(init_cfg, cfg, make_run_distribution(init_cfg), torch.device("cpu")).state_dict()["policy"]
    after: dict[str, dict[str, torch.Tensor]] = {}
    for device in ("cpu", "cuda"):
        run = metarl.train(_config(agent, device), cfg, out=tmp_path / device, progress=False)
        after[device] = load_checkpoint(run / "checkpoints/latest.pt")["agent"]["policy"]
        assert after[device].keys() == init.keys()
        assert all(t.device.type == "cpu" for t in after[device].values())  # checkpoints load anywhere
    step_cpu, step_cuda = _flat(after["cpu"]) - _flat(init), _flat(after["cuda"]) - _flat(init)
    assert torch.isfinite(step_cuda).all() and step_cpu.norm() > 0
    # same samples up to the policy's rounding on the GPU, learner maths in another order: the same step
    cosine = float(step_cpu @ step_cuda / (step_cpu.norm() * step_cuda.norm()))
    assert cosine >= 0.99, cosine
    assert 0.95 <= float(step_cuda.norm() / step_cpu.norm()) <= 1.05
