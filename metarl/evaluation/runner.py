"""``metarl eval RUN_DIR``: the meta-test protocol on a trained run's held-out tasks.

For each task (all of the split by default; ``tasks_per_family`` subsamples, seeded) a fresh
adaptation — an RL² trial of ``adaptation_episodes`` episodes, or the MAML family's inner steps
on that many episodes per step — then exactly ``eval_episodes`` evaluation episodes per task,
counted per task (never per env instance or task name).  Episodes run with the run's env settings.
Meta-World distributions default to the Meta-World+ protocol: 10 adaptation episodes, 1
adaptation step, 3 evaluation episodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from metarl.config import rollout_workers
from metarl.errors import UserError, check_int
from metarl.evaluation.result import EvalResult, evaluate
from metarl.tasks import Task, TaskDistribution

MW_ADAPTATION_EPISODES, MW_EVAL_EPISODES = 10, 3


@dataclass(frozen=True)
class EvalSettings:
    """What ``metarl eval`` runs; ``None`` fields take the run's or the protocol's defaults."""

    split: str = "test"
    adaptation_episodes: int | None = None
    eval_episodes: int | None = None
    tasks_per_family: int | None = None
    deterministic: bool | None = None
    """Evaluation episodes on the mean action; None: the benchmark's protocol (:func:`default_deterministic`)."""
    seed: int = 0
    workers: int | None = None
    untrained: bool = False
    """Evaluate a freshly initialised agent of the run's config (label ``untrained-AGENT``, 0 env steps)."""
    feedback: bool = True
    """False: the adaptation control (RL²: the reward input reads 0 throughout the trial)."""

    def __post_init__(self) -> None:
        """Counts checked up front, before a run is loaded; the messages name them as `metarl eval`'s flags."""
        for name in ("adaptation_episodes", "eval_episodes", "tasks_per_family", "workers"):
            value = getattr(self, name)
            minimum = 0 if name == "adaptation_episodes" else 1
            if value is not None and value < minimum:
                flag = "--" + name.replace("_", "-")
                raise UserError(f"{flag} must be {'non-negative' if minimum == 0 else 'positive'}, got {value}")


def is_metaworld(dist: TaskDistribution) -> bool:
    return type(dist).__module__.endswith("envs.metaworld")


def default_deterministic(dist: TaskDistribution) -> bool:
    """Whether the benchmark's protocol runs the evaluation episodes on the mean action: Meta-World's does
    (metaworld-algorithms evaluates with the policy's mode after sampled adaptation episodes); elsewhere metarl
    samples them, as the classic MAML benchmarks report."""
    return is_metaworld(dist)


MAX_EVAL_SLOTS = 250
"""Env slots of an evaluation engine in all. Each Meta-World env holds its own MuJoCo model (about 11 MiB with
its worker's share): MAML's 10 side-by-side episodes on all 250 held-out ML10 goals at the former cap of 400 per
class built 2,000 envs and was killed at 22 GiB. Episodes beyond the slots queue; results do not depend on the
layout (episode seeds are keyed by task position and episode, never by slot)."""


