"""``--overlap``: the next batch is sampled in a background thread while the learner updates.

Batches carry the policy version that collected them, PPO's ratio is taken against their stored behaviour
log-probabilities (not the current policy's), the run resumes exactly, a cancelled background collect
stops at once and leaves the engine usable, and agents that need on-policy samples refuse the option.
(Exact resume after a signal in the middle of an overlapped iteration is in ``test_resume_exact.py``.)
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from _helpers import metarl_cli, progress_rows

import metarl
from metarl.agents.rl2 import RL2Config, RL2PolicyConfig, RL2PPOConfig
from metarl.config import TrainConfig
from metarl.envs import make_distribution
from metarl.errors import UserError
from metarl.rollout import BackgroundCollect, CollectCancelled, RolloutEngine
from metarl.run import load_checkpoint


def _configs(iterations: int, overlap: bool) -> tuple[TrainConfig, RL2Config]:
    train = TrainConfig(
        agent="rl2", benchmark="point-nav", seed=4, iterations=iterations, meta_batch=3, episodes_per_task=2,
        workers=1, backend="inline", eval_every=0, checkpoint_every=1, torch_threads=1, overlap=overlap,
    )  # fmt: skip
    agent = RL2Config(
        episodes_per_trial=2,
        policy=RL2PolicyConfig(mlp_hidden=(16,), gru_hidden=8),
        # shuffled minibatches; no KL early stop, so every iteration takes its full update
        ppo=RL2PPOConfig(epochs=3, minibatches=2, bptt_chunk=40, bptt_overlap=10, lr=3e-3),
    )
    return train, agent


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("overlap")
    out = {}
    for name, overlap in (("sync", False), ("overlap", True)):
        train, agent = _configs(4, overlap)
        out[name] = metarl.train(train, agent, out=root / name, progress=False)
    return out


def test_batches_carry_one_iteration_of_policy_lag(runs: dict[str, Path]) -> None:
    rows = progress_rows(runs["overlap"])
    assert [float(r["overlap/policy_lag"]) for r in rows] == [0.0, 1.0, 1.0, 1.0]  # the first batch is on-policy
    ckpt = load_checkpoint(runs["overlap"] / "checkpoints/latest.pt")
    agent = ckpt["agent"]
    assert agent["updates"] == 4
    # the batch collected during the 4th update, by the policy before it, for the tasks drawn for iteration 5
    assert agent["pending"]["version"] == 3
    assert agent["pending"]["traj"]["task_ids"] == ckpt["lookahead"]
    assert load_checkpoint(runs["sync"] / "checkpoints/latest.pt")["agent"]["pending"] is None


def test_the_ppo_ratio_uses_the_behaviour_log_probabilities(runs: dict[str, Path]) -> None:
    """Before the first Adam step the ratio is 1 exactly when the batch's log-probabilities are the current
    policy's.  With one iteration of lag they are the previous policy's, so the approx. KL there is the lag's:
    an update that recomputed them with the current policy would read 0 here."""
    sync = [float(r["losses/behaviour_kl"]) for r in progress_rows(runs["sync"])]
    lagged = [float(r["losses/behaviour_kl"]) for r in progress_rows(runs["overlap"])]
    assert max(sync) < 1e-6, sync
    assert lagged[0] < 1e-6, lagged  # iteration 1 collects on-policy
    assert min(lagged[1:]) > 1e-4, lagged
    # and the update's own KL per step is of the same order as the lag's (the learner really moved)
    mean_kl = [float(r["losses/approx_kl"]) for r in progress_rows(runs["overlap"])]
    assert all(k > 0 for k in mean_kl)


def test_overlap_samples_the_same_tasks_with_the_same_env_steps(runs: dict[str, Path]) -> None:
    sync, lagged = progress_rows(runs["sync"]), progress_rows(runs["overlap"])
    assert [r["charts/env_steps"] for r in sync] == [r["charts/env_steps"] for r in lagged]
    # iteration 1 is collected on-policy by the same initial network on the same tasks and seeds
    assert sync[0]["charts/episode_return"] == lagged[0]["charts/episode_return"]


def test_an_overlapped_run_resumes_exactly(tmp_path: Path, runs: dict[str, Path]) -> None:
    train, agent = _configs(2, True)
    metarl.train(train, agent, out=tmp_path / "split", progress=False)
    metarl.resume(tmp_path / "split", iterations=4, progress=False)
    a = load_checkpoint(runs["overlap"] / "checkpoints/latest.pt")
    b = load_checkpoint(tmp_path / "split/checkpoints/latest.pt")
    assert a["engine"] == b["engine"] and a["lookahead"] == b["lookahead"]
    for name, tensor in a["agent"]["policy"].items():
        assert torch.equal(tensor, b["agent"]["policy"][name]), name
    pa, pb = a["agent"]["pending"]["traj"], b["agent"]["pending"]["traj"]
    assert torch.equal(pa["actions"], pb["actions"]) and torch.equal(pa["extras"]["log_prob"], pb["extras"]["log_prob"])


class _SlowPolicy:
    """A point-nav policy that takes 2 ms per step and records torch's thread count when it acts."""

    def __init__(self) -> None:
        self.threads: set[int] = set()

    def initial_state(self, num_slots: int) -> None:
        return None

    def act(self, step: Any, state: Any) -> tuple[torch.Tensor, Any, dict[str, torch.Tensor]]:
        self.threads.add(torch.get_num_threads())
        time.sleep(0.002)
        return torch.zeros(step.obs.shape[0], 2), state, {}


