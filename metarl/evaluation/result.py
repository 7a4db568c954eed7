"""EvalResult: per-task and mean success/return after adaptation, and the adaptation curve.

Success is success at any step of an episode, as a fraction in [0, 1]; every task counts exactly
its own evaluation episodes (no over-count of envs that finish more episodes than others).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from metarl.agent import MetaLearner, MetaTestRollouts
from metarl.errors import UserError
from metarl.evaluation.stats import Interval, columnwise_mean_ci
from metarl.run import atomic_write_json
from metarl.tasks import Task


@dataclass
class EvalResult:
    """One meta-test.  JSON keys are stable; see docs/guide.md ("Result files")."""

    distribution: str
    split: str
    agent: str
    env_steps: int
    success_mean: float
    return_mean: float
    curve: dict[str, Any]  # {"x": [...], "unit": ..., "success": [...], "return": [...]}
    per_family: dict[str, dict[str, float]]
    per_task: dict[str, dict[str, float]]
    eval_episodes_per_task: int
    adaptation_episodes: int
    seed: int
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(data.pop("extra"))
        return data

    def save(self, path: Path) -> Path:
        atomic_write_json(Path(path), self.to_json())
        return Path(path)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EvalResult:
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        missing = sorted(known - set(data))
        if missing:
            raise UserError(f"not an EvalResult: missing keys {missing}")
        return cls(**{k: data[k] for k in known}, extra={k: v for k, v in data.items() if k not in known})


def load_eval_result(path: Path) -> EvalResult:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read eval result {str(path)!r}: {exc}") from exc
    return EvalResult.from_json(data)


def success_ci(result: EvalResult, family: str | None = None, seed: int = 0) -> Interval:
    """Mean held-out success over the goals (of one ``family``) with a 95% percentile-bootstrap interval over goals
    (5,000 replicates)."""
    goals = [v["success"] for v in result.per_task.values() if family is None or v.get("family") == family]
    if not goals:
        raise UserError(f"the result has no tasks of family {family!r}; it has {sorted(result.per_family)}")
    return columnwise_mean_ci(np.asarray(goals, dtype=np.float64)[:, None], reps=5000, seed=seed)[0]


def protocol_name(deterministic: bool) -> str:
    """How a meta-test treated its episodes, recorded in every result (``protocol``) so that `metarl compare`
    never pools results of different protocols.  Adaptation episodes always sample: they explore."""
    return "sampled adaptation, mean-action evaluation" if deterministic else "sampled adaptation and evaluation"


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else float("nan")


def evaluate(
    agent: MetaLearner,
    engine: Any,
    tasks: Sequence[Task],
    *,
    adaptation_episodes: int,
    eval_episodes: int,
    deterministic: bool = False,
    env_steps: int = 0,
    seed: int = 0,
    feedback: bool = True,
) -> EvalResult:
    """Meta-test ``agent`` on ``tasks``: adapt each with the budget, then count exactly ``eval_episodes``.

    ``feedback=False`` runs the adaptation control (RL²: no reward in the input); the result says which
    under the key ``feedback``, and how the episodes were run under ``protocol`` and ``deterministic``."""
    if not tasks:
        raise UserError("no tasks to evaluate on")
    rollouts = agent.meta_test(engine, tasks, adaptation_episodes, eval_episodes, deterministic, feedback=feedback)
    extra = {"feedback": feedback, "deterministic": bool(deterministic), "protocol": protocol_name(deterministic)}
    return result_from_rollouts(
        rollouts, agent.name, env_steps=env_steps, eval_episodes=eval_episodes,
        adaptation_episodes=adaptation_episodes, seed=seed, extra=extra,
    )  # fmt: skip


def result_from_rollouts(
    rollouts: MetaTestRollouts,
    agent: str,
    *,
    env_steps: int,
    eval_episodes: int,
    adaptation_episodes: int,
    seed: int,
    x: Sequence[int] | None = None,
    extra: dict[str, Any] | None = None,
) -> EvalResult:
    """Per-task, per-family and mean figures of a meta-test; ``x`` labels the curve points (default 0, 1, ...)."""
    per_task: dict[str, dict[str, float]] = {}
    by_family: dict[str, list[tuple[float, float]]] = {}
    for i, task in enumerate(rollouts.tasks):
        s = float(rollouts.eval_success[i].float().mean())
        r = float(rollouts.eval_return[i].float().mean())
        per_task[task.id] = {"success": s, "return": r, "family": task.family}  # type: ignore[dict-item]
        by_family.setdefault(task.family, []).append((s, r))
    per_family = {
        fam: {"success": _mean([s for s, _ in vals]), "return": _mean([r for _, r in vals])}
        for fam, vals in by_family.items()
    }
    k = rollouts.curve_success.shape[1]
    curve = {
        "x": list(range(k)) if x is None else [int(v) for v in x],
        "unit": rollouts.unit,
        "success": [float(v) for v in rollouts.curve_success.float().mean(0)],
        "return": [float(v) for v in rollouts.curve_return.float().mean(0)],
    }
    first = rollouts.tasks[0]
    return EvalResult(
        distribution=first.distribution,
        split=first.split,
        agent=agent,
        env_steps=int(env_steps),
        success_mean=_mean([v["success"] for v in per_task.values()]),
        return_mean=_mean([v["return"] for v in per_task.values()]),
        curve=curve,
        per_family=per_family,
        per_task=per_task,
        eval_episodes_per_task=int(eval_episodes),
        adaptation_episodes=int(adaptation_episodes),
        seed=int(seed),
        extra=dict(extra or {}),
    )
