"""Pre-training + fine-tuning, the obvious alternative to meta-learning (Mandi et al., NeurIPS 2022, "On the
Effectiveness of Fine-tuning Versus Meta-reinforcement Learning"), scored like the meta-learners.

1. **Pre-training**: one SB3 PPO on the training tasks, through the engine's SB3 VecEnv (tasks resampled per
   episode), policy and value nets 2x512 tanh as MAML-TRPO's Meta-World config, SB3's PPO defaults otherwise,
   for a stated budget of env steps.  The model is saved as ``RUN_DIR/pretrained.zip`` and the ids of every task
   a pre-training step was taken in as ``RUN_DIR/pretrain_tasks.json``.
2. **Fine-tuning**: for every held-out task and every budget K (adaptation episodes), a fresh PPO (fresh Adam
   state, fresh rollout buffer) starts from the pre-trained weights and trains on that task alone for exactly
   K x horizon env steps, in whole PPO rollouts sized by :func:`~metarl.evaluation.baselines.ppo_rollout` (at
   least 4 updates in the budget).  Held-out tasks run in parallel, one process per core, one torch thread each.
3. **Scoring**: the meta-learners' evaluation episodes (``eval_episodes`` per task, mean action by default as
   Meta-World's protocol), before fine-tuning (x = 0, zero-shot) and after each K.

The result is labelled ``sb3-ppo-pretrain-finetune``; its ``env_steps`` are the pre-training steps (the training
steps behind the policy, as for a meta-learner), and the fine-tuning steps are recorded apart, per task and K.
"""

from __future__ import annotations

import json
import multiprocessing
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from metarl.errors import UserError
from metarl.evaluation.baselines import _quiet, _result, ppo_rollout, run_episodes
from metarl.evaluation.result import EvalResult, protocol_name
from metarl.tasks import DistributionSpec, Task, TaskDistribution

AGENT = "sb3-ppo-pretrain-finetune"
PRETRAINED_MODEL = "pretrained.zip"
PRETRAIN_TASKS = "pretrain_tasks.json"
HIDDEN = (512, 512)
"""Policy and value widths, tanh: MAML-TRPO's Meta-World policy (metaworld-algorithms)."""


def policy_kwargs() -> dict[str, Any]:
    """SB3 ``policy_kwargs`` of the pre-trained (and so the fine-tuned) PPO: separate 2x512 tanh MLPs."""
    return {"net_arch": {"pi": list(HIDDEN), "vf": list(HIDDEN)}, "activation_fn": torch.nn.Tanh}


