"""GymTaskDistribution and the README example (examples/custom_distribution.py)."""

from __future__ import annotations

import multiprocessing as mp
import pickle
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from metarl import DistributionSpec, check_task_distribution
from metarl.envs import GymTaskDistribution

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
EXAMPLE = EXAMPLES / "custom_distribution.py"


# ----------------------------------------------------------------------------------------------
# Module-level task functions (importable, as workers need)
# ----------------------------------------------------------------------------------------------
def sample_gravity(rng: np.random.Generator) -> dict[str, float]:
    return {"g": rng.uniform(5.0, 15.0)}


def apply_gravity(env: gym.Env[Any, Any], params: dict[str, Any]) -> None:
    env.unwrapped.g = params["g"]  # type: ignore[attr-defined]


def sample_coarse(rng: np.random.Generator) -> dict[str, float]:
    """Only three distinct tasks."""
    return {"g": float(rng.integers(0, 3)) + 8.0}


def sample_not_a_dict(rng: np.random.Generator) -> list[float]:
    return [1.0]


def sample_bad_value(rng: np.random.Generator) -> dict[str, Any]:
    return {"g": object()}


def make_pendulum(**kwargs: Any) -> gym.Env[Any, Any]:
    return gym.make("Pendulum-v1", **kwargs)


def make_bare_pendulum() -> gym.Env[Any, Any]:
    from gymnasium.envs.classic_control.pendulum import PendulumEnv

    return PendulumEnv()  # no spec: no max_episode_steps


def _pendulum(**kwargs: Any) -> GymTaskDistribution:
    return GymTaskDistribution("pendulum-gravity", "Pendulum-v1", sample_gravity, apply_gravity, **kwargs)


# ----------------------------------------------------------------------------------------------
# The wrapper
# ----------------------------------------------------------------------------------------------
def test_fixed_disjoint_splits_from_the_seed() -> None:
    dist = _pendulum()
    train, test = dist.tasks("train"), dist.tasks("test")
    assert (len(train), len(test)) == (100, 20)
    assert not {t.params for t in train} & {t.params for t in test}
    assert len({t.params for t in train}) == 100
    assert all(5.0 <= float(t.param("g")) <= 15.0 for t in train + test)  # type: ignore[arg-type]
    assert train == _pendulum().tasks("train") and test == _pendulum().tasks("test")
    assert test != _pendulum(seed=1).tasks("test")
    assert dist.source == "custom" and dist.families == ("Pendulum-v1",) and dist.max_episode_steps == 200
    assert [t.id for t in test[:2]] == ["pendulum-gravity/test/Pendulum-v1/0", "pendulum-gravity/test/Pendulum-v1/1"]


def test_set_task_applies_the_parameters() -> None:
    dist = _pendulum(num_train=4, num_test=2, family="pendulum")
    env = dist.make_env("pendulum")
    for task in dist.tasks("train")[:2]:
        dist.set_task(env, task)
        assert env.unwrapped.g == task.param("g")  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="belongs to distribution 'point-nav'"):
        from metarl.envs import make_distribution

        dist.set_task(env, make_distribution("point-nav").tasks("train")[0])
    env.close()


def test_horizon_from_the_env_spec_or_given() -> None:
    dist = _pendulum(max_episode_steps=7, num_train=2, num_test=1)
    env = dist.make_env(dist.families[0])
    dist.set_task(env, dist.tasks("test")[0])
    env.reset(seed=0)
    truncated = [env.step(np.zeros(1, np.float32))[3] for _ in range(7)]
    assert truncated == [False] * 6 + [True]
    factory = GymTaskDistribution("f", make_pendulum, sample_gravity, apply_gravity, num_train=2, num_test=1)
    assert factory.max_episode_steps == 200 and factory.families == ("make_pendulum",)
    with pytest.raises(ValueError, match="declares no max_episode_steps; pass max_episode_steps=<horizon>"):
        GymTaskDistribution("b", make_bare_pendulum, sample_gravity, apply_gravity)
    bare = GymTaskDistribution("b", make_bare_pendulum, sample_gravity, apply_gravity, max_episode_steps=50)
    assert bare.max_episode_steps == 50


def test_spec_uses_paths_and_rebuilds_the_same_distribution() -> None:
    dist = GymTaskDistribution(
        "p", make_pendulum, sample_gravity, apply_gravity, num_train=5, num_test=3, seed=4, env_kwargs={"g": 3.0}
    )
    spec = pickle.loads(pickle.dumps(dist.spec))
    assert spec == dist.spec and hash(spec) == hash(dist.spec)  # usable as a cache key
    kwargs = dict(spec.kwargs)
    assert kwargs["env_kwargs"] == (("g", 3.0),)
    assert spec.factory == "metarl.envs.custom:GymTaskDistribution"
    assert kwargs["env"] == "test_custom_distribution:make_pendulum"
    assert kwargs["sample_task"] == "test_custom_distribution:sample_gravity"
    assert kwargs["apply_task"] == "test_custom_distribution:apply_gravity"
    rebuilt = spec.build()
    assert rebuilt.tasks("train") == dist.tasks("train") and rebuilt.tasks("test") == dist.tasks("test")
    env = rebuilt.make_env(rebuilt.families[0])
    assert env.unwrapped.g == 3.0  # env_kwargs reach the factory
    env.close()
    assert rebuilt.families == dist.families and rebuilt.max_episode_steps == dist.max_episode_steps
    # path strings are accepted directly
    by_path = GymTaskDistribution(
        "p",
        "test_custom_distribution:make_pendulum",
        "test_custom_distribution:sample_gravity",
        "test_custom_distribution:apply_gravity",
        num_train=5,
        num_test=3,
        seed=4,
    )
    assert by_path.tasks("test") == dist.tasks("test")
    check_task_distribution(dist)


