"""Meta-World distributions (real Meta-World and MuJoCo): splits, envs, seeding, errors, sampling, specs.

The task cache points at a temporary folder for the whole module, so the ML10 benchmark is built
once here (~8 s); ML25 and ML45 are built only in tests marked slow.
"""

from __future__ import annotations

import pickle
from collections import Counter
from collections.abc import Iterator
from typing import Any

import gymnasium as gym
import metaworld
import numpy as np
import pytest

from metarl.envs import make_distribution
from metarl.envs.metaworld import MetaWorldDistribution, MetaWorldTaskEnv
from metarl.tasks import Task, TaskDistribution

ML10_TRAIN = (
    "reach-v3", "push-v3", "pick-place-v3", "door-open-v3", "drawer-close-v3",
    "button-press-topdown-v3", "peg-insert-side-v3", "window-open-v3", "sweep-v3", "basketball-v3",
)  # fmt: skip
ML10_TEST = ("drawer-open-v3", "door-close-v3", "shelf-place-v3", "sweep-into-v3", "lever-pull-v3")
ML25_TEST_AFTER_FIX = ("door-close-v3", "shelf-place-v3", "sweep-v3", "button-press-v3")


@pytest.fixture(scope="module", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("METARL_CACHE_DIR", str(tmp_path_factory.mktemp("metarl-cache")))
        mp.delenv("METARL_NO_CACHE", raising=False)
        yield


@pytest.fixture(scope="module")
def reach() -> TaskDistribution:
    return make_distribution("ML1-reach-v3")


@pytest.fixture(scope="module")
def ml10() -> TaskDistribution:
    return make_distribution("ml10")


def _rollout(dist: TaskDistribution, env: gym.Env[Any, Any], task: Task, seed: int, actions: np.ndarray) -> np.ndarray:
    """[time, 39 + 1]: the first observation (reward 0) then each step's observation and reward."""
    dist.set_task(env, task)
    obs, _ = dist.reset(env, seed)
    rows = [np.append(obs, 0.0)]
    for action in actions:
        obs, reward, _, _, _ = env.step(action)
        rows.append(np.append(obs, float(reward)))
    return np.stack(rows)


def _random_actions(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, size=(n, 4)).astype(np.float32)


def _pairs(tasks: tuple[Task, ...]) -> set[tuple[str, Any]]:
    return {(t.family, t.param("mw_data")) for t in tasks}


def _check_split_structure(dist: TaskDistribution, split: str, classes: tuple[str, ...]) -> None:
    tasks = dist.tasks(split)  # type: ignore[arg-type]
    assert len(tasks) == 50 * len(classes)
    assert Counter(t.family for t in tasks) == dict.fromkeys(classes, 50)
    assert [t.index for t in tasks] == list(range(len(tasks)))
    assert {t.split for t in tasks} == {split}
    assert {t.distribution for t in tasks} == {dist.name}
    assert all(isinstance(t.param("mw_data"), bytes) for t in tasks)
    assert len(_pairs(tasks)) == len(tasks), "duplicate tasks within a split"


# -- names, metadata, laziness -----------------------------------------------------------------
def test_names_metadata_and_spaces(reach: TaskDistribution, ml10: TaskDistribution) -> None:
    assert make_distribution("ml1-REACH-v3").name == "ML1-reach-v3"
    assert reach.name == "ML1-reach-v3" and reach.families == ("reach-v3",)
    assert ml10.name == "ML10" and ml10.families == ML10_TRAIN + ML10_TEST
    for dist in (reach, ml10):
        assert isinstance(dist, MetaWorldDistribution)
        assert dist.source == "metaworld" and dist.max_episode_steps == 500 and dist.notes == ""
        assert dist.observation_space.shape == (39,) and dist.observation_space.dtype == np.float64
        assert dist.action_space.shape == (4,)
        np.testing.assert_array_equal(dist.action_space.low, -1.0)
        np.testing.assert_array_equal(dist.action_space.high, 1.0)
    spec = ml10.spec
    assert dict(spec.kwargs) == {
        "benchmark": "ML10",
        "env_name": None,
        "seed": 0,
        "reward_version": "v2",
        "terminate_on_success": False,
        "success_reward": 0.0,
    }
    assert dict(make_distribution("ML1-reach-v3", seed=3, reward_version="v1").spec.kwargs)["seed"] == 3


def test_workers_never_build_benchmarks(ml10: TaskDistribution, monkeypatch: pytest.MonkeyPatch) -> None:
    """Constructing, reading spaces, make_env, set_task, reset and step must not build a benchmark."""
    task = ml10.tasks("test")[0]  # built by the module fixture's instance, before the patch

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a Meta-World benchmark was built")

    for bench in ("ML1", "ML10", "ML25", "ML45"):
        monkeypatch.setattr(metaworld, bench, refuse)
    worker_dist = ml10.spec.build()
    assert worker_dist.observation_space.shape == (39,)
    row = worker_dist.describe()
    assert (row["train_tasks"], row["test_tasks"], row["obs_dim"], row["action_dim"]) == (500, 250, 39, 4)
    env = worker_dist.make_env(task.family)
    worker_dist.set_task(env, task)
    obs, _ = worker_dist.reset(env, 0)
    assert obs.shape == (39,)
    env.step(np.zeros(4, dtype=np.float32))
    assert "_lists" not in worker_dist.__dict__, "no task list was loaded"
    # tasks() loads the lists; here from the on-disk cache written by the fixture, so still no build.
    assert worker_dist.tasks("train") == ml10.tasks("train")
    monkeypatch.setenv("METARL_NO_CACHE", "1")
    with pytest.raises(AssertionError, match="benchmark was built"):
        ml10.spec.build().tasks("train")


def test_ml1_splits(reach: TaskDistribution) -> None:
    _check_split_structure(reach, "train", ("reach-v3",))
    _check_split_structure(reach, "test", ("reach-v3",))
    assert not _pairs(reach.tasks("train")) & _pairs(reach.tasks("test")), "ML1 test goals must be held out"


def test_ml10_splits(ml10: TaskDistribution) -> None:
    _check_split_structure(ml10, "train", ML10_TRAIN)
    _check_split_structure(ml10, "test", ML10_TEST)
    assert not {t.family for t in ml10.tasks("train")} & {t.family for t in ml10.tasks("test")}
    assert not _pairs(ml10.tasks("train")) & _pairs(ml10.tasks("test"))


def test_ml25_drops_basketball_from_test_without_building(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metaworld, "ML25", None)  # describe() must not build the benchmark
    ml25 = make_distribution("ML25")
    assert isinstance(ml25, MetaWorldDistribution)
    assert len(ml25.train_classes) == 25 and "basketball-v3" in ml25.train_classes
    assert ml25.test_classes == ML25_TEST_AFTER_FIX
    assert not set(ml25.train_classes) & set(ml25.test_classes)
    assert ml25.families == ml25.train_classes + ML25_TEST_AFTER_FIX
    assert "basketball-v3" in ml25.notes and "test" in ml25.notes
    row = ml25.describe()
    assert (row["train_tasks"], row["test_tasks"]) == (1250, 200)
    assert row["notes"] == ml25.notes


@pytest.mark.slow
def test_ml25_full_build_matches_metaworld_minus_basketball() -> None:
    ml25 = make_distribution("ML25")
    assert isinstance(ml25, MetaWorldDistribution)
    _check_split_structure(ml25, "train", ml25.train_classes)
    _check_split_structure(ml25, "test", ML25_TEST_AFTER_FIX)
    assert not _pairs(ml25.tasks("train")) & _pairs(ml25.tasks("test"))
    upstream = metaworld.ML25(seed=0)
    kept = [t for t in upstream.test_tasks if t.env_name != "basketball-v3"]
    assert [t.param("mw_data") for t in ml25.tasks("test")] == [t.data for t in kept]
    assert [t.param("mw_data") for t in ml25.tasks("train")] == [t.data for t in upstream.train_tasks]


@pytest.mark.slow
def test_ml45_full_build() -> None:
    ml45 = make_distribution("ML45")
    assert isinstance(ml45, MetaWorldDistribution)
    assert len(ml45.train_classes) == 45 and len(ml45.test_classes) == 5
    assert not set(ml45.train_classes) & set(ml45.test_classes)
    _check_split_structure(ml45, "train", ml45.train_classes)
    _check_split_structure(ml45, "test", ml45.test_classes)
    assert not _pairs(ml45.tasks("train")) & _pairs(ml45.tasks("test"))


# -- envs --------------------------------------------------------------------------------------
def test_every_family_steps_with_finite_outputs(reach: TaskDistribution, ml10: TaskDistribution) -> None:
    actions = _random_actions(5)
    cases = [(reach, "test"), (ml10, "train"), (ml10, "test")]
    stepped = set()
    for dist, split in cases:
        first_of_family: dict[str, Task] = {}
        for task in dist.tasks(split):  # type: ignore[arg-type]
            first_of_family.setdefault(task.family, task)
        for family, task in first_of_family.items():
            env = dist.make_env(family)
            assert isinstance(env, MetaWorldTaskEnv) and env.family == family
            dist.set_task(env, task)
            obs, _ = dist.reset(env, 0)
            assert obs.shape == (39,) and obs.dtype == np.float64 and np.isfinite(obs).all()
            for action in actions:
                obs, reward, terminated, truncated, info = env.step(action)
                assert obs.shape == (39,) and np.isfinite(obs).all(), family
                assert np.isfinite(float(reward)), family
                assert terminated is False and truncated is False
                assert type(info["success"]) is bool
            env.close()
            stepped.add((dist.name, family))
    assert len(stepped) == 1 + 15


def test_same_task_and_seed_give_same_episode(ml10: TaskDistribution) -> None:
    actions = _random_actions(30)
    for family in ("reach-v3", "pick-place-v3", "lever-pull-v3"):
        tasks = [t for t in ml10.tasks("train") + ml10.tasks("test") if t.family == family]
        env = ml10.make_env(family)
        first = _rollout(ml10, env, tasks[0], 1, actions)
        _rollout(ml10, env, tasks[1], 1, _random_actions(30, seed=9))  # another goal in between
        np.random.seed(12345)  # Meta-World's reset must not depend on global numpy state either
        again = _rollout(ml10, env, tasks[0], 1, actions)
        fresh = _rollout(ml10, ml10.make_env(family), tasks[0], 1, actions)
        np.testing.assert_array_equal(first, again)
        np.testing.assert_array_equal(first, fresh)


def test_set_task_changes_behaviour(reach: TaskDistribution, ml10: TaskDistribution) -> None:
    actions = _random_actions(20)
    env = reach.make_env("reach-v3")
    a = _rollout(reach, env, reach.tasks("train")[0], 0, actions)
    b = _rollout(reach, env, reach.tasks("train")[1], 0, actions)
    assert not np.array_equal(a[1:, -1], b[1:, -1]), "two reach goals gave identical rewards"
    env = ml10.make_env("drawer-open-v3")
    test_tasks = [t for t in ml10.tasks("test") if t.family == "drawer-open-v3"]
    c = _rollout(ml10, env, test_tasks[0], 0, actions)
    d = _rollout(ml10, env, test_tasks[1], 0, actions)
    assert not np.array_equal(c, d)


def test_reward_version_is_used() -> None:
    v1, v2 = make_distribution("ML1-reach-v3", reward_version="v1"), make_distribution("ML1-reach-v3")
    task_v2 = v2.tasks("train")[0]
    task_v1 = v1.tasks("train")[0]
    assert task_v1 == task_v2  # reward_version does not change the tasks
    actions = _random_actions(10)
    r1 = _rollout(v1, v1.make_env("reach-v3"), task_v1, 0, actions)[1:, -1]
    r2 = _rollout(v2, v2.make_env("reach-v3"), task_v2, 0, actions)[1:, -1]
    assert not np.allclose(r1, r2)


def _reach_goal(task: Task) -> np.ndarray:
    data = task.param("mw_data")
    assert isinstance(data, bytes)
    return np.asarray(pickle.loads(data)["rand_vec"])[3:]  # reach-v3: [object xyz, goal xyz]


def _drive_to_goal(dist: TaskDistribution, env: gym.Env[Any, Any], task: Task) -> list[tuple[bool, bool]]:
    """Move the hand to the goal with a proportional controller; (terminated, success) per step."""
    return [(terminated, success) for terminated, success, _ in _drive_with_rewards(dist, env, task)]


def _drive_with_rewards(dist: TaskDistribution, env: gym.Env[Any, Any], task: Task) -> list[tuple[bool, bool, float]]:
    goal = _reach_goal(task)
    dist.set_task(env, task)
    obs, _ = dist.reset(env, 0)
    steps = []
    for _ in range(150):
        action = np.zeros(4, dtype=np.float32)
        action[:3] = np.clip((goal - obs[:3]) * 20.0, -1.0, 1.0)
        obs, reward, terminated, _, info = env.step(action)
        steps.append((terminated, info["success"], float(reward)))
        if terminated:
            break
    return steps


def test_terminate_on_success(reach: TaskDistribution) -> None:
    task = reach.tasks("test")[3]
    plain = _drive_to_goal(reach, reach.make_env("reach-v3"), task)
    assert any(s for _, s in plain), "the scripted controller should reach the goal"
    assert not any(t for t, _ in plain), "terminate_on_success is off by default"
    terminating = make_distribution("ML1-reach-v3", terminate_on_success=True)
    flags = _drive_to_goal(terminating, terminating.make_env("reach-v3"), task)
    first_success = next(i for i, (_, s) in enumerate(plain) if s)
    assert len(flags) == first_success + 1 and flags[-1] == (True, True)


def test_success_reward_is_paid_on_successful_steps_only(reach: TaskDistribution) -> None:
    task = reach.tasks("test")[3]
    plain = _drive_with_rewards(reach, reach.make_env("reach-v3"), task)
    shaped_dist = make_distribution("ML1-reach-v3", success_reward=2.5)
    assert isinstance(shaped_dist, MetaWorldDistribution) and shaped_dist.success_reward == 2.5
    shaped = _drive_with_rewards(shaped_dist, shaped_dist.make_env("reach-v3"), task)
    assert [s for _, s, _ in shaped] == [s for _, s, _ in plain], "the shaping must not change what succeeds"
    successes = [s for _, s, _ in plain]
    assert 0 < sum(successes) < len(successes), "the scripted episode should have steps both outside and inside"
    extra = np.array([r1 - r0 for (_, _, r0), (_, _, r1) in zip(plain, shaped, strict=True)])
    np.testing.assert_allclose(extra, np.where(successes, 2.5, 0.0), atol=1e-9)
    # worker processes rebuild the distribution from its spec: the option must travel with it
    rebuilt = pickle.loads(pickle.dumps(shaped_dist.spec)).build()
    assert isinstance(rebuilt, MetaWorldDistribution) and rebuilt.success_reward == 2.5
    assert reach.spec != shaped_dist.spec


def test_truncation_at_500_then_clear_error(reach: TaskDistribution) -> None:
    env = reach.make_env("reach-v3")
    reach.set_task(env, reach.tasks("train")[0])
    reach.reset(env, 0)
    action = np.zeros(4, dtype=np.float32)
    truncations = [env.step(action)[3] for _ in range(500)]
    assert truncations[-1] is True and not any(truncations[:-1])
    with pytest.raises(RuntimeError, match=r"episode already ended at 500 steps; call reset\(\)"):
        env.step(action)
    reach.reset(env, 0)
    assert env.step(action)[3] is False


def test_wrapped_metaworld_errors(reach: TaskDistribution) -> None:
    env = reach.make_env("reach-v3")
    with pytest.raises(RuntimeError, match=r"call dist.set_task\(env, task\) before reset\(\)"):
        env.reset(seed=0)
    with pytest.raises(RuntimeError, match=r"call dist.set_task\(env, task\) before reset\(\)"):
        env.step(np.zeros(4))
    reach.set_task(env, reach.tasks("train")[0])
    with pytest.raises(RuntimeError, match=r"call reset\(\) after set_task\(\) and before step\(\)"):
        env.step(np.zeros(4))
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"action for reach-v3 must have shape \(4,\), got \(3,\)"):
        env.step(np.zeros(3))
    with pytest.raises(ValueError, match=r"must have shape \(4,\), got \(1, 4\)"):
        env.step(np.zeros((1, 4)))
    obs, *_ = env.step([0.0, 0.0, 0.0, 0.0])  # a plain list of the right length is fine
    assert obs.shape == (39,)


