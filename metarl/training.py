"""The agent-agnostic training loop: sample tasks, one meta-iteration, log, meta-test, checkpoint.

``train(...)`` starts a run (``train_seeds(...)`` one per seed), ``resume(RUN_DIR)`` continues one exactly (on CPU
with a fixed seed, 2 iterations + resume + 2 iterations gives the same parameters as 4 uninterrupted), and
``load(RUN_DIR)`` (from :mod:`metarl.run`) returns the trained agent.
"""

from __future__ import annotations

import dataclasses
import json
import random
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metarl.agent import OverlappingLearner
from metarl.allocator import keep_freed_memory
from metarl.config import (
    TrainConfig,
    available_cores,
    host_worker_default,
    learner_threads,
    rollout_workers,
    to_dict,
)
from metarl.errors import UserError
from metarl.evaluation.result import EvalResult, evaluate
from metarl.evaluation.runner import default_deterministic
from metarl.native import native_gru_setting
from metarl.peak_memory import peak_rss_mib
from metarl.rollout.engine import resolve_device
from metarl.run import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    EVAL_DIR,
    LATEST_CHECKPOINT,
    LATEST_EVAL,
    META_FILE,
    ProgressLog,
    RunDirError,
    agent_state,
    atomic_write_json,
    build_agent,
    checkpoint_bytes,
    load_checkpoint,
    make_run_distribution,
    prepare_run_dir,
    read_run_config,
    run_metadata,
    write_checkpoint,
)
from metarl.stops import catch_sigterm, restore_sigterm
from metarl.tasks import Task, TaskDistribution


@dataclass
class RunState:
    """Counters that make a run resumable."""

    iteration: int = 0
    env_steps: int = 0
    wall_s: float = 0.0