def test_lambdas_and_closures_are_refused() -> None:
    def local_sampler(rng: np.random.Generator) -> dict[str, float]:
        return {"g": 1.0}

    with pytest.raises(TypeError, match=r"sample_task '.*<lambda>' is a lambda or a closure; worker processes"):
        GymTaskDistribution("x", "Pendulum-v1", lambda rng: {"g": 1.0}, apply_gravity)
    with pytest.raises(
        TypeError, match=r"sample_task '.*local_sampler' is a lambda or a closure.*define it as a module-level function"
    ):
        GymTaskDistribution("x", "Pendulum-v1", local_sampler, apply_gravity)
    with pytest.raises(TypeError, match=r"apply_task .* is a lambda or a closure"):
        GymTaskDistribution("x", "Pendulum-v1", sample_gravity, lambda env, p: None)
    with pytest.raises(TypeError, match=r"env factory .* is a lambda or a closure"):
        GymTaskDistribution("x", lambda: gym.make("Pendulum-v1"), sample_gravity, apply_gravity)


def test_bad_inputs_get_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"gave only 3 distinct tasks in \d+ draws for the 'test' split"):
        GymTaskDistribution("x", "Pendulum-v1", sample_coarse, apply_gravity, num_train=2, num_test=2)
    ok = GymTaskDistribution("x", "Pendulum-v1", sample_coarse, apply_gravity, num_train=2, num_test=1)
    assert len({t.params for t in ok.tasks("train") + ok.tasks("test")}) == 3
    with pytest.raises(TypeError, match=r"must return a dict of parameter name -> value, got \[1.0\]"):
        GymTaskDistribution("x", "Pendulum-v1", sample_not_a_dict, apply_gravity)
    with pytest.raises(TypeError, match="returned an unusable task: task parameter 'g' has type object"):
        GymTaskDistribution("x", "Pendulum-v1", sample_bad_value, apply_gravity)
    with pytest.raises(ValueError, match="unknown gymnasium env id 'NoSuchEnv-v0'"):
        GymTaskDistribution("x", "NoSuchEnv-v0", sample_gravity, apply_gravity)
    with pytest.raises(ValueError, match="sample_task 'no_such_module:f' cannot be imported"):
        GymTaskDistribution("x", "Pendulum-v1", "no_such_module:f", apply_gravity)
    with pytest.raises(ValueError, match="num_train must be a positive integer"):
        _pendulum(num_train=0)
    with pytest.raises(ValueError, match="name must be a non-empty string"):
        GymTaskDistribution("", "Pendulum-v1", sample_gravity, apply_gravity)


# ----------------------------------------------------------------------------------------------
# The README example, run exactly as a user runs it
# ----------------------------------------------------------------------------------------------
def test_example_runs_as_a_script() -> None:
    out = subprocess.run(
        [sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=120, cwd=EXAMPLES.parent
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "registered: True"
    assert lines[1] == "cheetah-mass: 100 train / 20 test tasks, obs (17,), actions (6,), horizon 200"
    task = re.fullmatch(r"held-out task cheetah-mass/test/HalfCheetah-v5/0: gravity=(\S+), torso_mass=(\S+)", lines[2])
    assert task is not None
    gravity, mass = float(task.group(1)), float(task.group(2))
    assert -12.0 <= gravity <= -7.0 and 3.0 <= mass <= 10.0
    ret = re.fullmatch(r"random policy: return (\S+) over 200 steps", lines[3])
    assert ret is not None and np.isfinite(float(ret.group(1)))


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The example file imported as the module ``custom_distribution`` (its main() does not run)."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    import custom_distribution

    yield custom_distribution
    sys.modules.pop("custom_distribution", None)


def _first_steps(spec: DistributionSpec, task_index: int) -> tuple[list[float], list[float]]:
    """Rebuild from the spec (as a worker does) and run 5 steps of a held-out task: (first obs, rewards)."""
    dist = spec.build()
    task = dist.tasks("test")[task_index]
    env = dist.make_env(task.family)
    dist.set_task(env, task)
    obs, _ = env.reset(seed=5)
    rewards = [float(env.step(np.full(6, 0.5, np.float32))[1]) for _ in range(5)]
    env.close()
    return obs.tolist(), rewards


def test_example_distribution_changes_the_model_and_rebuilds_in_a_worker(example: ModuleType) -> None:
    dist = example.make_cheetah_mass(seed=0, num_train=10, num_test=4)
    task = dist.tasks("test")[1]
    env = dist.make_env(task.family)
    dist.set_task(env, task)
    model = env.unwrapped.model
    assert model.body_mass[model.body("torso").id] == task.param("torso_mass")
    assert model.opt.gravity[2] == task.param("gravity")
    env.close()
    assert dict(dist.spec.kwargs)["sample_task"] == "custom_distribution:sample_cheetah_task"
    expected = _first_steps(dist.spec, 1)
    assert expected != _first_steps(dist.spec, 2)  # other mass and gravity: other rewards
    with mp.get_context("spawn").Pool(1) as pool:  # a fresh interpreter, as the engine's workers are
        assert pool.apply(_first_steps, (dist.spec, 1)) == expected


def test_readme_shows_exactly_the_example_file() -> None:
    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    example = (root / "examples" / "custom_distribution.py").read_text().rstrip("\n")
    assert f"```python\n{example}\n```" in readme
