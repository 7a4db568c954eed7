"""Your own task distribution: HalfCheetah with a random torso mass and gravity per task.

Run it with ``python examples/custom_distribution.py``.  It registers the distribution under a
name, builds it, validates it with ``check_task_distribution`` and runs a random policy on one
held-out task.

The three functions are defined at module level on purpose: worker processes rebuild the
distribution from ``dist.spec`` by importing them, so lambdas and closures are refused.  To make
the name available to ``metarl`` commands in other processes, put these functions in a module
of an installed package and declare an entry point in its ``pyproject.toml``::

    [project.entry-points."metarl.distributions"]
    cheetah-mass = "my_package.tasks:make_cheetah_mass"
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from metarl import check_task_distribution
from metarl.envs import GymTaskDistribution, list_distributions, make_distribution, register_distribution


def sample_cheetah_task(rng: np.random.Generator) -> dict[str, float]:
    """One task: a torso mass in kg (HalfCheetah's default is 6.25) and the vertical gravity in m/s²."""
    return {"torso_mass": rng.uniform(3.0, 10.0), "gravity": rng.uniform(-12.0, -7.0)}


def apply_cheetah_task(env: gym.Env[Any, Any], params: dict[str, Any]) -> None:
    """Write a task's parameters into the MuJoCo model of an env built once per worker slot."""
    model = env.unwrapped.model  # type: ignore[attr-defined]  # gymnasium MujocoEnv's mujoco.MjModel
    model.body_mass[model.body("torso").id] = params["torso_mass"]
    model.opt.gravity[:] = (0.0, 0.0, params["gravity"])


def make_cheetah_mass(seed: int = 0, num_train: int = 100, num_test: int = 20) -> GymTaskDistribution:
    """The distribution: fixed train/test task lists drawn from ``seed``, horizon 200."""
    return GymTaskDistribution(
        "cheetah-mass",
        "HalfCheetah-v5",
        sample_cheetah_task,
        apply_cheetah_task,
        num_train=num_train,
        num_test=num_test,
        seed=seed,
        max_episode_steps=200,
    )


def main() -> None:
    register_distribution("cheetah-mass", make_cheetah_mass)
    print("registered:", "cheetah-mass" in list_distributions())

    dist = make_distribution("cheetah-mass", seed=0)
    check_task_distribution(dist)  # raises with a clear message if the contract is broken
    print(
        f"{dist.name}: {len(dist.tasks('train'))} train / {len(dist.tasks('test'))} test tasks, "
        f"obs {dist.observation_space.shape}, actions {dist.action_space.shape}, horizon {dist.max_episode_steps}"
    )

    task = dist.tasks("test")[0]
    env = dist.make_env(task.family)
    dist.set_task(env, task)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    episode_return, steps, done = 0.0, 0, False
    while not done:
        _, reward, terminated, truncated, _ = env.step(rng.uniform(-1.0, 1.0, size=dist.action_space.shape))
        episode_return += float(reward)
        steps += 1
        done = terminated or truncated
    env.close()
    params = ", ".join(f"{k}={v:.4f}" for k, v in task.params)
    print(f"held-out task {task.id}: {params}")
    print(f"random policy: return {episode_return:.4f} over {steps} steps")


if __name__ == "__main__":
    main()
