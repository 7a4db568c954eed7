"""RolloutEngine on real Meta-World (ML10 and ML1-reach-v3)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from metarl.envs import make_distribution
from metarl.rollout import ActionError, RolloutEngine, StepBatch
from metarl.tasks import TaskDistribution
from metarl.testing import ElementwisePolicy


@pytest.fixture(scope="module")
def ml10() -> TaskDistribution:
    return make_distribution("ML10")


class NaNXYZPolicy(ElementwisePolicy):
    """Puts a NaN in the xyz part of the actions of the task at position 1."""

    def act(self, step: StepBatch, state: Any) -> tuple[torch.Tensor, Any, dict[str, torch.Tensor]]:
        action, state, extras = super().act(step, state)
        action[step.task == 1, 0] = float("nan")
        return action, state, extras


def test_ml10_shapes_masks_and_first_observations(ml10: TaskDistribution) -> None:
    train, test = ml10.tasks("train"), ml10.tasks("test")
    families = list(dict.fromkeys(t.family for t in train))
    # two train classes (one with two goals) and one held-out class
    tasks = [train[0], train[1], next(t for t in train if t.family == families[5]), test[0]]
    with RolloutEngine(ml10, num_workers=2, slots_per_family=1, seed=0) as engine:
        assert engine.num_env_slots == 15
        traj = engine.collect(ElementwisePolicy(4, noise_scale=1.0), tasks, episodes_per_task=1)
    n, h = 4, 500
    assert traj.obs.shape == (n, 1, h, 39) and traj.obs.dtype == torch.float32
    assert traj.actions.shape == (n, 1, h, 4)
    assert traj.valid.all() and traj.lengths.tolist() == [[h]] * n and traj.num_steps == n * h
    assert not traj.terminated.any()  # training settings: no termination on success
    assert traj.truncated[..., -1].all() and not traj.truncated[..., :-1].any()
    assert torch.isfinite(traj.obs).all() and torch.isfinite(traj.rewards).all()
    assert torch.isfinite(traj.final_obs).all() and traj.success.dtype == torch.bool
    assert (traj.rewards >= 0).all() and (traj.rewards <= 10).all()  # Meta-World v2 rewards lie in [0, 10]
    # the first observation is the env's reset observation for that task
    for i, task in enumerate(tasks):
        env = ml10.make_env(task.family)
        ml10.set_task(env, task)
        obs, _ = ml10.reset(env, int(traj.episode_seeds[i, 0]))
        np.testing.assert_allclose(traj.obs[i, 0, 0].numpy(), obs.astype(np.float32), rtol=0, atol=0)
        # replaying the recorded actions reproduces the recorded rewards exactly
        rewards = []
        for t in range(20):
            _, r, _, _, _ = env.step(traj.actions[i, 0, t].numpy())
            rewards.append(r)
        np.testing.assert_array_equal(np.float32(rewards), traj.rewards[i, 0, :20].numpy())
        env.close()
    # different goals of one class give different rewards under the same policy
    assert not torch.equal(traj.rewards[0], traj.rewards[1])


def test_ml1_inline_equals_process_and_nan_refused() -> None:
    dist = make_distribution("ML1-reach-v3")
    tasks = list(dist.tasks("train"))[:3]
    policy = ElementwisePolicy(4, noise_scale=1.0)
    with RolloutEngine(dist, num_workers=2, slots_per_family=2, seed=4) as proc:
        b = proc.collect(policy, tasks, episodes_per_task=1)
        with pytest.raises(ActionError, match=r"non-finite actions for task\(s\) ML1-reach-v3/train/reach-v3/1 "):
            proc.collect(NaNXYZPolicy(4), tasks, episodes_per_task=1)
    with RolloutEngine(dist, num_workers=2, slots_per_family=2, seed=4, backend="inline") as inline:
        a = inline.collect(policy, tasks, episodes_per_task=1)
    for name in ("obs", "actions", "rewards", "terminated", "truncated", "success", "valid", "final_obs"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert a.valid.all() and b.num_steps == 3 * 500