def _make_engine(train_cfg: TrainConfig, dist: TaskDistribution, device: torch.device) -> Any:
    from metarl.rollout import RolloutEngine

    slots = train_cfg.slots_per_family
    if slots is None:  # one slot per task of a meta-batch (or of a periodic meta-test), so one call serves all
        train_families = len({t.family for t in dist.tasks("train")})
        slots = max(-(-train_cfg.meta_batch // train_families), -(-train_cfg.eval_tasks // len(dist.families)), 1)
    if train_cfg.backend == "ray":
        from metarl.rollout.ray_backend import RayRolloutEngine

        return RayRolloutEngine(
            dist,
            num_actors=train_cfg.ray_actors,
            workers_per_actor=rollout_workers(train_cfg),
            slots_per_family=slots,
            seed=train_cfg.seed,
            device="auto",
            address=train_cfg.ray_address,
        )
    workers = rollout_workers(train_cfg)
    return RolloutEngine(
        dist,
        num_workers=workers,
        slots_per_family=slots,
        seed=train_cfg.seed,
        backend=train_cfg.backend,
        device=str(device),
        host_worker=host_worker_default(workers, available_cores()),
    )


def layout_line(train_cfg: TrainConfig, device: torch.device) -> str:
    """One line saying how the run uses the machine (printed at start)."""
    cores, workers = available_cores(), rollout_workers(train_cfg)
    if train_cfg.backend == "process":
        host = host_worker_default(workers, cores)
        sampling = f"{workers} rollout worker process(es)" + (
            ", the driver stepping worker 0's envs itself" if host else ", the driver only running the policy"
        )
    elif train_cfg.backend == "inline":
        sampling = "every env in the driver (backend inline)"
    else:
        sampling = f"Ray actors of {workers} worker process(es)"
    threads = f" with {learner_threads(train_cfg)} torch thread(s)" if device.type == "cpu" else ""
    learner = f"learner on {device}{threads}"
    return f"metarl: {cores} core(s) available: {sampling}; {learner}"


def _check_budget(cfg: TrainConfig) -> None:
    if cfg.total_env_steps is None and cfg.iterations is None and cfg.max_minutes is None:
        raise UserError("no training budget: give --total-env-steps, --iterations or --max-minutes")


def _check_meta_batch(cfg: TrainConfig, dist: TaskDistribution) -> None:
    n_train = len(dist.tasks("train"))
    if cfg.meta_batch > n_train and not cfg.repeat_tasks:
        raise UserError(
            f"meta_batch {cfg.meta_batch} is larger than the {n_train} train tasks of {dist.name!r}; "
            f"tasks are sampled without replacement, so use at most {n_train} (or --repeat-tasks true)"
        )


def warn_learner_change(saved: dict[str, Any], now: dict[str, Any]) -> None:
    """On resume: say which learner settings differ from the run's so far (a checkpoint from before a setting was
    recorded says nothing about it)."""
    changed = [k for k in now if k in saved and saved[k] != now[k]]
    if not changed:
        return
    was = ", ".join(f"{k} {saved[k]}" for k in changed)
    is_ = ", ".join(f"{k} {now[k]}" for k in changed)
    print(
        f"metarl: the run so far used {was}; it continues with {is_}, so the continuation is not bitwise what "
        "the run would have computed (it is as valid a run)",
        file=sys.stderr,
    )


class Trainer:
    """One training run in ``run_dir``.  Small steps, each with one job."""

    def __init__(self, run_dir: Path, train_cfg: TrainConfig, agent_cfg: Any, config_name: str | None) -> None:

        self.run_dir = Path(run_dir)
        self.cfg = train_cfg
        self.agent_cfg = agent_cfg
        self.config_name = config_name
        self.device = resolve_device(train_cfg.device, require_available=True)
        torch.set_num_threads(learner_threads(train_cfg))
        keep_freed_memory()  # the update's activations reuse the heap instead of fresh pages (metarl.allocator)
        native_gru_setting()  # METARL_NATIVE_GRU checked before anything is written (metarl.native)
        self.dist = make_run_distribution(train_cfg)
        _check_meta_batch(train_cfg, self.dist)
        self.agent = build_agent(train_cfg, agent_cfg, self.dist, self.device)
        self.state = RunState()
        self.task_rng = np.random.default_rng([train_cfg.seed, 1])
        self.eval_tasks: list[Task] = (
            self.dist.sample(train_cfg.eval_tasks, "test", rng=np.random.default_rng([train_cfg.seed, 2]))
            if train_cfg.eval_every
            else []
        )
        self.engine_state: dict[str, Any] | None = None
        self.overlapping = self.agent if isinstance(self.agent, OverlappingLearner) else None
        if train_cfg.overlap and self.overlapping is None:
            raise UserError(
                f"--overlap true: agent {train_cfg.agent!r} cannot learn from a batch its previous policy "
                "collected (its update needs on-policy samples); run it without --overlap"
            )
        self.lookahead: list[Task] | None = None  # --overlap: the next iteration's tasks, already being sampled

    # -- persistence -------------------------------------------------------------------------
    def save_config(self) -> None:
        atomic_write_json(
            self.run_dir / CONFIG_FILE,
            {"config_name": self.config_name, "train": to_dict(self.cfg), "agent": to_dict(self.agent_cfg)},
        )
        atomic_write_json(self.run_dir / META_FILE, run_metadata())

    def boundary_state(self, engine: Any) -> tuple[int, bytes]:
        """The whole run at an iteration boundary (the iteration, the serialised checkpoint)."""
        state = {
            "agent_name": self.cfg.agent,
            "agent": self.agent.state_dict(),
            "run": dataclasses.asdict(self.state),
            "task_rng": self.task_rng.bit_generator.state,
            "engine": engine.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "python_rng": random.getstate(),
            # what bitwise reproduction also depends on (a resume with others says it is not bitwise)
            "learner": self.learner_record(),
            "lookahead": None if self.lookahead is None else [t.id for t in self.lookahead],
        }
        return self.state.iteration, checkpoint_bytes(state)

    def restore(self, state: Mapping[str, Any]) -> None:
        if state.get("agent_name") != self.cfg.agent:
            raise RunDirError(
                f"checkpoint is of agent {state.get('agent_name')!r}, but the run's config says {self.cfg.agent!r}"
            )
        self.agent.load_state_dict(agent_state(state))
        self.state = RunState(**state["run"])
        self.task_rng.bit_generator.state = state["task_rng"]
        self.engine_state = state["engine"]
        torch.set_rng_state(state["torch_rng"])
        random.setstate(state["python_rng"])
        ahead = state.get("lookahead")
        if ahead is not None:
            by_id = {t.id: t for t in self.dist.tasks("train")}
            self.lookahead = [by_id[i] for i in ahead]
        saved = state.get("learner")
        if isinstance(saved, Mapping):
            warn_learner_change(dict(saved), self.learner_record())

    def learner_record(self) -> dict[str, Any]:
        """What bitwise reproduction depends on besides the checkpoint: the learner's threads and device, and
        what the agent reports (RL²: its GRU time loop)."""
        return {"torch_threads": torch.get_num_threads(), "device": str(self.device), **self.agent.learner_record()}

    # -- the loop ----------------------------------------------------------------------------
    def done(self, started: float) -> bool:
        cfg, st = self.cfg, self.state
        if cfg.total_env_steps is not None and st.env_steps >= cfg.total_env_steps:
            return True
        if cfg.iterations is not None and st.iteration >= cfg.iterations:
            return True
        return cfg.max_minutes is not None and (time.monotonic() - started) / 60 >= cfg.max_minutes

    def iteration(self, engine: Any) -> dict[str, float]:
        t0 = time.perf_counter()
        if self.cfg.overlap and self.overlapping is not None:
            # the same tasks in the same order as without --overlap, each meta-batch drawn one iteration early
            tasks = self.lookahead or self.dist.sample(self.cfg.meta_batch, "train", rng=self.task_rng)
            self.lookahead = self.dist.sample(self.cfg.meta_batch, "train", rng=self.task_rng)
            metrics = self.overlapping.meta_train_step_overlapped(engine, tasks, self.lookahead)
        else:
            tasks = self.dist.sample(self.cfg.meta_batch, "train", rng=self.task_rng)
            metrics = self.agent.meta_train_step(engine, tasks)
        dt = time.perf_counter() - t0
        steps = int(metrics.pop("env_steps"))
        self.state.iteration += 1
        self.state.env_steps += steps
        self.state.wall_s += dt
        metrics["time/iteration_s"] = dt
        metrics["time/steps_per_s"] = steps / max(dt, 1e-9)
        pids = engine.worker_pids() if hasattr(engine, "worker_pids") else []
        peak = peak_rss_mib(pids)
        if peak is not None:
            metrics["memory/peak_rss_mib"] = peak
        metrics["charts/env_steps"] = float(self.state.env_steps)
        return metrics

    def meta_test(self, engine: Any) -> EvalResult:
        result = evaluate(
            self.agent,
            engine,
            self.eval_tasks,
            adaptation_episodes=self.cfg.adaptation_episodes,
            eval_episodes=self.cfg.eval_episodes,
            deterministic=default_deterministic(self.dist),
            env_steps=self.state.env_steps,
            seed=self.cfg.seed,
        )
        result.extra["iteration"] = self.state.iteration
        result.extra["config_name"] = self.config_name
        eval_dir = self.run_dir / EVAL_DIR
        result.save(eval_dir / f"iter-{self.state.iteration:06d}.json")
        result.save(eval_dir / LATEST_EVAL)
        return result

    def run(self, *, progress: bool = True) -> Path:
        from metarl.progress import ProgressBar

        _check_budget(self.cfg)
        started = time.monotonic()
        resumed_from = self.state.iteration if self.engine_state is not None else None
        log = ProgressLog(self.run_dir, keep_until_iteration=resumed_from, purge_step=self.state.env_steps)
        bar = ProgressBar(self.cfg, self.state, enabled=progress)
        print(layout_line(self.cfg, self.device), file=sys.stderr)
        engine = _make_engine(self.cfg, self.dist, self.device)
        # Only iteration-boundary state is ever written.  A stop mid-iteration (Ctrl-C, SIGTERM, an error)
        # leaves the task RNG, the engine's collect counter and the parameters partway into the next
        # iteration; the boundary kept in memory is what gets saved then, so a resume repeats that
        # iteration exactly.
        saved = resumed_from
        boundary: tuple[int, bytes] | None = None
        previous_handler = catch_sigterm()
        try:
            if self.engine_state is not None:
                engine.load_state_dict(self.engine_state)
            boundary = self.boundary_state(engine)
            while not self.done(started):
                metrics = self.iteration(engine)
                if self.cfg.eval_every and self.state.iteration % self.cfg.eval_every == 0:
                    result = self.meta_test(engine)
                    metrics["eval/success"] = result.success_mean
                    metrics["eval/return"] = result.return_mean
                # the boundary first: once progress.csv shows this iteration, a stop saves it
                boundary = self.boundary_state(engine)
                log.log(self.state.iteration, metrics, step=self.state.env_steps)
                bar.update(self.state, metrics)
                if self.state.iteration % self.cfg.checkpoint_every == 0:
                    write_checkpoint(self.run_dir, boundary[1], boundary[0])
                    saved = boundary[0]
        except BaseException:
            if boundary is not None:
                print(f"metarl: stopped; {self.run_dir} resumes after iteration {boundary[0]}", file=sys.stderr)
            raise
        finally:
            # at exit, Ctrl-C and SIGTERM included: the last finished iteration, unless it is saved already
            try:
                if boundary is not None and saved != boundary[0]:
                    write_checkpoint(self.run_dir, boundary[1], boundary[0])
            finally:
                restore_sigterm(previous_handler)
                engine.close()
                log.close()
                bar.close()
        return self.run_dir


# -- public API --------------------------------------------------------------------------------


def default_run_dir(config_name: str | None, agent: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{config_name or agent}-{stamp}"


def train(
    train_cfg: TrainConfig,
    agent_cfg: Any = None,
    *,
    out: str | Path | None = None,
    config_name: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Start a training run; returns its directory."""
    from metarl.agents import agent_config_class

    if agent_cfg is None:
        agent_cfg = agent_config_class(train_cfg.agent)()
    _check_budget(train_cfg)
    path = Path(out) if out else default_run_dir(config_name, train_cfg.agent)
    created = not path.exists()
    run_dir = prepare_run_dir(path, resume=False, overwrite=overwrite)
    try:
        trainer = Trainer(run_dir, train_cfg, agent_cfg, config_name)
    except BaseException:  # e.g. settings the agent refuses: leave no empty run directory behind
        if created and run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()
        raise
    trainer.save_config()
    return trainer.run(progress=progress)


def _train_one_seed(
    train_cfg: TrainConfig, agent_cfg: Any, out: str, config_name: str | None, overwrite: bool, progress: bool
) -> str:
    """One run of :func:`train_seeds` (module level, so a spawned process can unpickle it)."""
    return str(train(train_cfg, agent_cfg, out=out, config_name=config_name, overwrite=overwrite, progress=progress))


def train_seeds(
    train_cfg: TrainConfig,
    agent_cfg: Any,
    seeds: Sequence[int],
    *,
    out: str | Path | None = None,
    config_name: str | None = None,
    jobs: int = 1,
    overwrite: bool = False,
    progress: bool = True,
) -> tuple[Path, list[Path]]:
    """One run per seed under ``OUT/seed-S`` (``metarl train --seeds``); returns ``OUT`` and the run directories.

    ``train_cfg``'s seed is replaced by each of ``seeds`` in turn.  With ``jobs`` above 1 that many runs go at a
    time, each in its own spawned process (CUDA and the rollout workers need a fresh interpreter), without
    progress bars; one failed run fails the call.
    """
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    seeds = list(seeds)
    if any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds must be distinct non-negative integers, got {seeds}")
    if jobs <= 0:
        raise UserError(f"--jobs must be a positive integer, got {jobs}")
    root = Path(out) if out else default_run_dir(config_name, train_cfg.agent)
    runs = [(dataclasses.replace(train_cfg, seed=s), root / f"seed-{s}") for s in seeds]
    if jobs == 1:
        done = [_train_one_seed(cfg, agent_cfg, str(path), config_name, overwrite, progress) for cfg, path in runs]
    else:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
            futures = [
                pool.submit(_train_one_seed, cfg, agent_cfg, str(path), config_name, overwrite, False)
                for cfg, path in runs
            ]
            done = [f.result() for f in futures]
    return root, [Path(d) for d in done]


def record_resume(run_dir: Path, run_state: Mapping[str, Any]) -> None:
    """Add this resume (command, commit, time, the iteration and env steps it continues from) to ``meta.json``'s
    ``resumes``, so a run trained in slices says how it was made, not only how it started."""
    path = run_dir / META_FILE
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):  # never replace a file we cannot read: it holds the first command
        print(f"metarl: warning: {path} is unreadable; this resume is not recorded in it", file=sys.stderr)
        return
    now = run_metadata()
    entry = {key: now[key] for key in ("command", "git_commit", "host", "started")}
    entry.update(from_iteration=int(run_state["iteration"]), from_env_steps=int(run_state["env_steps"]))
    meta.setdefault("resumes", []).append(entry)
    atomic_write_json(path, meta)


def resume(
    run_dir: str | Path,
    *,
    total_env_steps: int | None = None,
    iterations: int | None = None,
    max_minutes: float | None = None,
    progress: bool = True,
) -> Path:
    """Continue ``run_dir`` from its latest checkpoint; budgets given here replace the saved ones."""
    run_dir = prepare_run_dir(Path(run_dir), resume=True, overwrite=False)
    train_cfg, agent_cfg, config_name = read_run_config(run_dir)
    state = load_checkpoint(run_dir / CHECKPOINT_DIR / LATEST_CHECKPOINT)
    changes: dict[str, Any] = {}
    if total_env_steps is not None:
        changes["total_env_steps"] = total_env_steps
    if iterations is not None:
        changes["iterations"] = iterations
    if max_minutes is not None:
        changes["max_minutes"] = max_minutes
    if changes:
        train_cfg = dataclasses.replace(train_cfg, **changes)
    trainer = Trainer(run_dir, train_cfg, agent_cfg, config_name)
    trainer.restore(state)
    record_resume(run_dir, state["run"])
    if changes:
        atomic_write_json(
            run_dir / CONFIG_FILE,
            {"config_name": config_name, "train": to_dict(train_cfg), "agent": to_dict(agent_cfg)},
        )
    return trainer.run(progress=progress)
