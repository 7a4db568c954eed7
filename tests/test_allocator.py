"""``metarl.allocator.keep_freed_memory``: set where glibc is, skipped when the environment says so, and it
never changes a computed number (a fused-GRU update's gradients are bitwise equal with and without it).  Each
case runs in a fresh process: an allocator setting holds for the whole process."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
from _helpers import refused_train_setting

import metarl

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"

_PROBE = """
import json, sys, torch
from metarl.allocator import keep_freed_memory
from metarl.agents.gru import gru_sequence
kept = keep_freed_memory()
torch.manual_seed(0)
gru = torch.nn.GRU(16, 24)
x = torch.randn(300, 8, 16, requires_grad=True)
for _ in range(3):  # allocate and free several times, so that reuse (or not) of freed blocks comes into play
    gru.zero_grad(); x.grad = None
    gru_sequence(gru, x, torch.zeros(8, 24)).pow(2).sum().backward()
grads = [p.grad.flatten().tolist() for p in gru.parameters()] + [x.grad.flatten().tolist()]
print(json.dumps({"kept": kept, "again": keep_freed_memory(), "grads": grads}))
"""


def _probe(setting: str | None) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k != "METARL_KEEP_FREED_MEMORY"}
    if setting is not None:
        env["METARL_KEEP_FREED_MEMORY"] = setting
    proc = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_set_on_glibc_skipped_on_request_and_numbers_unchanged() -> None:
    default, off = _probe(None), _probe("0")
    assert default["kept"] is GLIBC and default["again"] is GLIBC  # a second call reports the same
    assert off["kept"] is False and off["again"] is False
    assert default["grads"] == off["grads"]  # bitwise: where memory comes from changes no number


def test_a_bad_setting_is_one_line_naming_what_is_valid(tmp_path: Path) -> None:
    last = refused_train_setting(tmp_path, "METARL_KEEP_FREED_MEMORY", "no")
    assert last.endswith("METARL_KEEP_FREED_MEMORY must be 0 (off) or 1 (on, the default), got 'no'")


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_training_sets_it_in_the_learner_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from metarl import training
    from metarl.agents.rl2 import RL2Config, RL2PolicyConfig, RL2PPOConfig
    from metarl.config import TrainConfig

    calls: list[bool] = []
    real = training.keep_freed_memory

    def recorded() -> bool:
        calls.append(real())
        return calls[-1]

    monkeypatch.setattr(training, "keep_freed_memory", recorded)
    train = TrainConfig(agent="rl2", benchmark="point-nav", seed=0, iterations=1, meta_batch=2, episodes_per_task=2,
                        workers=1, backend="inline", eval_every=0)  # fmt: skip
    agent = RL2Config(episodes_per_trial=2, policy=RL2PolicyConfig(mlp_hidden=(8,), gru_hidden=8),
                      ppo=RL2PPOConfig(epochs=1, minibatches=1, bptt_chunk=40, bptt_overlap=10))  # fmt: skip
    metarl.train(train, agent, out=tmp_path / "run", progress=False)
    assert calls == [True]
