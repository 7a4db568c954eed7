"""check_task_distribution: every broken contract gets an error naming the problem and the fix.

Each broken distribution below differs from the valid ``Tiny`` distribution in one thing.
They are module-level classes so that their specs can be rebuilt by import, as workers do.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from metarl import DistributionSpec, Task, TaskDistribution, check_task_distribution
from metarl.envs import GymTaskDistribution, make_distribution
from metarl.tasks import Split


# ----------------------------------------------------------------------------------------------
# A valid tiny distribution: a 1-D point moving towards a goal
# ----------------------------------------------------------------------------------------------
class TinyEnv(gym.Env[np.ndarray, np.ndarray]):
    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self.goal = 0.0
        self.pos = 0.0
        self.t = 0

    def _obs(self) -> np.ndarray:
        return np.array([self.pos, self.t], dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.pos = float(self.np_random.uniform(-0.1, 0.1))
        self.t = 0
        return self._obs(), {}

    def step(self, action: np.ndarray) -> tuple[Any, Any, Any, Any, Any]:
        self.pos += float(action[0])
        self.t += 1
        reward = -abs(self.pos - self.goal)
        return self._obs(), reward, False, self.t >= 10, {"success": abs(self.pos - self.goal) < 0.1}


class Tiny(TaskDistribution):
    name = "tiny"
    families = ("tiny",)
    max_episode_steps = 10
    goals: dict[str, tuple[float, ...]] = {"train": (0.5, -0.5, 0.25), "test": (0.75, -0.75)}  # noqa: RUF012
    env_cls: type[TinyEnv] = TinyEnv

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def _build_tasks(self, split: Split) -> list[Task]:
        return [Task.make(self.name, split, "tiny", i, {"goal": g}) for i, g in enumerate(self.goals[split])]

    def make_env(self, family: str) -> gym.Env[Any, Any]:
        return self.env_cls()

    def set_task(self, env: gym.Env[Any, Any], task: Task) -> None:
        self.validate_task(task)
        env.unwrapped.goal = float(task.param("goal"))  # type: ignore[attr-defined, arg-type]

    @property
    def spec(self) -> DistributionSpec:
        return DistributionSpec.of(type(self), seed=self.seed)


# ----------------------------------------------------------------------------------------------
# Broken attributes and task lists
# ----------------------------------------------------------------------------------------------
class NoName(Tiny):
    name = ""


class FamiliesNotTuple(Tiny):
    families = "tiny"  # type: ignore[assignment]


class ZeroHorizon(Tiny):
    max_episode_steps = 0


class EmptyTest(Tiny):
    goals = {"train": (0.5, -0.5), "test": ()}  # noqa: RUF012


class UnknownFamily(Tiny):
    def _build_tasks(self, split: Split) -> list[Task]:
        return [Task.make(self.name, split, "other", 0, {"goal": 0.3 if split == "train" else 0.4})]


class WrongDistributionField(Tiny):
    def _build_tasks(self, split: Split) -> list[Task]:
        return [Task.make("elsewhere", split, "tiny", 0, {"goal": 0.3 if split == "train" else 0.4})]


class WrongSplitField(Tiny):
    def _build_tasks(self, split: Split) -> list[Task]:
        return [Task.make(self.name, "train", "tiny", 0, {"goal": 0.3 if split == "train" else 0.4})]


class WrongIndex(Tiny):
    def _build_tasks(self, split: Split) -> list[Task]:
        return [Task.make(self.name, split, "tiny", 5, {"goal": 0.3 if split == "train" else 0.4})]


class Overlapping(Tiny):
    goals = {"train": (0.5, -0.5), "test": (0.75, 0.5)}  # noqa: RUF012


class OverlappingOnPurpose(Overlapping):
    overlapping_splits = True


class UnpicklableTask(Tiny):
    def _build_tasks(self, split: Split) -> list[Task]:
        tasks = super()._build_tasks(split)
        bad = Task(self.name, split, "tiny", 0, (("goal", 0.1), ("hook", lambda: None)))  # type: ignore[arg-type]
        return [bad, *tasks[1:]]


class NotJsonTask(Tiny):
    def _build_tasks(self, split: Split) -> list[Task]:
        tasks = super()._build_tasks(split)
        bad = Task(self.name, split, "tiny", 0, (("goal", frozenset({0.5})),))  # type: ignore[arg-type]
        return [bad, *tasks[1:]]


class Renamed(Tiny):
    name = "renamed"


class SpecOfAnotherDistribution(Tiny):
    @property
    def spec(self) -> DistributionSpec:
        return DistributionSpec.of(Renamed)


class SpecNotPicklable(Tiny):
    @property
    def spec(self) -> DistributionSpec:
        return DistributionSpec(factory="test_checks:Tiny", kwargs=(("seed", (x for x in range(3))),))


class SeededTasks(Tiny):
    """Test goals depend on the seed, but the spec forgets to pass it on."""

    def _build_tasks(self, split: Split) -> list[Task]:
        return [Task.make(self.name, split, "tiny", 0, {"goal": 0.1 * self.seed + (0.0 if split == "train" else 1.0)})]

    @property
    def spec(self) -> DistributionSpec:
        return DistributionSpec.of(type(self))


@pytest.mark.parametrize(
    ("dist", "error", "match"),
    [
        (NoName(), ValueError, r"NoName.name must be a non-empty string"),
        (FamiliesNotTuple(), ValueError, r"`families` must be a non-empty tuple"),
        (ZeroHorizon(), ValueError, r"`max_episode_steps` must be a positive integer"),
        (EmptyTest(), ValueError, r"has no 'test' tasks; _build_tasks\('test'\) must return at least one Task"),
        (UnknownFamily(), ValueError, r"unknown family 'other'; valid families: \['tiny'\]"),
        (WrongDistributionField(), ValueError, r"names distribution 'elsewhere'; build it with Task.make\('tiny'"),
        (
            WrongSplitField(),
            ValueError,
            r"has split 'train'; _build_tasks\('test'\) must return tasks with split='test'",
        ),
        (WrongIndex(), ValueError, r"has index 5; a task's index must be its position"),
        (Overlapping(), ValueError, r"train and test splits share 1 task.*set overlapping_splits = True"),
        (UnpicklableTask(), ValueError, r"task tiny/train/tiny/0 of 'tiny' cannot be pickled"),
        (NotJsonTask(), ValueError, r"not JSON round-trippable"),
        (SpecOfAnotherDistribution(), ValueError, r"its spec rebuilds a distribution named 'renamed'; workers rebuild"),
        (SpecNotPicklable(), ValueError, r"its spec cannot rebuild it \(TypeError: cannot pickle 'generator'"),
        (SeededTasks(seed=3), ValueError, r"its spec rebuilds different 'train' tasks"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Tiny) else None,
)
def test_static_contract_errors(dist: Tiny, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        check_task_distribution(dist)


def test_not_a_distribution() -> None:
    with pytest.raises(TypeError, match=r"expected a metarl.TaskDistribution, got TinyEnv; subclass"):
        check_task_distribution(TinyEnv())  # type: ignore[arg-type]


def test_overlap_allowed_when_declared_and_valid_tiny_passes() -> None:
    check_task_distribution(OverlappingOnPurpose())
    check_task_distribution(Tiny())


# ----------------------------------------------------------------------------------------------
# Broken envs
# ----------------------------------------------------------------------------------------------
class DiscreteObsEnv(TinyEnv):
    def __init__(self) -> None:
        super().__init__()
        self.observation_space = gym.spaces.Discrete(4)  # type: ignore[assignment]


class DiscreteActionEnv(TinyEnv):
    def __init__(self) -> None:
        super().__init__()
        self.action_space = gym.spaces.Discrete(2)  # type: ignore[assignment]


class InfiniteActionEnv(TinyEnv):
    def __init__(self) -> None:
        super().__init__()
        self.action_space = gym.spaces.Box(-np.inf, np.inf, shape=(1,), dtype=np.float32)


class UnseededEnv(TinyEnv):
    """Draws the start position from an unseeded generator: reset(seed=...) is ignored."""

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.pos = float(np.random.default_rng().uniform(-0.1, 0.1))
        return self._obs(), {}


class WrongShapeEnv(TinyEnv):
    def step(self, action: np.ndarray) -> tuple[Any, Any, Any, Any, Any]:
        _, r, term, trunc, info = super().step(action)
        return np.zeros(3, np.float32), r, term, trunc, info


class WrongDtypeEnv(TinyEnv):
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        obs, info = super().reset(seed=seed)
        return obs.astype(np.float64), info


class NanObsEnv(TinyEnv):
    def step(self, action: np.ndarray) -> tuple[Any, Any, Any, Any, Any]:
        obs, r, term, trunc, info = super().step(action)
        if self.t == 2:
            obs[0] = np.nan
        return obs, r, term, trunc, info


class NanRewardEnv(TinyEnv):
    def step(self, action: np.ndarray) -> tuple[Any, Any, Any, Any, Any]:
        obs, _, term, trunc, info = super().step(action)
        return obs, float("nan"), term, trunc, info


class VectorRewardEnv(TinyEnv):
    def step(self, action: np.ndarray) -> tuple[Any, Any, Any, Any, Any]:
        obs, r, term, trunc, info = super().step(action)
        return obs, np.array([r]), term, trunc, info


class BadSuccessEnv(TinyEnv):
    def step(self, action: np.ndarray) -> tuple[Any, Any, Any, Any, Any]:
        obs, r, term, trunc, _ = super().step(action)
        return obs, r, term, trunc, {"success": 0.5}


class OldGymApiEnv(TinyEnv):
    def step(self, action: np.ndarray) -> tuple[Any, Any, Any, Any, Any]:
        obs, r, term, _, info = super().step(action)
        return obs, r, term, info  # type: ignore[return-value]


class TinyDiscreteObsEnv(Tiny):
    env_cls = DiscreteObsEnv


class TinyDiscreteActionEnv(Tiny):
    env_cls = DiscreteActionEnv


class TinyInfiniteActionEnv(Tiny):
    env_cls = InfiniteActionEnv


class TinyUnseededEnv(Tiny):
    env_cls = UnseededEnv


class TinyWrongShapeEnv(Tiny):
    env_cls = WrongShapeEnv


class TinyWrongDtypeEnv(Tiny):
    env_cls = WrongDtypeEnv


class TinyNanObsEnv(Tiny):
    env_cls = NanObsEnv


class TinyNanRewardEnv(Tiny):
    env_cls = NanRewardEnv


class TinyVectorRewardEnv(Tiny):
    env_cls = VectorRewardEnv


class TinyBadSuccessEnv(Tiny):
    env_cls = BadSuccessEnv


class TinyOldGymApiEnv(Tiny):
    env_cls = OldGymApiEnv


class NoOpSetTask(Tiny):
    def set_task(self, env: gym.Env[Any, Any], task: Task) -> None:
        self.validate_task(task)  # ...but never applies the goal


class LeakySetTask(Tiny):
    """set_task only applies positive goals, so a negative-goal task inherits the previous goal."""

    def set_task(self, env: gym.Env[Any, Any], task: Task) -> None:
        goal = float(task.param("goal"))  # type: ignore[arg-type]
        if goal > 0:
            env.unwrapped.goal = goal  # type: ignore[attr-defined]

    goals = {"train": (-0.5, 0.5), "test": (0.75,)}  # noqa: RUF012


@pytest.mark.parametrize(
    ("dist_cls", "error", "match"),
    [
        (TinyDiscreteObsEnv, TypeError, r"family 'tiny': the observation space is Discrete; metarl needs gymnasium"),
        (TinyDiscreteActionEnv, TypeError, r"the action space is Discrete; .*use a Box action space"),
        (TinyInfiniteActionEnv, ValueError, r"action space bounds must be finite.*use a Box with finite low/high"),
        (
            TinyUnseededEnv,
            ValueError,
            r"reset\(seed=\.\.\.\) is not deterministic.*seed env.np_random / action noise from the seed",
        ),
        (
            TinyWrongShapeEnv,
            ValueError,
            r"family 'tiny', task tiny/train/tiny/0: observation at step 1 has shape \(3,\), but observation_space"
            r".shape is \(2,\)",
        ),
        (
            TinyWrongDtypeEnv,
            ValueError,
            r"observation at reset has dtype float64, but observation_space.dtype is float32",
        ),
        (TinyNanObsEnv, ValueError, r"family 'tiny', .*observation at step 2 \(shape \(2,\)\) is not finite"),
        (TinyNanRewardEnv, ValueError, r"reward at step 1 is nan; rewards must be finite"),
        (TinyVectorRewardEnv, TypeError, r"reward at step 1 is .*shape \(1,\)\); return a scalar float"),
        (TinyBadSuccessEnv, ValueError, r"info\['success'\] at step 1 is 0.5; it must be bool-like"),
        (TinyOldGymApiEnv, TypeError, r"step must return \(observation, reward, terminated, truncated, info\)"),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) and issubclass(v, Tiny) else None,
)
def test_env_contract_errors(dist_cls: type[Tiny], error: type[Exception], match: str) -> None:
    from metarl.errors import UserError

    with pytest.raises(error, match=match) as info:
        check_task_distribution(dist_cls())
    assert isinstance(info.value, UserError)  # the user's env: one line from the CLI, not a traceback


def test_set_task_that_changes_nothing() -> None:
    with pytest.raises(
        ValueError, match=r"set_task\(env, task\) did not change the env's behaviour: tasks tiny/train/tiny/0 and"
    ):
        check_task_distribution(NoOpSetTask())


def test_set_task_that_leaks_the_previous_task() -> None:
    with pytest.raises(ValueError, match=r"set_task\(env, task\) does not fully determine the env"):
        check_task_distribution(LeakySetTask())


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        check_task_distribution(Tiny(), steps=0)
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        check_task_distribution(Tiny(), seed=-1)


# ----------------------------------------------------------------------------------------------
# Built-ins pass
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["point-nav", "cheetah-vel", "cheetah-dir", "ant-dir"])
def test_classic_distributions_pass(name: str) -> None:
    check_task_distribution(make_distribution(name, seed=0))
    check_task_distribution(make_distribution(name, seed=1), seed=3, steps=20)


def sample_gravity(rng: np.random.Generator) -> dict[str, float]:
    return {"g": rng.uniform(5.0, 15.0)}


def apply_gravity(env: gym.Env[Any, Any], params: dict[str, Any]) -> None:
    env.unwrapped.g = params["g"]  # type: ignore[attr-defined]


def test_gym_task_distribution_passes() -> None:
    dist = GymTaskDistribution(
        "pendulum-gravity", "Pendulum-v1", sample_gravity, apply_gravity, num_train=5, num_test=3
    )
    check_task_distribution(dist)
