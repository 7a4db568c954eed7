"""RolloutEngine on the counting distribution: shapes, oracles, trials, determinism, bad input."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from metarl.rollout import ActionError, RolloutEngine, StepBatch, Trajectories
from metarl.rollout.layout import make_layout
from metarl.testing import CountingDistribution, ElementwisePolicy, counting_oracle

FIELDS = (
    "obs", "actions", "rewards", "terminated", "truncated", "success", "valid", "final_obs", "lengths", "episode_seeds"
)  # fmt: skip


def assert_same(a: Trajectories, b: Trajectories) -> None:
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape, name
        assert torch.equal(x, y), f"{name} differs"
    assert a.extras.keys() == b.extras.keys()
    for k in a.extras:
        assert torch.equal(a.extras[k], b.extras[k]), k


class MLPPolicy:
    """A small torch MLP whose numerics may depend on the batch (used where the batches must match)."""

    def __init__(self, obs_dim: int, act_dim: int) -> None:
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(obs_dim, 32), torch.nn.Tanh(), torch.nn.Linear(32, act_dim))
        self.device = torch.device("cpu")

    def initial_state(self, num_slots: int) -> None:
        return None

    def act(self, step: StepBatch, state: Any) -> tuple[torch.Tensor, Any, dict[str, torch.Tensor]]:
        mean = self.net(step.obs)
        action = torch.tanh(mean + 0.5 * step.noise)
        return action, state, {"mean": mean, "logp": -(step.noise**2).sum(1)}


class RecordingRecurrentPolicy:
    """State = steps since the trial started, per slot; action[0] encodes it; extras record the masks."""

    def __init__(self, act_dim: int) -> None:
        self.device = torch.device("cpu")
        self.act_dim = act_dim
        self.initial_calls: list[int] = []

    def initial_state(self, num_slots: int) -> torch.Tensor:
        self.initial_calls.append(num_slots)
        return torch.full((num_slots,), -1000.0)

    def act(self, step: StepBatch, state: torch.Tensor) -> tuple[torch.Tensor, Any, dict[str, torch.Tensor]]:
        count = torch.where(step.trial_start, torch.zeros_like(state[step.slot]), state[step.slot])
        state[step.slot] = count + 1
        action = torch.zeros(step.obs.shape[0], self.act_dim)
        action[:, 0] = count / 1000.0
        extras = {
            "count": count.clone(),
            "episode_start": step.episode_start.clone(),
            "trial_start": step.trial_start.clone(),
            "prev_done": step.prev_done.clone(),
            "prev_reward": step.prev_reward.clone(),
            "prev_action0": step.prev_action[:, 0].clone(),
            "task": step.task.clone(),
            "slot": step.slot.clone(),
        }
        return action, state, extras


@pytest.fixture(scope="module")
def dist() -> CountingDistribution:
    return CountingDistribution(num_families=2, tasks_per_family=4, horizon=6, lengths=(0, 4))


@pytest.fixture(scope="module")
def process_engine(dist: CountingDistribution) -> Any:
    with RolloutEngine(dist, num_workers=2, slots_per_family=2, seed=3) as engine:
        yield engine


def test_shapes_dtypes_and_oracle(dist: CountingDistribution, process_engine: RolloutEngine) -> None:
    tasks = list(dist.tasks("train"))  # 8 tasks, more than the 4 slots
    policy = ElementwisePolicy(2)
    traj = process_engine.collect(policy, tasks, episodes_per_task=3)
    n, e, h, o, a = 8, 3, 6, 3, 2
    assert traj.obs.shape == (n, e, h, o) and traj.obs.dtype == torch.float32
    assert traj.actions.shape == (n, e, h, a) and traj.actions.dtype == torch.float32
    for name in ("rewards",):
        assert getattr(traj, name).shape == (n, e, h) and getattr(traj, name).dtype == torch.float32
    for name in ("terminated", "truncated", "success", "valid"):
        assert getattr(traj, name).shape == (n, e, h) and getattr(traj, name).dtype == torch.bool
    assert traj.final_obs.shape == (n, e, o) and traj.lengths.dtype == torch.int64
    assert traj.episode_seeds.shape == (n, e) and traj.extras["noise_used"].shape == (n, e, h)
    assert traj.tasks == tasks and traj.episodes_per_trial == 1
    for i, task in enumerate(tasks):
        value, length = float(task.param("value")), int(task.param("length"))
        for ep in range(e):
            seed = int(traj.episode_seeds[i, ep])
            want = counting_oracle(value, seed, length, h, traj.actions[i, ep].numpy())
            steps = int(want["length"])
            assert int(traj.lengths[i, ep]) == steps
            assert traj.valid[i, ep, :steps].all() and not traj.valid[i, ep, steps:].any()
            np.testing.assert_array_equal(traj.obs[i, ep, :steps, 0].numpy(), want["t"].astype(np.float32))
            assert (traj.obs[i, ep, :steps, 1] == value).all()
            assert (traj.obs[i, ep, :steps, 2] == np.float32(want["seed_feature"])).all()
            np.testing.assert_array_equal(traj.rewards[i, ep, :steps].numpy(), want["rewards"])
            np.testing.assert_array_equal(traj.terminated[i, ep, :steps].numpy(), want["terminated"])
            np.testing.assert_array_equal(traj.truncated[i, ep, :steps].numpy(), want["truncated"])
            np.testing.assert_array_equal(traj.success[i, ep, :steps].numpy(), want["success"])
            assert traj.final_obs[i, ep].tolist() == [float(steps), value, float(np.float32(want["seed_feature"]))]
            # padding is zero
            assert not traj.obs[i, ep, steps:].any() and not traj.rewards[i, ep, steps:].any()
            assert not (traj.terminated | traj.truncated)[i, ep, steps:].any()
    # actions are the policy's: tanh(0.1 * obs[:, :2] + 0.5 * noise)
    noise = traj.extras["noise_used"]
    expect0 = torch.tanh(traj.obs[..., 0] * 0.1 + noise)
    assert torch.equal(traj.actions[..., 0][traj.valid], expect0[traj.valid])
    assert traj.num_steps == int(traj.lengths.sum())
    assert traj.episode_success.all()  # success at step 2 of every episode
    assert torch.equal(traj.episode_returns, (traj.rewards * traj.valid).sum(-1))


def test_one_policy_call_per_group_step(dist: CountingDistribution) -> None:
    train = dist.tasks("train")
    tasks = [train[0], train[1], train[4], train[5]]  # one task per slot (two per family)
    with RolloutEngine(dist, num_workers=2, slots_per_family=2, backend="inline", pipeline=False) as engine:
        policy = ElementwisePolicy(2)
        traj = engine.collect(policy, tasks, episodes_per_task=1)
    # 4 slots, 1 group: one call per time step for every row at once (lengths 6, 4, 6, 4).
    assert engine.layout.num_groups == 1
    assert policy.calls == 6
    assert policy.rows_seen == traj.num_steps == 20


def test_trials_masks_and_state(dist: CountingDistribution, process_engine: RolloutEngine) -> None:
    tasks = list(dist.tasks("train"))[:6]
    policy = RecordingRecurrentPolicy(2)
    k = 3
    traj = process_engine.collect(policy, tasks, episodes_per_task=6, episodes_per_trial=k)
    assert traj.episodes_per_trial == k and traj.rewards.shape == (6, 6, 6)
    assert policy.initial_calls == [process_engine.num_env_slots]
    x = traj.extras
    valid = traj.valid
    for i in range(6):
        slots_used = set()
        for ep in range(6):
            steps = int(traj.lengths[i, ep])
            first_of_trial = ep % k == 0
            assert bool(x["trial_start"][i, ep, 0]) == first_of_trial
            assert x["episode_start"][i, ep, 0] and not x["episode_start"][i, ep, 1:steps].any()
            assert not x["trial_start"][i, ep, 1:steps].any()
            assert bool(x["prev_done"][i, ep, 0]) == (not first_of_trial)
            assert not x["prev_done"][i, ep, 1:steps].any()
            assert (x["task"][i, ep, :steps] == i).all()
            # state carried across the trial's episodes, reset exactly at its start
            before = int(traj.lengths[i, ep - ep % k : ep].sum())
            np.testing.assert_array_equal(x["count"][i, ep, :steps].numpy(), np.arange(steps) + before)
            # prev_action / prev_reward: zero at an episode's first step, then the previous step's
            assert x["prev_reward"][i, ep, 0] == 0 and x["prev_action0"][i, ep, 0] == 0
            assert torch.equal(x["prev_reward"][i, ep, 1:steps], traj.rewards[i, ep, : steps - 1])
            assert torch.equal(x["prev_action0"][i, ep, 1:steps], traj.actions[i, ep, : steps - 1, 0])
            slots_used.update(x["slot"][i, ep, :steps].tolist())
            if ep % k == k - 1:  # a whole trial runs in one slot
                assert len(slots_used) == 1
                slots_used = set()
    assert valid.sum() == traj.lengths.sum()


def test_successive_collects_draw_new_streams_and_resume_exactly(dist: CountingDistribution) -> None:
    tasks = list(dist.tasks("train"))[:4]
    policy = ElementwisePolicy(2)
    with RolloutEngine(dist, num_workers=1, slots_per_family=2, backend="inline", seed=5) as engine:
        first = engine.collect(policy, tasks, episodes_per_task=2)
        state = engine.state_dict()
        second = engine.collect(policy, tasks, episodes_per_task=2)
    assert not torch.equal(first.episode_seeds, second.episode_seeds)
    assert not torch.equal(first.actions, second.actions)
    assert state == {"seed": 5, "collects": 1}
    with RolloutEngine(dist, num_workers=1, slots_per_family=2, backend="inline", seed=0) as resumed:
        resumed.load_state_dict(state)
        assert_same(resumed.collect(policy, tasks, episodes_per_task=2), second)
        with pytest.raises(ValueError, match="missing"):
            resumed.load_state_dict({"seed": 1})


def test_inline_and_process_are_bitwise_identical(dist: CountingDistribution, process_engine: RolloutEngine) -> None:
    tasks = list(dist.tasks("train")) + list(dist.tasks("train"))[:3]  # repeated tasks are distinct rows
    policy = MLPPolicy(3, 2)  # its numerics may depend on the batch: the batches must be the same
    assert process_engine.host_worker and process_engine.layout.num_groups == 1
    with RolloutEngine(dist, num_workers=2, slots_per_family=2, seed=3, backend="inline") as inline:
        inline.load_state_dict(process_engine.state_dict())
        assert inline.layout == process_engine.layout
        a = inline.collect(policy, tasks, episodes_per_task=4, episodes_per_trial=2)
    b = process_engine.collect(policy, tasks, episodes_per_task=4, episodes_per_trial=2)
    assert_same(a, b)
    assert a.extras.keys() == {"mean", "logp"} and a.extras["mean"].shape == (11, 4, 6, 2)


def test_pipelined_all_process_engine_equals_inline(dist: CountingDistribution) -> None:
    tasks = list(dist.tasks("train"))
    policy = MLPPolicy(3, 2)
    options = {"num_workers": 2, "slots_per_family": 2, "seed": 9, "host_worker": False}
    with RolloutEngine(dist, **options) as proc, RolloutEngine(dist, backend="inline", **options) as inline:
        assert proc.layout == inline.layout and proc.layout.num_groups == 2 and len(proc.worker_pids()) == 2
        assert_same(
            proc.collect(policy, tasks, episodes_per_task=2, episodes_per_trial=2),
            inline.collect(policy, tasks, episodes_per_task=2, episodes_per_trial=2),
        )


@pytest.mark.parametrize(
    ("workers", "slots", "pipeline"), [(1, 1, False), (2, 3, True), (1, 4, True)], ids=["1w1s", "2w3s", "1w4s"]
)
def test_same_episodes_for_any_layout(dist: CountingDistribution, workers: int, slots: int, pipeline: bool) -> None:
    tasks = list(dist.tasks("train"))
    policy = ElementwisePolicy(2)  # a row's output does not depend on its batch
    with RolloutEngine(dist, num_workers=2, slots_per_family=2, backend="inline", seed=1) as ref_engine:
        ref = ref_engine.collect(policy, tasks, episodes_per_task=2, episodes_per_trial=2)
    with RolloutEngine(
        dist, num_workers=workers, slots_per_family=slots, backend="inline", seed=1, pipeline=pipeline
    ) as engine:
        assert engine.num_env_slots == 2 * slots
        assert_same(engine.collect(policy, tasks, episodes_per_task=2, episodes_per_trial=2), ref)


def test_one_vs_two_worker_processes(dist: CountingDistribution, process_engine: RolloutEngine) -> None:
    tasks = list(dist.tasks("test"))
    policy = ElementwisePolicy(2)
    with RolloutEngine(dist, num_workers=1, slots_per_family=1, seed=3) as one:
        one.load_state_dict(process_engine.state_dict())
        a = one.collect(policy, tasks, episodes_per_task=2)
    b = process_engine.collect(policy, tasks, episodes_per_task=2)
    assert_same(a, b)


def test_deterministic_flag_reaches_policy(dist: CountingDistribution) -> None:
    with RolloutEngine(dist, num_workers=1, backend="inline") as engine:
        traj = engine.collect(ElementwisePolicy(2), list(dist.tasks("train"))[:2], 1, deterministic=True)
    assert not traj.extras["noise_used"].any()
    assert torch.equal(traj.actions[..., 0], torch.tanh(0.1 * traj.obs[..., 0]) * traj.valid)


class ThreadRecordingPolicy(ElementwisePolicy):
    def __init__(self) -> None:
        super().__init__(2)
        self.threads: set[int] = set()

    def act(self, step: StepBatch, state: Any) -> tuple[torch.Tensor, Any, dict[str, torch.Tensor]]:
        self.threads.add(torch.get_num_threads())
        return super().act(step, state)


@pytest.mark.parametrize("inference", [1, 2])
def test_collect_runs_the_policy_on_its_inference_threads_and_gives_the_learners_back(
    dist: CountingDistribution, inference: int
) -> None:
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3)  # the learner's count, set by the caller
        policy = ThreadRecordingPolicy()
        with RolloutEngine(dist, num_workers=1, backend="inline", inference_threads=inference) as engine:
            engine.collect(policy, list(dist.tasks("train"))[:2], 1)
            assert policy.threads == {inference} and torch.get_num_threads() == 3
            with pytest.raises(ActionError):  # restored on the way out of a failed collect too
                engine.collect(NaNPolicy(bad_task=0), list(dist.tasks("train"))[:2], 1)
            assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


class NaNPolicy(ElementwisePolicy):
    def __init__(self, bad_task: int) -> None:
        super().__init__(2)
        self.bad_task = bad_task

    def act(self, step: StepBatch, state: Any) -> tuple[torch.Tensor, Any, dict[str, torch.Tensor]]:
        action, state, extras = super().act(step, state)
        action[step.task == self.bad_task, 1] = float("nan")
        return action, state, extras


class WrongShapePolicy(ElementwisePolicy):
    def act(self, step: StepBatch, state: Any) -> tuple[torch.Tensor, Any, dict[str, torch.Tensor]]:
        return torch.zeros(step.obs.shape[0], 3), state, {}


def test_bad_actions_refused_before_stepping(dist: CountingDistribution, process_engine: RolloutEngine) -> None:
    tasks = list(dist.tasks("train"))[:4]
    with pytest.raises(ActionError, match=r"non-finite actions for task\(s\) counting/train/count-0/2 "):
        process_engine.collect(NaNPolicy(bad_task=2), tasks, episodes_per_task=1)
    with pytest.raises(ActionError, match=r"actions of shape \(\d+, 3\) for \d+ rows; expected \(\d+, 2\)"):
        process_engine.collect(WrongShapePolicy(2), tasks, episodes_per_task=1)
    # the engine is still usable, and nothing was corrupted
    traj = process_engine.collect(ElementwisePolicy(2), tasks, episodes_per_task=1)
    assert torch.isfinite(traj.actions).all() and traj.valid.sum() == traj.lengths.sum()


def test_bad_input_messages(dist: CountingDistribution) -> None:
    other = CountingDistribution(name="other")
    with RolloutEngine(dist, num_workers=1, backend="inline", families=["count-0"]) as engine:
        policy = ElementwisePolicy(2)
        train = dist.tasks("train")
        with pytest.raises(ValueError, match=r"family 'count-1', which this engine does not serve"):
            engine.collect(policy, [train[0], train[5]], 1)
        with pytest.raises(ValueError, match="belongs to distribution 'other'"):
            engine.collect(policy, [other.tasks("train")[0]], 1)
        with pytest.raises(ValueError, match=r"multiple of episodes_per_trial \(2\)"):
            engine.collect(policy, [train[0]], 3, episodes_per_trial=2)
        with pytest.raises(ValueError, match="episodes_per_task must be a positive integer"):
            engine.collect(policy, [train[0]], 0)
        with pytest.raises(ValueError, match="tasks is empty"):
            engine.collect(policy, [], 1)
        with pytest.raises(TypeError, match="must implement act"):
            engine.collect(object(), [train[0]], 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown backend 'threads'"):
        RolloutEngine(dist, backend="threads")
    with pytest.raises(ValueError, match="families must be distinct families of 'counting'"):
        RolloutEngine(dist, families=["reach-v3"])
    with pytest.raises(ValueError, match="num_workers must be a positive integer"):
        RolloutEngine(dist, num_workers=0)
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        RolloutEngine(dist, seed=-1)
    with pytest.raises(ValueError, match="unknown start_method 'fork'"):
        RolloutEngine(dist, num_workers=1, start_method="fork")
    engine = RolloutEngine(dist, num_workers=1, backend="inline")
    engine.close()
    with pytest.raises(RuntimeError, match="closed"):
        engine.collect(ElementwisePolicy(2), [dist.tasks("train")[0]], 1)


def test_layout_is_balanced_and_deterministic() -> None:
    fams = [f"f{i}" for i in range(10)] + [f"t{i}" for i in range(5)]
    costs = {f: float(1 + i % 4) for i, f in enumerate(fams)}
    a = make_layout(fams, 1, 2, 2, costs, first_families=fams[:10])
    assert a == make_layout(fams, 1, 2, 2, costs, first_families=fams[:10])
    assert a.num_slots == 15 and a.num_workers == 2 and a.num_groups == 2
    assert list(a.slot_group) == sorted(a.slot_group)  # groups are contiguous
    for subset in (fams[:10], fams[10:]):
        load = [sum(costs[a.slot_family[s]] for s in range(15) if a.slot_worker[s] == w and a.slot_family[s] in subset)
                for w in range(2)]  # fmt: skip
        assert abs(load[0] - load[1]) <= max(costs.values())
    one = make_layout(["only"], 1, 2, 2, {"only": 1.0})
    assert one.num_workers == 1 and one.num_groups == 1


def test_forkserver_workers_give_the_same_result(dist: CountingDistribution) -> None:
    tasks = list(dist.tasks("train"))
    policy = ElementwisePolicy(2)
    options = {"num_workers": 2, "slots_per_family": 1, "seed": 4, "host_worker": False}
    with (
        RolloutEngine(dist, start_method="forkserver", **options) as fork,
        RolloutEngine(dist, backend="inline", **options) as inline,
    ):
        assert len(fork.worker_pids()) == 2
        assert_same(fork.collect(policy, tasks, 2), inline.collect(policy, tasks, 2))


def test_spinner_budget_follows_the_waits_it_sees() -> None:
    """After long waits shrink the polling budget, one wait shorter than the cap restores it to cover such
    waits (a budget stuck below the typical wait would make every step block and wake up cold)."""
    import socket
    import threading
    import time

    from metarl.rollout.worker import Spinner

    a, b = socket.socketpair()
    try:

        def wait_for(spinner: Spinner, delay: float) -> float:
            timer = threading.Timer(delay, lambda: b.send(b"x"))
            start = time.perf_counter()
            timer.start()
            spinner.wait()
            waited = time.perf_counter() - start
            assert a.recv(1) == b"x"  # wait() returned because the byte is there (never early)
            timer.join()
            return waited

        spinner = Spinner(a.fileno(), max_us=2_000_000)  # cap 2 s
        spinner.budget = 1e-4  # as if shrunk by earlier long waits
        waited = wait_for(spinner, 0.05)
        assert waited >= 0.05 and spinner.budget == pytest.approx(min(2.0, 2 * waited), rel=0.2)
        assert spinner.budget >= 0.08  # now covers waits like the one just seen
        short = Spinner(a.fileno(), max_us=10_000)  # cap 10 ms; a 50 ms wait is longer: halve
        wait_for(short, 0.05)
        assert short.budget == pytest.approx(0.005)
        off = Spinner(a.fileno(), max_us=0)  # spinning off: wait() returns at once, the caller blocks
        off.wait()
        assert off.budget == 0.0
    finally:
        a.close()
        b.close()


class _SlotRecorder(ElementwisePolicy):
    """Records the slot of every row that starts a trial."""

    def __init__(self, action_dim: int) -> None:
        super().__init__(action_dim)
        self.started: list[int] = []

    def act(self, step: Any, state: Any) -> tuple[Any, Any, dict[str, Any]]:
        self.started += step.slot[step.trial_start.bool()].tolist()
        return super().act(step, state)


@pytest.mark.parametrize("backend", ["inline", "process"])
def test_work_is_spread_over_the_workers_when_slots_outnumber_it(backend: str) -> None:
    """An engine sized for a larger meta-test (4 slots per family) given one task per family: the two tasks run
    on different workers, not both on the lowest slot ids (one worker's), which halved sampling speed."""
    dist = CountingDistribution(num_families=2, tasks_per_family=4, horizon=6)
    with RolloutEngine(dist, num_workers=2, slots_per_family=4, seed=1, backend=backend) as engine:
        if engine.layout.num_workers != 2:
            pytest.skip("this backend runs every slot in one worker")
        policy = _SlotRecorder(dist.action_space.shape[0])
        tasks = [dist.tasks("train")[0], dist.tasks("train")[4]]
        assert {t.family for t in tasks} == {"count-0", "count-1"}
        traj = engine.collect(policy, tasks, episodes_per_task=2, episodes_per_trial=2)
    workers = {engine.layout.slot_worker[s] for s in policy.started}
    assert len(policy.started) == 2 and workers == {0, 1}
    assert traj.lengths.shape == (2, 2)
