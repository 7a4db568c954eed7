"""A run stopped by ``--max-minutes`` and committed pruned (config.json, meta.json, checkpoints/latest.pt; no
iteration copies, events, progress or eval files) resumes on another checkout bitwise where an uninterrupted run
ends: Meta-World ML1-reach with the named configs' network sizes and 2 learner threads."""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import torch

import metarl
import metarl.training
from metarl.agents.configs import get_config
from metarl.run import load_checkpoint

ITERATIONS = 3
pytestmark = pytest.mark.slow  # about 3.5 min per agent on 2 cores (real network sizes)
KEEP = ("config.json", "meta.json", "checkpoints/latest.pt")


class _MinuteClock:
    """``time`` for the training loop with a monotonic clock that advances one minute per reading, so that
    ``max_minutes=2.5`` stops a run after exactly two iterations whatever the machine's speed."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        self.now += 60.0
        return self.now

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def _configs(agent: str) -> tuple[Any, Any]:
    """The named ML1 config of ``agent`` (its network sizes) on a small meta-batch, 2 learner threads."""
    named = get_config("rl2-ml1" if agent == "rl2" else "maml-trpo-ml1")
    train = dataclasses.replace(
        named.train, seed=4, meta_batch=2, episodes_per_task=2, total_env_steps=None, iterations=ITERATIONS,
        workers=1, backend="inline", torch_threads=2, eval_every=0, checkpoint_every=1,
    )  # fmt: skip
    cfg = named.agent
    if agent == "rl2":
        cfg = dataclasses.replace(cfg, episodes_per_trial=2)
    return train, cfg


@pytest.mark.parametrize("agent", ["rl2", "maml-trpo"])
def test_a_max_minutes_stop_committed_pruned_resumes_bitwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, agent: str
) -> None:
    train, cfg = _configs(agent)
    straight = metarl.train(train, cfg, out=tmp_path / "straight", progress=False)

    with monkeypatch.context() as patch:
        patch.setattr(metarl.training, "time", _MinuteClock())
        stopped = metarl.train(
            dataclasses.replace(train, max_minutes=2.5), cfg, out=tmp_path / "stopped", progress=False
        )
    assert load_checkpoint(stopped / "checkpoints/latest.pt")["run"]["iteration"] == 2
    assert (stopped / "checkpoints/iter-000001.pt").is_file()  # what the commit leaves out

    committed = tmp_path / "committed"  # what a session commits and the next one checks out
    for name in KEEP:
        (committed / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(stopped / name, committed / name)
    metarl.resume(committed, iterations=ITERATIONS, max_minutes=60.0, progress=False)

    resumed = load_checkpoint(committed / "checkpoints/latest.pt")
    expected = load_checkpoint(straight / "checkpoints/latest.pt")
    assert resumed["run"]["iteration"] == ITERATIONS
    assert resumed["run"] == {**expected["run"], "wall_s": resumed["run"]["wall_s"]}
    assert resumed["engine"] == expected["engine"] and resumed["task_rng"] == expected["task_rng"]
    assert resumed["learner"]["torch_threads"] == expected["learner"]["torch_threads"] == 2
    params, want = resumed["agent"]["policy"], expected["agent"]["policy"]
    assert params.keys() == want.keys() and len(want) > 0
    different = [name for name in want if not torch.equal(params[name], want[name])]
    assert not different, f"{len(different)} of {len(want)} tensors differ from the uninterrupted run: {different}"
