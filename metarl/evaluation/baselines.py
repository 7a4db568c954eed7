"""Non-meta-learning baselines, scored like meta-learners so ``metarl compare`` puts them side by side.

* ``sb3_scratch``: a stable-baselines3 agent trained from scratch on each held-out task alone,
  by default with the interaction budget of the adaptation phase (``adaptation_episodes`` x the
  horizon), then ``eval_episodes`` evaluation episodes.  Curve: before training (x = 0) and
  after the budget (x = the budget in episodes).  Label ``sb3-<algo>-scratch``, 0 training env
  steps (it trains only on the test task).
* ``sb3_multitask``: one SB3 PPO trained on the training tasks (through the engine's SB3 VecEnv,
  tasks resampled per episode) and evaluated zero-shot on the held-out tasks.  Label
  ``sb3-ppo-multitask``; its curve has the single point x = 0.
* pre-training + fine-tuning (``multitask`` and ``fine_tune``, :mod:`metarl.evaluation.finetune`): that PPO
  fine-tuned on each held-out task with the adaptation budget.  Label ``sb3-ppo-pretrain-finetune``.

:func:`run_baseline` (``metarl baseline sb3``) runs either on a benchmark's held-out tasks and writes an evaluated
run directory: ``config.json`` (the baseline's settings), ``meta.json``, ``eval/final.json`` and its report.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metarl.agent import MetaTestRollouts
from metarl.errors import UserError
from metarl.evaluation.result import EvalResult, result_from_rollouts
from metarl.tasks import Task, TaskDistribution

ALGOS = ("ppo", "sac")


def _algo_class(algo: str) -> Any:
    from stable_baselines3 import PPO, SAC

    classes = {"ppo": PPO, "sac": SAC}
    if algo not in classes:
        raise UserError(f"unknown SB3 algorithm {algo!r}; choose one of {sorted(classes)}")
    return classes[algo]


def run_episodes(
    model: Any, dist: TaskDistribution, task: Task, episodes: int, seed: int, deterministic: bool, env: Any = None
) -> tuple[list[bool], list[float]]:
    """Exactly ``episodes`` whole episodes of ``task`` with ``model.predict``: success at any step, returns.

    ``env``: an env of the task's family to switch to the task and keep open (default: one built and closed)."""
    owned = env is None
    env = dist.make_env(task.family) if owned else env
    dist.set_task(env, task)
    successes, returns = [], []
    try:
        for e in range(episodes):
            obs, _ = env.reset(seed=seed + e)
            done, success, total = False, False, 0.0
            while not done:
                action, _ = model.predict(np.asarray(obs, dtype=np.float32), deterministic=deterministic)
                obs, reward, terminated, truncated, info = env.step(action)
                total += float(reward)
                success = success or bool(info.get("success", False))
                done = bool(terminated or truncated)
            successes.append(success)
            returns.append(total)
    finally:
        if owned:
            env.close()
    return successes, returns


def _result(
    agent: str,
    tasks: Sequence[Task],
    success: list[list[list[bool]]],  # [N][points][episodes]
    returns: list[list[list[float]]],
    x: list[int],
    adaptation_episodes: int,
    env_steps: int,
    seed: int,
    extra: dict[str, Any],
) -> EvalResult:
    """The EvalResult of per-task evaluation episodes at each curve point (the last point is the result)."""
    succ = torch.tensor(success, dtype=torch.bool)  # [N, points, n]
    ret = torch.tensor(returns, dtype=torch.float32)
    rollouts = MetaTestRollouts(
        tasks=list(tasks),
        curve_success=succ.float().mean(-1),
        curve_return=ret.mean(-1),
        eval_success=succ[:, -1],
        eval_return=ret[:, -1],
        unit="episodes",
    )
    return result_from_rollouts(
        rollouts, agent, env_steps=env_steps, eval_episodes=succ.shape[-1], adaptation_episodes=adaptation_episodes,
        seed=seed, x=x, extra=extra,
    )  # fmt: skip


