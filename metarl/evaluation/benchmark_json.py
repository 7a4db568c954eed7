"""The learning benchmark's result JSONs as EvalResults, so `metarl compare` pools seeds from them as from runs.

``benchmarks/learning/metaworld.py`` writes one JSON per training run (committed under ``benchmarks/results/``, so
runs from different sessions and machines can be put together after their run directories are gone).  Each holds
up to three evaluations of the run's final checkpoint: the held-out meta-test with the mean action
(``heldout``), the same with sampled evaluation episodes (``heldout_sampled``) and RL²'s adaptation control
(``control``, the reward input zeroed); MAML's control is its curve's point 0, a single figure without families,
which the adaptation-curve figure already shows, so it is not read.  Each evaluation becomes an EvalResult
without per-task scores (the JSON keeps families only), tagged with its protocol, reward feedback, named config
and training seed, and with the run's settings that the named config does not fix (:data:`SETTINGS`), which
`metarl compare` requires to agree among the results it pools.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from metarl.errors import UserError
from metarl.evaluation.result import EvalResult, protocol_name
from metarl.evaluation.runner import MW_ADAPTATION_EPISODES, MW_EVAL_EPISODES

SETTINGS = (
    "benchmark", "overrides", "overlap", "goals_per_family", "meta_batch", "episodes_per_task", "env_success_reward",
)  # fmt: skip
"""What the results pooled as seeds must share beyond compare's row key (agent, config, protocol, env steps)."""
DEFAULTS: dict[str, Any] = {"overrides": [], "overlap": False, "goals_per_family": None, "env_success_reward": 0.0}
"""The settings of results written before the JSON recorded them (what the benchmark then always ran)."""
UNKNOWN_BEFORE = ("meta_batch", "episodes_per_task")
"""Settings that results written before they were recorded do not state: compared only where both give them."""
EVALUATIONS = (("heldout", True, True), ("heldout_sampled", False, True), ("control", True, False))
"""(key, mean-action evaluation episodes, reward feedback) of each evaluation a JSON may hold."""
REQUIRED = ("agent", "benchmark", "config", "seed", "heldout")


def is_benchmark_result(data: Any) -> bool:
    """Whether parsed JSON is a learning-benchmark result rather than an EvalResult."""
    return isinstance(data, dict) and "heldout" in data and "distribution" not in data


def settings_of(data: dict[str, Any]) -> dict[str, Any]:
    """The :data:`SETTINGS` of one result (``None`` for one the result does not state)."""
    out = {**DEFAULTS, **{k: data.get(k) for k in UNKNOWN_BEFORE}}
    out.update({k: data[k] for k in SETTINGS if k in data})
    if "env_success_reward" not in data and "success_reward" in data:  # the key's name before it was the field's
        out["env_success_reward"] = data["success_reward"]
    return out


def benchmark_results(path: Path, data: dict[str, Any]) -> list[EvalResult]:
    """The EvalResults of one learning-benchmark JSON (``path`` for messages)."""
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise UserError(f"{str(path)!r} is not a learning-benchmark result (no {', '.join(missing)})")
    settings = settings_of(data)
    results = []
    for key, deterministic, feedback in EVALUATIONS:
        evaluation = data.get(key)
        if not isinstance(evaluation, dict) or "per_family" not in evaluation:
            continue
        try:
            results.append(
                EvalResult(
                    distribution=str(data["benchmark"]),
                    split="test",
                    agent=str(data["agent"]),
                    env_steps=int(evaluation["env_steps"]),
                    success_mean=float(evaluation["success"]["mean"]),
                    return_mean=float(evaluation["return"]),
                    curve=evaluation["curve"],
                    per_family=evaluation["per_family"],
                    per_task={},
                    # recorded since the benchmark wrote them; before, it always ran Meta-World's protocol
                    eval_episodes_per_task=int(evaluation.get("eval_episodes_per_task", MW_EVAL_EPISODES)),
                    adaptation_episodes=int(evaluation.get("adaptation_episodes", MW_ADAPTATION_EPISODES)),
                    seed=int(evaluation.get("eval_seed", 0)),
                    extra={
                        "config_name": data["config"],
                        "overrides": list(settings.get("overrides") or []),
                        "protocol": protocol_name(deterministic),
                        "deterministic": deterministic,
                        "feedback": feedback,
                        "train_seed": int(data["seed"]),
                        "benchmark_settings": settings,
                    },
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            what = f"{type(exc).__name__}: {exc}"
            raise UserError(f"{str(path)!r}: its {key!r} evaluation is incomplete ({what})") from None
    return results