def _step_counter(record_tasks: bool) -> Any:
    """An SB3 callback that counts the env steps taken (one per env per ``_on_step``) and, when asked, records
    the ids of the tasks they were taken in (every TaskVecEnv info names its task)."""
    from stable_baselines3.common.callbacks import BaseCallback

    class StepCounter(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.env_steps = 0
            self.task_ids: set[str] = set()

        def _on_step(self) -> bool:
            infos = self.locals["infos"]
            self.env_steps += len(infos)
            if record_tasks:
                self.task_ids.update(info["task_id"] for info in infos)
            return True

    return StepCounter()


@dataclass(frozen=True)
class Pretrained:
    """The pre-training's outcome: where the model is, its env steps, and the task ids its steps were taken in."""

    path: Path
    env_steps: int
    task_ids: tuple[str, ...]
    wall_s: float


def pretrain(
    dist: TaskDistribution,
    out: Path,
    *,
    total_env_steps: int,
    seed: int = 0,
    workers: int = 2,
    envs_per_family: int = 1,
) -> Pretrained:
    """Pre-train one PPO on the training split (engine VecEnv, tasks resampled per episode) for at least
    ``total_env_steps`` (SB3 stops at the first whole rollout at or past it); save it in ``out``."""
    from stable_baselines3 import PPO

    from metarl.integrations.sb3 import TaskVecEnv

    if total_env_steps <= 0:
        raise UserError(f"--total-env-steps must be a positive integer, got {total_env_steps}")
    t0 = time.perf_counter()
    counter = _step_counter(record_tasks=True)
    venv = TaskVecEnv(dist, split="train", envs_per_family=envs_per_family, num_workers=workers, seed=seed)
    try:
        model = _quiet(PPO("MlpPolicy", venv, policy_kwargs=policy_kwargs(), seed=seed, device="cpu", verbose=0))
        model.learn(total_timesteps=total_env_steps, callback=counter)
    finally:
        venv.close()
    if counter.env_steps != model.num_timesteps:  # a bug, not the user's: the record must be the truth
        raise RuntimeError(f"pre-training counted {counter.env_steps} env steps, SB3 {model.num_timesteps}")
    path = out / PRETRAINED_MODEL
    model.save(path)
    ids = tuple(sorted(counter.task_ids))
    (out / PRETRAIN_TASKS).write_text(json.dumps({"env_steps": counter.env_steps, "task_ids": list(ids)}, indent=1))
    return Pretrained(path, counter.env_steps, ids, time.perf_counter() - t0)


def finetune_model(pretrained: Path, venv: Any, budget: int, seed: int) -> Any:
    """A fresh PPO on ``venv`` holding the pre-trained weights: the pre-trained policy size and PPO settings,
    a new (empty) Adam state and rollouts sized so that ``budget`` env steps are whole rollouts, 4 or more."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.save_util import load_from_zip_file

    data, params, _ = load_from_zip_file(pretrained, device="cpu")
    if data is None or params is None:
        raise UserError(f"{str(pretrained)!r} holds no SB3 model")
    n_steps, batch_size = ppo_rollout(budget)
    settings = {k: data[k] for k in ("learning_rate", "gamma", "gae_lambda", "ent_coef", "vf_coef", "max_grad_norm",
                                     "n_epochs", "clip_range", "normalize_advantage") if k in data}  # fmt: skip
    model = _quiet(PPO("MlpPolicy", venv, policy_kwargs=data["policy_kwargs"], n_steps=n_steps,
                       batch_size=batch_size, seed=seed, device="cpu", verbose=0, **settings))  # fmt: skip
    model.policy.load_state_dict(params["policy"])
    return model


@dataclass(frozen=True)
class _Job:
    """One held-out task to fine-tune at every budget; picklable, for a worker process."""

    spec: DistributionSpec
    task: Task
    index: int
    pretrained: Path
    finetune_episodes: tuple[int, ...]
    eval_episodes: int
    seed: int
    deterministic: bool


@dataclass(frozen=True)
class _Outcome:
    index: int
    success: list[list[bool]]  # [points][episodes]: zero-shot, then after each K
    returns: list[list[float]]
    env_steps: list[int]  # fine-tuning env steps counted, per K
    updates: list[int]  # PPO updates (rollouts) per K


_WORKER_STATE: dict[str, Any] = {}


def _init_worker() -> None:
    torch.set_num_threads(1)  # one core per held-out task: the tasks are the parallelism


def _worker_dist(spec: DistributionSpec) -> Any:
    if _WORKER_STATE.get("spec") != spec:
        _WORKER_STATE.update(spec=spec, dist=spec.build(), envs={})
    return _WORKER_STATE["dist"], _WORKER_STATE["envs"]


def _finetune_task(job: _Job) -> _Outcome:
    """Zero-shot evaluation, then for each K a fresh copy fine-tuned on exactly K x horizon steps, evaluated."""
    from metarl.integrations.sb3 import TaskVecEnv

    dist, envs = _worker_dist(job.spec)
    task = job.task
    if task.family not in envs:  # one evaluation env per family and process, switched between tasks
        envs[task.family] = dist.make_env(task.family)
    env = envs[task.family]
    success: list[list[bool]] = []
    returns: list[list[float]] = []
    steps, updates = [], []
    for j, k in enumerate(job.finetune_episodes):
        budget = k * dist.max_episode_steps
        venv = TaskVecEnv(dist, split=task.split, tasks=[task], seed=job.seed + job.index, backend="inline")
        try:
            model = finetune_model(job.pretrained, venv, budget, seed=job.seed + job.index)
            if j == 0:  # the pre-trained policy itself: zero-shot
                s, r = run_episodes(model, dist, task, job.eval_episodes, job.seed, job.deterministic, env=env)
                success.append(s)
                returns.append(r)
            counter = _step_counter(record_tasks=False)
            model.learn(total_timesteps=budget, callback=counter)
        finally:
            venv.close()
        if counter.env_steps != budget:
            raise RuntimeError(f"{task.id}: fine-tuned on {counter.env_steps} env steps, not the budget {budget}")
        steps.append(counter.env_steps)
        updates.append(budget // model.n_steps)
        s, r = run_episodes(model, dist, task, job.eval_episodes, job.seed, job.deterministic, env=env)
        success.append(s)
        returns.append(r)
    return _Outcome(job.index, success, returns, steps, updates)


def finetune_all(
    dist: TaskDistribution,
    tasks: Sequence[Task],
    pretrained: Pretrained,
    *,
    finetune_episodes: Sequence[int],
    eval_episodes: int,
    seed: int = 0,
    deterministic: bool = True,
    jobs: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> EvalResult:
    """Fine-tune a copy of the pre-trained PPO on each of ``tasks`` at each budget K, ``jobs`` tasks at a time
    (processes), and score them; see the module docstring."""
    ks = tuple(sorted(set(finetune_episodes)))
    if not ks or ks[0] <= 0:
        raise UserError(f"--fine-tune-episodes must be positive integers, got {list(finetune_episodes)}")
    if not tasks:
        raise UserError("no tasks to fine-tune on")
    t0 = time.perf_counter()
    spec = dist.spec
    todo = [_Job(spec, t, i, pretrained.path, ks, eval_episodes, seed, deterministic) for i, t in enumerate(tasks)]
    outcomes: list[_Outcome | None] = [None] * len(todo)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=max(1, min(jobs, len(todo))), mp_context=ctx,
                             initializer=_init_worker) as pool:  # fmt: skip
        futures = [pool.submit(_finetune_task, job) for job in todo]
        for done, future in enumerate(as_completed(futures), start=1):
            outcome = future.result()
            outcomes[outcome.index] = outcome
            if progress is not None:
                progress(done, len(todo))
    got = [o for o in outcomes if o is not None]
    train_params = {(t.family, t.params) for t in dist.tasks("train") if t.id in set(pretrained.task_ids)}
    seen_held_out = sum((t.family, t.params) in train_params for t in tasks)
    extra = {
        "deterministic": deterministic, "protocol": protocol_name(deterministic),
        "pretrain_env_steps": pretrained.env_steps, "pretrain_tasks_seen": len(pretrained.task_ids),
        "held_out_tasks_seen_in_pretraining": seen_held_out, "pretrained_model": PRETRAINED_MODEL,
        "policy": f"{'x'.join(map(str, HIDDEN))} tanh", "finetune_episodes": list(ks),
        "finetune_env_steps_per_task": [k * dist.max_episode_steps for k in ks],
        "finetune_env_steps_by_task": {t.id: o.env_steps for t, o in zip(tasks, got, strict=True)},
        "finetune_updates_per_task": got[0].updates, "jobs": jobs,
        "pretrain_wall_s": pretrained.wall_s, "wall_s": pretrained.wall_s + time.perf_counter() - t0,
    }  # fmt: skip
    return _result(
        AGENT, tasks, [o.success for o in got], [o.returns for o in got], [0, *ks], ks[-1], pretrained.env_steps,
        seed, extra,
    )  # fmt: skip