def ppo_rollout(budget: int) -> tuple[int, int]:
    """``(n_steps, batch_size)`` for SB3 PPO on one env: rollouts that add up to ``budget`` exactly when it
    allows (at least 4 rollouts of at most 2048 steps), a minibatch size that divides them."""
    rollouts = max(4, -(-budget // 2048))
    while budget % rollouts and rollouts < budget:
        rollouts += 1
    n_steps = max(1, budget // rollouts)
    batch = n_steps // max(1, -(-n_steps // 64))
    while n_steps % batch:
        batch -= 1
    return n_steps, max(1, batch)


def sb3_scratch(
    dist: TaskDistribution,
    tasks: Sequence[Task],
    *,
    algo: str = "ppo",
    adaptation_episodes: int = 10,
    total_env_steps: int | None = None,
    eval_episodes: int = 3,
    seed: int = 0,
    deterministic: bool = True,
    progress: Any = None,
) -> EvalResult:
    """Train one SB3 agent per task from scratch on the adaptation budget; evaluate it on that task."""
    from metarl.integrations.sb3 import TaskVecEnv

    cls = _algo_class(algo)
    if not tasks:
        raise UserError("no tasks to train baselines on")
    budget = total_env_steps if total_env_steps is not None else adaptation_episodes * dist.max_episode_steps
    if budget <= 0:
        raise UserError(f"the interaction budget must be positive, got {budget} env steps")
    succ: list[list[list[bool]]] = []
    ret: list[list[list[float]]] = []
    t0 = time.perf_counter()
    trained = 0
    for i, task in enumerate(tasks):
        venv = TaskVecEnv(dist, split=task.split, tasks=[task], envs_per_family=1, seed=seed, backend="inline")
        try:
            kwargs: dict[str, Any] = {"seed": seed + i, "device": "cpu", "verbose": 0}
            if algo == "ppo":  # whole rollouts that add up to the budget exactly, several updates even when small
                kwargs["n_steps"], kwargs["batch_size"] = ppo_rollout(budget)
            model = _quiet(cls("MlpPolicy", venv, **kwargs))
            s0, r0 = run_episodes(model, dist, task, eval_episodes, seed, deterministic)
            model.learn(total_timesteps=budget)
            trained = max(trained, int(model.num_timesteps))
            s1, r1 = run_episodes(model, dist, task, eval_episodes, seed, deterministic)
        finally:
            venv.close()
        succ.append([s0, s1])
        ret.append([r0, r1])
        if progress is not None:
            progress(i + 1, len(tasks))
    x_budget = max(1, round(budget / dist.max_episode_steps))
    return _result(
        f"sb3-{algo}-scratch", tasks, succ, ret, [0, x_budget], x_budget, 0, seed,
        {"budget_env_steps_per_task": budget, "trained_env_steps_per_task": trained, "deterministic": deterministic,
         "wall_s": time.perf_counter() - t0},
    )  # fmt: skip


def _quiet(model: Any) -> Any:
    """No SB3 logger output, and none of the empty ``$TMPDIR/SB3-<date>`` folders its default logger makes."""
    from stable_baselines3.common.logger import Logger

    model.set_logger(Logger(folder=None, output_formats=[]))
    return model


def sb3_multitask(
    dist: TaskDistribution,
    tasks: Sequence[Task],
    *,
    total_env_steps: int,
    eval_episodes: int = 3,
    seed: int = 0,
    workers: int = 2,
    envs_per_family: int = 1,
    deterministic: bool = True,
) -> EvalResult:
    """One SB3 PPO on the training tasks (engine VecEnv), evaluated zero-shot on ``tasks``."""
    from stable_baselines3 import PPO

    from metarl.integrations.sb3 import TaskVecEnv

    if total_env_steps <= 0:
        raise UserError(f"total_env_steps must be positive, got {total_env_steps}")
    t0 = time.perf_counter()
    venv = TaskVecEnv(dist, split="train", envs_per_family=envs_per_family, num_workers=workers, seed=seed)
    try:
        model = _quiet(PPO("MlpPolicy", venv, seed=seed, device="cpu", verbose=0))
        model.learn(total_timesteps=total_env_steps)
    finally:
        venv.close()
    succ, ret = [], []
    for task in tasks:
        s, r = run_episodes(model, dist, task, eval_episodes, seed, deterministic)
        succ.append([s])
        ret.append([r])
    return _result(
        "sb3-ppo-multitask", tasks, succ, ret, [0], 0, int(model.num_timesteps), seed,
        {"deterministic": deterministic, "wall_s": time.perf_counter() - t0},
    )  # fmt: skip


@dataclass(frozen=True)
class BaselineSettings:
    """What ``metarl baseline sb3`` runs; ``None`` counts take the defaults (10 adaptation and 3 evaluation
    episodes per task, Meta-World's protocol; all held-out tasks).  Checked up front; messages name the flags."""

    benchmark: str
    algo: str = "ppo"
    multitask: bool = False
    """One PPO on the training tasks, evaluated zero-shot (else one agent per held-out task, from scratch)."""
    total_env_steps: int | None = None
    """Env steps per task (scratch; default: the adaptation budget) or in all (multitask and its pre-training
    for fine-tuning; default 1M)."""
    tasks_per_family: int | None = None
    adaptation_episodes: int | None = None
    eval_episodes: int | None = None
    seed: int = 0
    deterministic: bool = True
    fine_tune: bool = False
    """With ``multitask``: fine-tune a copy of the pre-trained PPO on each held-out task (:mod:`.finetune`)."""
    fine_tune_episodes: tuple[int, ...] | None = None
    """Fine-tuning budgets K in adaptation episodes (K x horizon env steps each); default (10,)."""
    jobs: int | None = None
    """Processes: multi-task env workers (default 2; with ``fine_tune`` the CPU count) and held-out tasks
    fine-tuned at a time."""
    envs_per_family: int | None = None
    """Multi-task env slots per family (default 1; more slots, more env steps per PPO rollout)."""

    def __post_init__(self) -> None:
        for name in ("total_env_steps", "tasks_per_family", "adaptation_episodes", "eval_episodes", "jobs",
                     "envs_per_family"):  # fmt: skip
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise UserError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
        if self.multitask and self.algo != "ppo":
            raise UserError(f"--multitask trains SB3 PPO; got --algo {self.algo}")
        if not self.multitask and (self.jobs is not None or self.envs_per_family is not None):
            raise UserError("--jobs and --envs-per-family set the multi-task PPO's envs; add --multitask")
        if self.fine_tune and not self.multitask:
            raise UserError("--fine-tune fine-tunes the multi-task PPO; add --multitask")
        if self.fine_tune_episodes is not None:
            if not self.fine_tune:
                raise UserError("--fine-tune-episodes sets the budgets of --fine-tune; add --multitask --fine-tune")
            if not self.fine_tune_episodes or any(k <= 0 for k in self.fine_tune_episodes):
                raise UserError(f"--fine-tune-episodes must be positive integers, got {list(self.fine_tune_episodes)}")
        if self.fine_tune and self.adaptation_episodes is not None:
            raise UserError(
                "--fine-tune takes its budgets from --fine-tune-episodes K [K ...], not --adaptation-episodes"
            )


def run_baseline(
    settings: BaselineSettings,
    out: Path,
    *,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[EvalResult, list[Path]]:
    """Run the baseline ``settings`` describe and write it to the run directory ``out`` (refused when it holds a
    run, unless ``overwrite``); returns the result and the files written (``eval/final.json`` first).

    ``progress(done, total)`` is called after each task of a from-scratch or fine-tuned baseline.
    """
    from metarl.envs import canonical_name, make_distribution
    from metarl.evaluation.report import write_eval_report
    from metarl.evaluation.runner import MW_ADAPTATION_EPISODES, MW_EVAL_EPISODES, is_metaworld, select_tasks
    from metarl.run import EVAL_DIR, FINAL_EVAL, atomic_write_json, prepare_run_dir, run_metadata

    s = settings
    dist = make_distribution(canonical_name(s.benchmark), seed=s.seed)
    mw = is_metaworld(dist)
    k = s.adaptation_episodes or (MW_ADAPTATION_EPISODES if mw else 10)
    n = s.eval_episodes or (MW_EVAL_EPISODES if mw else 3)
    tasks = select_tasks(dist, "test", s.tasks_per_family, s.seed)
    out = prepare_run_dir(Path(out), resume=False, overwrite=overwrite)
    kind = "sb3-pretrain-finetune" if s.fine_tune else "sb3-multitask" if s.multitask else "sb3-scratch"
    record = {
        "kind": kind, "algo": s.algo, "benchmark": dist.name,
        "seed": s.seed, "tasks": len(tasks), "adaptation_episodes": k, "eval_episodes": n,
        "total_env_steps": s.total_env_steps, "deterministic": s.deterministic,
    }  # fmt: skip
    jobs = s.jobs or (os.cpu_count() or 1 if s.fine_tune else 2)
    envs_per_family = s.envs_per_family or 1
    if s.fine_tune:
        record.update(fine_tune_episodes=list(s.fine_tune_episodes or (k,)), jobs=jobs,
                      envs_per_family=envs_per_family, total_env_steps=s.total_env_steps or 1_000_000)  # fmt: skip
    atomic_write_json(out / "config.json", {"baseline": record})
    atomic_write_json(out / "meta.json", run_metadata())
    if s.fine_tune:
        from metarl.evaluation.finetune import finetune_all, pretrain

        pretrained = pretrain(dist, out, total_env_steps=s.total_env_steps or 1_000_000, seed=s.seed, workers=jobs,
                              envs_per_family=envs_per_family)  # fmt: skip
        result = finetune_all(dist, tasks, pretrained, finetune_episodes=s.fine_tune_episodes or (k,),
                              eval_episodes=n, seed=s.seed, deterministic=s.deterministic, jobs=jobs,
                              progress=progress)  # fmt: skip
    elif s.multitask:
        result = sb3_multitask(dist, tasks, total_env_steps=s.total_env_steps or 1_000_000, eval_episodes=n,
                               seed=s.seed, workers=jobs, envs_per_family=envs_per_family,
                               deterministic=s.deterministic)  # fmt: skip
    else:
        result = sb3_scratch(
            dist, tasks, algo=s.algo, adaptation_episodes=k, total_env_steps=s.total_env_steps, eval_episodes=n,
            seed=s.seed, deterministic=s.deterministic, progress=progress,
        )  # fmt: skip
    path = result.save(out / EVAL_DIR / FINAL_EVAL)
    return result, [path, *write_eval_report(result, out / EVAL_DIR)]
