"""Core types: Task (hashable, picklable, JSON round trip), DistributionSpec, class-balanced sampling."""

from __future__ import annotations

import json
import pickle
from collections import Counter
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from metarl.tasks import DistributionSpec, Task, TaskDistribution, importable_path

# -- Task -------------------------------------------------------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), finite, st.text(max_size=8), st.binary(max_size=16)
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4), max_leaves=8)


@given(params=st.dictionaries(st.text(min_size=1, max_size=6), values, max_size=4))
def test_task_json_and_pickle_round_trip(params: dict[str, Any]) -> None:
    task = Task.make("dist", "train", "fam", 3, params)
    again = Task.from_json(json.loads(json.dumps(task.to_json())))
    assert again == task
    assert hash(again) == hash(task)
    assert pickle.loads(pickle.dumps(task)) == task


def test_task_freezes_arrays_and_is_hashable() -> None:
    task = Task.make("d", "test", "f", 0, {"goal": np.array([0.25, -0.5], dtype=np.float32), "k": np.int64(3)})
    assert task.param("goal") == (0.25, -0.5)
    assert task.param("k") == 3 and type(task.param("k")) is int
    assert task.id == "d/test/f/0"
    assert {task: 1}[Task.make("d", "test", "f", 0, {"k": 3, "goal": [0.25, -0.5]})] == 1
    with pytest.raises(KeyError, match="no parameter 'missing'"):
        task.param("missing")


def test_task_bytes_are_base64_in_json() -> None:
    task = Task.make("d", "train", "f", 1, {"blob": b"\x00\xffabc"})
    record = task.to_json()
    assert record["params"]["blob"] == {"__bytes__": "AP9hYmM="}
    assert Task.from_json(record).param("blob") == b"\x00\xffabc"


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"split": "valid"}, ValueError, r"unknown split 'valid'; choose one of \['train', 'test'\]"),
        ({"params": {"x": float("nan")}}, ValueError, "must be finite"),
        ({"params": {"x": object()}}, TypeError, "has type object"),
    ],
)
def test_task_rejects_bad_input(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    args: dict[str, Any] = {"distribution": "d", "split": "train", "family": "f", "index": 0, "params": {}}
    args.update(kwargs)
    with pytest.raises(error, match=match):
        Task.make(**args)


def test_task_from_malformed_json() -> None:
    with pytest.raises(ValueError, match="malformed task record"):
        Task.from_json({"distribution": "d"})


# -- DistributionSpec / importable paths ------------------------------------------------------


def module_level_factory(seed: int = 0) -> TaskDistribution:
    return ToyDistribution(seed=seed)


def test_importable_path_accepts_module_level_and_refuses_lambdas_and_closures() -> None:
    assert importable_path(module_level_factory, what="factory") == f"{__name__}:module_level_factory"
    with pytest.raises(TypeError, match="lambda or a closure"):
        importable_path(lambda seed=0: None, what="factory")

    def closure(seed: int = 0) -> None:
        return None

    with pytest.raises(TypeError, match="lambda or a closure"):
        importable_path(closure, what="factory")


def test_spec_rebuilds_an_equal_distribution() -> None:
    dist = ToyDistribution(seed=7)
    spec = pickle.loads(pickle.dumps(dist.spec))
    again = spec.build()
    assert isinstance(again, ToyDistribution)
    assert again.tasks("train") == dist.tasks("train")
    assert again.tasks("test") == dist.tasks("test")


def test_spec_that_does_not_build_a_distribution_is_refused() -> None:
    with pytest.raises(TypeError, match="not a TaskDistribution"):
        DistributionSpec.of(Counter).build()


# -- sampling -------------------------------------------------------------------------------------


class ToyEnv(gym.Env[np.ndarray, np.ndarray]):
    observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)


class ToyDistribution(TaskDistribution):
    """3 families with 4, 4 and 2 train tasks and 1 test task each."""

    name = "toy"
    max_episode_steps = 5
    families = ("a", "b", "c")

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def _build_tasks(self, split: str) -> list[Task]:
        sizes = {"a": 4, "b": 4, "c": 2} if split == "train" else {"a": 1, "b": 1, "c": 1}
        out: list[Task] = []
        for fam, k in sizes.items():
            for j in range(k):
                out.append(Task.make(self.name, split, fam, len(out), {"j": j, "seed": self.seed}))  # type: ignore[arg-type]
        return out

    def make_env(self, family: str) -> gym.Env[Any, Any]:
        return ToyEnv()

    def set_task(self, env: gym.Env[Any, Any], task: Task) -> None:
        pass

    @property
    def spec(self) -> DistributionSpec:
        return DistributionSpec.of(ToyDistribution, seed=self.seed)


def test_sample_is_class_balanced_without_replacement_then_cycles() -> None:
    dist = ToyDistribution()
    six = dist.sample(6, "train", rng=0)
    assert Counter(t.family for t in six) == {"a": 2, "b": 2, "c": 2}
    assert len(set(six)) == 6
    ten = dist.sample(10, "train", rng=0)
    assert len(set(ten)) == 10  # c runs out after 2 rounds and is skipped until all 10 are used
    assert Counter(t.family for t in ten) == {"a": 4, "b": 4, "c": 2}
    thirteen = dist.sample(13, "train", rng=0)
    assert thirteen[:10] == ten and thirteen[10:] == ten[:3]  # then the cycle repeats
    assert dist.sample(6, "train", rng=1) != six or dist.sample(6, "train", rng=2) != six
    assert dist.sample(6, "train", rng=0) == six  # seeded


@pytest.mark.parametrize("n", [0, -1, 2.5, True])
def test_sample_refuses_bad_counts(n: Any) -> None:
    with pytest.raises(ValueError, match="positive integer"):
        ToyDistribution().sample(n)


def test_validate_task_refuses_other_distribution_and_wrong_split() -> None:
    dist = ToyDistribution()
    task = dist.tasks("test")[0]
    assert dist.validate_task(task, "test") is task
    with pytest.raises(ValueError, match="from the 'test' split, expected 'train'"):
        dist.validate_task(task, "train")
    foreign = Task.make("ML10", "train", "a", 0, {})
    with pytest.raises(ValueError, match="belongs to distribution 'ML10', not 'toy'"):
        dist.validate_task(foreign)
    with pytest.raises(ValueError, match="unknown family 'zz'"):
        dist.validate_task(Task.make("toy", "train", "zz", 0, {}))
    with pytest.raises(TypeError, match="expected a metarl Task"):
        dist.validate_task("toy/train/a/0")


def test_describe_counts_tasks() -> None:
    row = ToyDistribution().describe()
    assert (row["train_tasks"], row["test_tasks"], row["obs_dim"], row["action_dim"]) == (10, 3, 1, 1)