def eval_engine_layout(tasks: Sequence[Task], slots_per_task: int) -> dict[str, Any]:
    """The evaluation engine's families and slots: only the evaluated tasks' families (an ML10 engine for
    every family would build the 10 train classes' envs too), enough slots for every task's side-by-side
    episodes, at most :data:`MAX_EVAL_SLOTS` in all."""
    families = sorted({t.family for t in tasks})
    per_family = -(-len(tasks) // len(families))
    cap = max(1, MAX_EVAL_SLOTS // len(families))
    return {"families": families, "slots_per_family": max(1, min(per_family * slots_per_task, cap))}


def select_tasks(dist: TaskDistribution, split: str, tasks_per_family: int | None, seed: int) -> list[Task]:
    """The split's tasks, or ``tasks_per_family`` of each family drawn with ``seed`` (in task-list order)."""
    if split not in ("train", "test"):
        raise UserError(f"unknown split {split!r}; choose one of ['test', 'train']")
    tasks = list(dist.tasks(split))  # type: ignore[arg-type]
    if not tasks:
        raise UserError(f"distribution {dist.name!r} has no {split!r} tasks to evaluate on")
    if tasks_per_family is None:
        return tasks
    check_int("tasks_per_family", tasks_per_family, 1)
    rng = np.random.default_rng([seed, 3])
    chosen: set[str] = set()
    by_family: dict[str, list[Task]] = {}
    for task in tasks:
        by_family.setdefault(task.family, []).append(task)
    for family_tasks in by_family.values():
        picks = rng.choice(len(family_tasks), size=min(tasks_per_family, len(family_tasks)), replace=False)
        chosen.update(family_tasks[int(i)].id for i in picks)
    return [t for t in tasks if t.id in chosen]


def evaluated_tasks(run_dir: Path, settings: EvalSettings) -> list[Task]:
    """The tasks :func:`evaluate_run` evaluates for these settings."""
    from metarl.run import make_run_distribution, read_run_config

    train_cfg, _, _ = read_run_config(Path(run_dir))
    return select_tasks(make_run_distribution(train_cfg), settings.split, settings.tasks_per_family, settings.seed)


def evaluate_run(
    run_dir: Path, settings: EvalSettings, *, checkpoint: Path | None = None, progress: bool = False
) -> EvalResult:
    """Meta-test the agent of ``run_dir`` (its latest checkpoint, or ``checkpoint``) as ``settings`` say."""
    import torch

    from metarl.overrides import run_overrides
    from metarl.rollout import RolloutEngine
    from metarl.run import build_agent, load, make_run_distribution, read_run_config

    train_cfg, agent_cfg, config_name = read_run_config(Path(run_dir))
    dist = make_run_distribution(train_cfg)
    agent: Any
    if settings.untrained:
        agent = build_agent(train_cfg, agent_cfg, dist, torch.device("cpu"))
    else:
        agent = load(run_dir, checkpoint)
    tasks = select_tasks(dist, settings.split, settings.tasks_per_family, settings.seed)
    mw = is_metaworld(dist)
    k = settings.adaptation_episodes
    if k is None:
        k = MW_ADAPTATION_EPISODES if mw else train_cfg.adaptation_episodes
    n = settings.eval_episodes
    if n is None:
        n = MW_EVAL_EPISODES if mw else train_cfg.eval_episodes
    deterministic = default_deterministic(dist) if settings.deterministic is None else settings.deterministic
    check_int("adaptation_episodes", k, 0)
    check_int("eval_episodes", n, 1)
    if k == 0 and agent.adaptation_unit == "gradient_steps":
        raise UserError(f"{agent.name} adapts by gradient steps on episodes; adaptation_episodes must be at least 1")
    engine = RolloutEngine(
        dist,
        num_workers=settings.workers or rollout_workers(train_cfg),
        seed=settings.seed,
        backend=train_cfg.backend if train_cfg.backend != "ray" else "process",
        **eval_engine_layout(tasks, agent.eval_slots(k, n)),
    )
    with engine:
        result = evaluate(
            agent,
            engine,
            tasks,
            adaptation_episodes=k,
            eval_episodes=n,
            deterministic=deterministic,
            env_steps=int(agent.env_steps),
            seed=settings.seed,
            feedback=settings.feedback,
        )
    trained_agent = result.agent
    if settings.untrained:
        result.agent = f"untrained-{trained_agent}"
    result.extra.update(
        {
            "agent_type": trained_agent,
            "run_dir": str(run_dir),
            "config_name": config_name,
            "overrides": run_overrides(train_cfg, agent_cfg, config_name),
            "train_seed": train_cfg.seed,
            "checkpoint": "none (untrained)" if settings.untrained else str(checkpoint) if checkpoint else "latest",
            "tasks_per_family": settings.tasks_per_family,
            "benchmark_protocol": deterministic == default_deterministic(dist)
            and (not mw or (k, n) == (MW_ADAPTATION_EPISODES, MW_EVAL_EPISODES)),
        }
    )
    return result


def evaluate_and_write(
    run_dir: Path,
    settings: EvalSettings,
    *,
    checkpoint: Path | None = None,
    json_path: Path | None = None,
    video_dir: Path | None = None,
) -> tuple[EvalResult, list[Path], str | None]:
    """``metarl eval``: meta-test ``run_dir`` and write the EvalResult with its report (and GIFs in ``video_dir``).

    The JSON goes to ``json_path``, else ``RUN_DIR/eval/final.json`` (``no-feedback.json`` for the control, whose
    report goes to ``eval/no-feedback/``, never over the trained agent's); the report beside it.  Returns the
    result, the files written (the JSON first) and why videos could not be recorded, if they could not.  A
    directory that is not a trained run, a missing checkpoint and an untrained agent that would overwrite the
    run's own result are refused before anything runs.
    """
    import json

    from metarl.evaluation.report import write_eval_report
    from metarl.run import CONFIG_FILE, EVAL_DIR, FINAL_EVAL, NO_FEEDBACK_EVAL, is_run_dir

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"no run directory {str(run_dir)!r}")
    if not is_run_dir(run_dir):
        raise UserError(f"{str(run_dir)!r} is not a metarl run directory (no config.json/meta.json)")
    if "baseline" in json.loads((run_dir / CONFIG_FILE).read_text()):
        raise UserError(f"{str(run_dir)!r} holds a baseline; its evaluation is already in eval/final.json")
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise UserError(f"no checkpoint file {str(checkpoint)!r}")
    if settings.untrained and checkpoint is not None:
        raise UserError("--untrained evaluates a fresh agent; it takes no --checkpoint")
    if settings.untrained and json_path is None:
        raise UserError("--untrained needs --json PATH, so the run's own eval/final.json is kept")
    result = evaluate_run(run_dir, settings, checkpoint=checkpoint)
    if json_path is not None:
        out, report_dir = Path(json_path), Path(json_path).parent
    else:
        out = run_dir / EVAL_DIR / (FINAL_EVAL if settings.feedback else NO_FEEDBACK_EVAL)
        report_dir = run_dir / EVAL_DIR / ("" if settings.feedback else "no-feedback")
    result.save(out)
    written = [out, *write_eval_report(result, report_dir)]
    problem = None
    if video_dir is not None:
        from metarl.evaluation.video import record_videos

        by_id = set(result.per_task)
        tasks = [t for t in evaluated_tasks(run_dir, settings) if t.id in by_id]
        videos, problem = record_videos(
            run_dir, checkpoint, tasks, result.adaptation_episodes, Path(video_dir), seed=settings.seed
        )
        written += videos
    return result, written, problem
