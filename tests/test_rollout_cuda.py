"""The device path: one packed host→device and device→host transfer per policy call (pinned on CUDA)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
import torch

from metarl.rollout import RolloutEngine, StepBatch
from metarl.rollout.shm import Cols
from metarl.rollout.transfer import HostTransfer, PackedTransfer
from metarl.testing import CountingDistribution

FIELDS = ("obs", "actions", "rewards", "terminated", "truncated", "success", "valid", "final_obs", "lengths")


class DevicePolicy:
    """Elementwise policy on any device; returns extras of several dtypes and shapes."""

    def __init__(self, device: str) -> None:
        self.device = torch.device(device)
        self.steps_on: set[str] = set()

    def initial_state(self, num_slots: int) -> torch.Tensor:
        return torch.zeros(num_slots, 3, device=self.device)

    def act(self, step: StepBatch, state: torch.Tensor) -> tuple[torch.Tensor, Any, dict[str, torch.Tensor]]:
        for name in ("obs", "prev_action", "prev_reward", "prev_done", "slot", "task", "noise"):
            self.steps_on.add(getattr(step, name).device.type)
        assert step.slot.dtype == torch.int64 and step.prev_done.dtype == torch.bool
        state[step.slot] = torch.where(
            step.trial_start[:, None], torch.zeros_like(state[step.slot]), state[step.slot] + 1
        )
        action = torch.tanh(0.1 * step.obs[:, :2] + 0.5 * step.noise)
        extras = {
            "h": state[step.slot].clone(),  # [R, 3] float32: packed
            "start": step.episode_start.clone(),  # bool: travels on its own
            "task": step.task.clone(),  # int64: travels on its own
        }
        return action, state, extras


def _rows(r: int) -> tuple[np.ndarray, np.ndarray, Cols]:
    cols = Cols(3, 2)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((r, cols.width)).astype(np.float32)
    x[:, cols.flags] = rng.random((r, 3)) < 0.5
    x[:, cols.slot] = rng.permutation(r)
    x[:, cols.task] = rng.integers(0, 100, r)
    return x, rng.standard_normal((r, 2)).astype(np.float32), cols


def test_packed_transfer_matches_host_transfer_on_cpu() -> None:
    x, noise, cols = _rows(5)
    host = HostTransfer(torch.device("cpu"), cols).step_batch(x, noise, deterministic=True)
    packed_t = PackedTransfer(torch.device("cpu"), max_rows=8, cols=cols, pin=False)
    packed = packed_t.step_batch(x, noise, deterministic=True)
    assert not packed_t.pinned
    for name in (
        "obs",
        "prev_action",
        "prev_reward",
        "prev_done",
        "episode_start",
        "trial_start",
        "slot",
        "task",
        "noise",
    ):
        a, b = getattr(host, name), getattr(packed, name)
        assert a.dtype == b.dtype and torch.equal(a, b), name
    assert host.slot.dtype == torch.int64 and host.prev_done.dtype == torch.bool
    assert host.slot.tolist() == x[:, cols.slot].astype(int).tolist()
    assert torch.equal(host.obs, torch.from_numpy(x[:, :3])) and torch.equal(host.noise, torch.from_numpy(noise))
    assert packed.deterministic
    action = torch.arange(10, dtype=torch.float32).reshape(5, 2)
    extras = {"v": torch.ones(5, 2, 2), "i": torch.arange(5)}
    act, ex = packed_t.to_host(action, extras)
    assert np.array_equal(act, action.numpy()) and act.dtype == np.float32
    assert ex["v"].shape == (5, 2, 2) and (ex["v"] == 1).all() and ex["i"].tolist() == [0, 1, 2, 3, 4]


def test_engine_with_packed_transfer_equals_host_on_cpu() -> None:
    dist = CountingDistribution(num_families=2, horizon=6, lengths=(0, 4))
    tasks = list(dist.tasks("train"))
    out = {}
    for transfer in ("host", "packed"):
        with RolloutEngine(dist, num_workers=2, slots_per_family=2, backend="inline", transfer=transfer) as engine:
            out[transfer] = engine.collect(DevicePolicy("cpu"), tasks, episodes_per_task=2, episodes_per_trial=2)
    for name in FIELDS:
        assert torch.equal(getattr(out["host"], name), getattr(out["packed"], name)), name
    for k in ("h", "start", "task"):
        assert out["host"].extras[k].dtype == out["packed"].extras[k].dtype
        assert torch.equal(out["host"].extras[k], out["packed"].extras[k]), k


def test_cuda_device_is_constructible_without_running_on_cpu_only_machines() -> None:
    dist = CountingDistribution()
    engine = RolloutEngine(dist, num_workers=1, device="cuda", backend="inline")
    assert engine.device == "cuda"
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available here"):
            engine.collect(DevicePolicy("cpu"), [dist.tasks("train")[0]], 1)
    else:  # the policy steps on device tensors, and the trajectories come back to the host
        policy = DevicePolicy("cuda")
        out = engine.collect(policy, [dist.tasks("train")[0]], 1)
        assert policy.steps_on == {"cuda"} and out.obs.device.type == "cpu" and int(out.lengths.sum()) > 0
    engine.close()
    with pytest.raises(ValueError, match="invalid device 'gpu7'"):
        RolloutEngine(dist, num_workers=1, device="gpu7", backend="inline")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_policy_gets_device_tensors_through_pinned_buffers() -> None:
    dist = CountingDistribution(num_families=2, horizon=6, lengths=(0, 4))
    tasks = list(dist.tasks("train"))
    cpu_policy, cuda_policy = DevicePolicy("cpu"), DevicePolicy("cuda")
    with RolloutEngine(dist, num_workers=2, slots_per_family=2, seed=2) as engine:
        on_cuda = engine.collect(cuda_policy, tasks, episodes_per_task=2, episodes_per_trial=2)
        engine.load_state_dict({"seed": 2, "collects": 0})
        on_cpu = engine.collect(cpu_policy, tasks, episodes_per_task=2, episodes_per_trial=2)
    assert cuda_policy.steps_on == {"cuda"} and cpu_policy.steps_on == {"cpu"}
    for name in FIELDS:
        assert getattr(on_cuda, name).device.type == "cpu"
        torch.testing.assert_close(getattr(on_cuda, name), getattr(on_cpu, name), rtol=1e-5, atol=1e-5)
    assert torch.equal(on_cuda.extras["task"], on_cpu.extras["task"])
    transfer = PackedTransfer(torch.device("cuda"), 4, Cols(3, 2), pin=True)
    assert transfer.pinned


def test_host_batch_makes_fields_on_first_read_and_inputs_follow_assignments() -> None:
    x, noise, cols = _rows(4)
    host = HostTransfer(torch.device("cpu"), cols).step_batch(x, noise, deterministic=False)
    assert "obs" not in vars(host) and "slot" not in vars(host)  # nothing made before a policy reads it
    eager = StepBatch(**{f.name: getattr(host, f.name) for f in dataclasses.fields(StepBatch)})
    assert set(vars(host)) >= {f.name for f in dataclasses.fields(StepBatch)}  # each field made once, then kept
    assert host.obs is host.obs and host.obs.is_contiguous()
    # inputs(): obs ⊕ prev_action ⊕ prev_reward ⊕ prev_done, a view of the gathered rows on the engine's path
    inputs = host.inputs()
    assert inputs.shape == (4, cols.obs_dim + cols.act_dim + 2) and inputs.data_ptr() == x.ctypes.data
    torch.testing.assert_close(inputs, eager.inputs(), rtol=0, atol=0)  # eager: concatenated from the fields
    host.prev_reward = torch.zeros(4)  # e.g. a policy hiding rewards: inputs() must follow
    assert torch.equal(host.inputs()[:, cols.reward], torch.zeros(4))
    assert torch.equal(host.inputs()[:, : cols.obs_dim], host.obs)
    replaced = dataclasses.replace(host, deterministic=True)  # a lazy batch is still a dataclass
    assert replaced.deterministic and torch.equal(replaced.slot, host.slot)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = host.nope  # type: ignore[attr-defined]
    packed = PackedTransfer(torch.device("cpu"), max_rows=8, cols=cols, pin=False).step_batch(x, noise, False)
    torch.testing.assert_close(packed.inputs(), eager.inputs(), rtol=0, atol=0)