def test_a_cancelled_background_collect_stops_at_once_and_the_engine_collects_again() -> None:
    dist = make_distribution("point-nav", seed=0)
    tasks = dist.sample(2, "train", rng=None)
    threads = torch.get_num_threads()
    with RolloutEngine(dist, num_workers=1, backend="inline") as engine:
        policy = _SlowPolicy()
        # 2 tasks x 200 episodes x 100 steps at 2 ms per step: about 40 s if it ran to the end
        job = BackgroundCollect(engine, policy, tasks, episodes_per_task=200)
        time.sleep(0.2)
        assert job.running
        t0 = time.monotonic()
        job.cancel()
        assert time.monotonic() - t0 < 5.0
        assert not job.running
        with pytest.raises(CollectCancelled):
            job.result()
        assert policy.threads == {threads}  # the background collect left torch's thread count alone
        assert torch.get_num_threads() == threads
        done = BackgroundCollect(engine, _SlowPolicy(), tasks, episodes_per_task=1).result()
        assert done.rewards.shape == (2, 1, dist.max_episode_steps) and bool(done.valid.all())


def test_an_error_in_the_background_collect_is_raised_by_result() -> None:
    class Broken(_SlowPolicy):
        def act(self, step: Any, state: Any) -> Any:
            raise RuntimeError("policy exploded")

    dist = make_distribution("point-nav", seed=0)
    with RolloutEngine(dist, num_workers=1, backend="inline") as engine:
        job = BackgroundCollect(engine, Broken(), dist.sample(1, "train", rng=None), episodes_per_task=1)
        with pytest.raises(RuntimeError, match="policy exploded"):
            job.result()


def test_overlap_is_refused_for_an_agent_that_needs_on_policy_samples(tmp_path: Path) -> None:
    proc = metarl_cli(
        "train", "maml-trpo", "--iterations", "1", "--overlap", "true", "--out", str(tmp_path / "run"), "--no-progress"
    )
    assert proc.returncode == 2, proc.stderr
    assert "--overlap true: agent 'maml-trpo' cannot learn from a batch its previous policy collected" in proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_overlap_must_be_a_bool() -> None:
    with pytest.raises(UserError, match="overlap must be true or false, got 'yes'"):
        dataclasses.replace(TrainConfig(), overlap="yes")  # type: ignore[arg-type]