def test_tasks_from_elsewhere_are_refused(reach: TaskDistribution, ml10: TaskDistribution) -> None:
    env = ml10.make_env("reach-v3")
    push_task = next(t for t in ml10.tasks("train") if t.family == "push-v3")
    with pytest.raises(
        ValueError,
        match="task of family push-v3 given to an env of family reach-v3; "
        "Meta-World cannot switch an env across classes",
    ):
        ml10.set_task(env, push_task)
    with pytest.raises(ValueError, match="belongs to distribution 'ML1-reach-v3', not 'ML10'"):
        ml10.set_task(env, reach.tasks("train")[0])
    with pytest.raises(TypeError, match="expected a metarl Task"):
        ml10.set_task(env, metaworld.types.Task(env_name="reach-v3", data=b""))
    with pytest.raises(TypeError, match=r"made by MetaWorldDistribution\.make_env"):
        ml10.set_task(gym.make("Pendulum-v1"), ml10.tasks("train")[0])
    v1 = make_distribution("ML10", reward_version="v1")
    with pytest.raises(ValueError, match=r"reward_version='v2'.*uses reward_version='v1'"):
        v1.set_task(env, ml10.tasks("train")[0])
    # A user's gymnasium wrapper on top is fine.
    wrapped = gym.wrappers.RecordEpisodeStatistics(ml10.make_env("reach-v3"))
    ml10.set_task(wrapped, ml10.tasks("train")[0])
    assert ml10.reset(wrapped, 0)[0].shape == (39,)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"benchmark": "ML5"}, r"unknown Meta-World benchmark 'ML5'; choose one of \['ML1', 'ML10', 'ML25', 'ML45'\]"),
        ({"benchmark": "ML1", "env_name": "reach-v2"}, r"env 'reach-v2' for ML1; choose one of .*'reach-v3'"),
        ({"benchmark": "ML1"}, r"unknown Meta-World env None for ML1"),
        ({"benchmark": "ML10", "env_name": "reach-v3"}, r"env_name is only for ML1"),
        ({"benchmark": "ML10", "reward_version": "v3"}, r"unknown reward_version 'v3'; choose one of \['v1', 'v2'\]"),
        ({"benchmark": "ML10", "terminate_on_success": "yes"}, r"terminate_on_success must be True or False, got 'yes"),
        ({"benchmark": "ML10", "success_reward": -1.0}, r"success_reward must be a number in \[0, 1e6\], got -1.0"),
        ({"benchmark": "ML10", "success_reward": "10"}, r"success_reward must be a number in \[0, 1e6\], got '10'"),
        ({"benchmark": "ML10", "success_reward": float("nan")}, r"success_reward must be a number in \[0, 1e6\], got nan"),  # noqa: E501
        ({"benchmark": "ML10", "success_reward": True}, r"success_reward must be a number in \[0, 1e6\], got True"),
        ({"benchmark": "ML10", "seed": -1}, r"seed must be an integer in \[0, 2\*\*32 - 2\], got -1"),
        ({"benchmark": "ML10", "seed": 1.5}, r"seed must be an integer"),
    ],
)  # fmt: skip
def test_bad_options(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MetaWorldDistribution(**kwargs)


def test_bad_options_through_registry_and_make_env(ml10: TaskDistribution) -> None:
    assert isinstance(ml10, MetaWorldDistribution)
    with pytest.raises(ValueError, match=r"unknown reward_version 'v0'"):
        make_distribution("ML10", reward_version="v0")
    with pytest.raises(ValueError, match=r"unknown family 'faucet-open-v3' for ML10; valid: \['reach-v3'"):
        ml10.make_env("faucet-open-v3")
    with pytest.raises(ValueError, match=r"unknown render_mode 'rgb'; choose None or one of"):
        ml10.make_env("reach-v3", render_mode="rgb")
    env = ml10.make_env("reach-v3", render_mode="rgb_array")  # rendering itself needs a GL backend
    assert env.render_mode == "rgb_array"


# -- sampling and specs ------------------------------------------------------------------------
def test_sample_is_class_balanced(ml10: TaskDistribution) -> None:
    for rng in range(3):
        sample = ml10.sample(20, "train", rng=rng)
        assert Counter(t.family for t in sample) == dict.fromkeys(ML10_TRAIN, 2)
        assert len(set(sample)) == 20
        held_out = ml10.sample(10, "test", rng=rng)
        assert Counter(t.family for t in held_out) == dict.fromkeys(ML10_TEST, 2)
        assert {t.split for t in held_out} == {"test"}


def test_spec_pickles_and_rebuilds_the_same_distribution(ml10: TaskDistribution) -> None:
    spec = pickle.loads(pickle.dumps(ml10.spec))
    rebuilt = spec.build()
    assert isinstance(rebuilt, MetaWorldDistribution)
    assert (rebuilt.name, rebuilt.families, rebuilt.spec) == (ml10.name, ml10.families, ml10.spec)
    assert rebuilt.tasks("test") == ml10.tasks("test")
    task = ml10.tasks("test")[60]
    actions = _random_actions(20)
    ours = _rollout(ml10, ml10.make_env(task.family), task, 3, actions)
    theirs = _rollout(rebuilt, rebuilt.make_env(task.family), task, 3, actions)
    np.testing.assert_array_equal(ours, theirs)
    spec1 = pickle.loads(pickle.dumps(make_distribution("ML1-reach-v3", seed=2, terminate_on_success=True).spec))
    d1 = spec1.build()
    assert isinstance(d1, MetaWorldDistribution)
    assert (d1.name, d1.seed, d1.terminate_on_success, d1.reward_version) == ("ML1-reach-v3", 2, True, "v2")


@pytest.mark.parametrize("name", ["ML1-reach-v3", "ML10"])
def test_passes_check_task_distribution(name: str) -> None:
    from metarl import check_task_distribution

    check_task_distribution(make_distribution(name))


@pytest.mark.parametrize("env_name", ["reach-v3", "pick-place-v3", "door-close-v3"])
def test_describe_dims_match_built_envs(env_name: str) -> None:
    from metarl.envs.metaworld import ACTION_DIM, OBS_DIM

    dist = make_distribution(f"ML1-{env_name}")
    env = dist.make_env(env_name)
    try:
        assert env.observation_space.shape == (OBS_DIM,) and env.action_space.shape == (ACTION_DIM,)
    finally:
        env.close()
    row = dist.describe()
    assert (row["obs_dim"], row["action_dim"]) == (OBS_DIM, ACTION_DIM)
