"""The RL² reach probe's resting-point figures, against oracles worked out by hand."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from metarl.envs import make_distribution

ROOT = Path(__file__).resolve().parents[1]


def _probe() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "rl2_reach_probe", ROOT / "benchmarks" / "learning" / "rl2_reach_probe.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rest_points_of_a_fixed_offset_and_of_a_goal_blind_agent() -> None:
    probe = _probe()
    goals = np.array([[0.0, 0.8, 0.1], [0.1, 0.85, 0.2], [-0.1, 0.9, 0.3]])
    offset = np.array([0.01, -0.02, 0.0])
    ends = np.repeat((goals + offset)[:, None, :], 3, axis=1)  # 3 evaluation episodes, all at goal + offset
    rest = probe.rest_points(ends, goals, adapted_ends=goals)
    np.testing.assert_allclose(rest["bias_cm"], [1.0, -2.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(rest["rms_cm"], [1.0, 2.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(rest["slope_on_goal"], [1.0, 1.0, 1.0], atol=1e-9)
    assert rest["median_rest_to_goal_cm"] == pytest.approx(np.sqrt(5.0))
    assert rest["median_rest_to_adaptation_end_cm"] == pytest.approx(np.sqrt(5.0))
    blind = np.repeat(np.array([[[0.0, 0.85, 0.2]]]), 3, axis=0)  # one resting point whatever the goal
    rest = probe.rest_points(blind, goals, adapted_ends=blind[:, 0])
    np.testing.assert_allclose(rest["slope_on_goal"], [0.0, 0.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(rest["bias_cm"], [0.0, 0.0, 0.0], atol=1e-9)
    assert rest["median_rest_to_adaptation_end_cm"] == 0.0


def test_the_probe_reads_the_goal_the_env_rewards() -> None:
    probe = _probe()
    dist = make_distribution("ML1-reach-v3")
    env = dist.make_env("reach-v3")
    for task in dist.tasks("test")[:3]:
        dist.set_task(env, task)
        dist.reset(env, 0)
        np.testing.assert_allclose(probe.env_goal(task), env.unwrapped._target_pos)  # type: ignore[attr-defined]
