"""Sampler benchmark: steps/s of metarl's rollout engine against the simulator's limit and common vector envs.

Over the ML10 train tasks, in two configurations (10 envs: one task of each train class; 20 envs:
two of each), with the same torch policies, it measures:

``limit``         ``--workers`` bare processes, each stepping the envs the engine gives its worker,
                  round-robin step by step, random actions, no policy, no IPC.
``limit_strict``  the same, but each env runs a whole episode before the next one starts.
``gym_sync``      gymnasium ``SyncVectorEnv`` + the batched MLP policy.
``gym_async``     gymnasium ``AsyncVectorEnv`` (forkserver) + the batched MLP policy.
``sb3_subproc``   stable-baselines3 ``SubprocVecEnv`` (forkserver) + the batched MLP policy.
``metarl_mlp``    ``RolloutEngine.collect`` with the MLP policy, in the default layout for ``--workers`` on this
                  machine (the driver steps worker 0's envs itself when there are as many workers as cores).
``metarl_mlp_nohost`` the same with every env in a worker process and the driver only running the policy
                  (``host_worker=False``): the other layout, which wins where the driver has a core of its own.
``metarl_gru``    ``RolloutEngine.collect`` with the GRU policy, in RL² trials.
``metarl_ray``    the ``ray`` backend: one Ray actor (local, on loopback) running ``metarl_mlp``'s engine.

Every measurement runs whole 500-step episodes of every env, resets included, and counts only
real env steps.  Each figure is the median over ``--repeats`` rounds; within a round the methods
run one after the other (``MEASURE_ORDER``, each metarl row next to ``limit``), forward on even
rounds and reversed on odd ones.  The ratios are medians over rounds of the ratio within a round:
the machine's speed drifts by tens of percent over minutes, far less over seconds.

    python benchmarks/speed/sampler.py --quick               # < 3 minutes
    python benchmarks/speed/sampler.py --json sampler.json   # the full run, ~10 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import json
import multiprocessing as mp
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
import torch

if __package__ in (None, ""):  # run as a script: make `benchmarks._common` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks._common import (
    BenchEnvs,
    GRUPolicy,
    Measurement,
    MLPPolicy,
    alternating_orders,
    format_rate,
    format_table,
    machine_info,
    median,
    ml10_train_envs,
    now,
    package_versions,
    ray_loopback_env,
    single_thread_torch,
)

METHODS: tuple[str, ...] = (
    "limit",
    "limit_strict",
    "gym_sync",
    "gym_async",
    "sb3_subproc",
    "metarl_mlp",
    "metarl_mlp_nohost",
    "metarl_gru",
    "metarl_ray",
)
"""Methods in table order; the JSON keys are these (10 envs) and these + ``_20`` (20 envs)."""
MEASURE_ORDER: tuple[str, ...] = (
    "gym_sync",
    "gym_async",
    "sb3_subproc",
    "limit_strict",
    "metarl_gru",
    "limit",
    "metarl_mlp",
    "metarl_mlp_nohost",
    "metarl_ray",
)
"""Order within a round (reversed every other round): each metarl row runs next to ``limit``, so the paired
ratio compares runs seconds apart on a machine whose speed drifts over minutes."""
CONFIGS: tuple[tuple[str, int], ...] = (("", 1), ("_20", 2))
"""(JSON key suffix, tasks per class) of the two configurations."""
START_METHOD = "forkserver"
FORKSERVER_PRELOAD = ["benchmarks._common", "metaworld", "metarl.envs.metaworld"]
"""Modules the forkserver imports once (missing ones are skipped by multiprocessing)."""
BARRIER_TIMEOUT_S = 300.0


# --------------------------------------------------------------------------------------------
# limit: bare processes, no policy, no IPC
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LimitRun:
    """Command to a limit worker: step every env for ``episodes`` whole episodes."""

    episodes: int
    strict: bool  # True: one env a whole episode at a time; False: round-robin step by step
    seed: int


@dataclass(frozen=True)
class LimitStop:
    """Command to a limit worker: close the envs and exit."""


@dataclass(frozen=True)
class LimitResult:
    """What a limit worker measured: ``steps`` env steps between ``start`` and ``end`` (``now()`` clock)."""

    steps: int
    episodes: list[int]  # episodes finished per env of this worker
    start: float
    end: float


@dataclass(frozen=True)
class WorkerError:
    """A worker's exception, as text (the original traceback)."""

    text: str


def _limit_interleaved(
    envs: Sequence[gym.Env[Any, Any]], episodes: int, seed: int, actions: np.ndarray
) -> tuple[int, list[int]]:
    """Round-robin: one step of every unfinished env in turn; an env resets when its episode ends."""
    done_eps = [0] * len(envs)
    for i, env in enumerate(envs):
        env.reset(seed=seed + 1000 * i)
    active = list(range(len(envs)))
    steps = 0
    n_actions = len(actions)
    while active:
        still = []
        for i in active:
            _, _, terminated, truncated, _ = envs[i].step(actions[steps % n_actions])
            steps += 1
            if terminated or truncated:
                done_eps[i] += 1
                if done_eps[i] == episodes:
                    continue
                envs[i].reset(seed=seed + 1000 * i + done_eps[i])
            still.append(i)
        active = still
    return steps, done_eps


def _limit_strict(
    envs: Sequence[gym.Env[Any, Any]], episodes: int, seed: int, actions: np.ndarray
) -> tuple[int, list[int]]:
    """One env at a time: a whole episode, then the next env (cache-friendly upper bound)."""
    done_eps = [0] * len(envs)
    steps = 0
    n_actions = len(actions)
    for e in range(episodes):
        for i, env in enumerate(envs):
            env.reset(seed=seed + 1000 * i + e)
            while True:
                _, _, terminated, truncated, _ = env.step(actions[steps % n_actions])
                steps += 1
                if terminated or truncated:
                    done_eps[i] += 1
                    break
    return steps, done_eps


def limit_worker(conn: Connection, barrier: Any, env_fns: list[Callable[[], gym.Env[Any, Any]]], rank: int) -> None:
    """Limit worker process: build the envs once, then serve :class:`LimitRun` commands until :class:`LimitStop`."""
    single_thread_torch()
    envs: list[gym.Env[Any, Any]] = []
    try:
        envs = [fn() for fn in env_fns]
        actions = np.random.default_rng(rank).uniform(-1.0, 1.0, size=(4096, 4)).astype(np.float32)
        conn.send(len(envs))
        while True:
            cmd = conn.recv()
            if isinstance(cmd, LimitStop):
                break
            if not isinstance(cmd, LimitRun):
                raise TypeError(f"limit worker got {cmd!r}; expected LimitRun or LimitStop")
            barrier.wait(BARRIER_TIMEOUT_S)
            start = now()
            loop = _limit_strict if cmd.strict else _limit_interleaved
            steps, eps = loop(envs, cmd.episodes, cmd.seed, actions)
            end = now()
            conn.send(LimitResult(steps, eps, start, end))
    except BaseException:  # report, then exit: the parent raises with this text
        conn.send(WorkerError(traceback.format_exc()))
    finally:
        for env in envs:
            env.close()
        conn.close()


class LimitPool:
    """``len(assignment)`` persistent limit workers; worker ``w`` steps envs ``assignment[w]``."""

    def __init__(self, bench: BenchEnvs, assignment: Sequence[Sequence[int]], context: str = START_METHOD):
        ctx: Any = mp.get_context(context)
        self.assignment = [list(a) for a in assignment]
        # Keep the barrier referenced for the pool's lifetime: its state lives in multiprocessing's shared
        # heap, and a collected barrier's block is reused by later allocations (e.g. AsyncVectorEnv buffers).
        self._barrier = barrier = ctx.Barrier(len(assignment))
        self._conns: list[Connection] = []
        self._procs: list[Any] = []
        self.last_results: list[LimitResult] = []
        try:
            for rank, idx in enumerate(self.assignment):
                parent, child = ctx.Pipe()
                self._conns.append(parent)
                fns = [bench.env_fns[i] for i in idx]
                proc = ctx.Process(target=limit_worker, args=(child, barrier, fns, rank), daemon=True,
                                   name=f"limit-{rank}")  # fmt: skip
                proc.start()
                child.close()
                self._procs.append(proc)
            for conn in self._conns:
                self._receive(conn)  # each worker reports once its envs are built
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _receive(conn: Connection) -> Any:
        msg = conn.recv()
        if isinstance(msg, WorkerError):
            raise RuntimeError(f"limit worker failed:\n{msg.text}")
        return msg

    def measure(self, episodes: int, strict: bool, seed: int = 0) -> Measurement:
        """All workers pass a barrier, then step; time = last end − first start."""
        for conn in self._conns:
            conn.send(LimitRun(episodes, strict, seed))
        self.last_results = [self._receive(conn) for conn in self._conns]
        steps = sum(r.steps for r in self.last_results)
        seconds = max(r.end for r in self.last_results) - min(r.start for r in self.last_results)
        return Measurement(steps, seconds)

    def close(self) -> None:
        for conn in self._conns:
            with contextlib.suppress(BrokenPipeError, OSError):  # a worker already gone is joined below
                conn.send(LimitStop())
        for proc in self._procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for conn in self._conns:
            conn.close()


def alternate_assignment(num_envs: int, num_workers: int) -> list[list[int]]:
    """Env ``i`` goes to worker ``i % num_workers`` (the baseline split when the engine shows no layout)."""
    if num_workers < 1:
        raise ValueError(f"num_workers must be a positive integer, got {num_workers}")
    return [[i for i in range(num_envs) if i % num_workers == w] for w in range(num_workers) if w < num_envs]


# --------------------------------------------------------------------------------------------
# vector-env loops with the batched MLP policy
# --------------------------------------------------------------------------------------------
def run_gym_vector(
    venv: gym.vector.VectorEnv[Any, Any, Any], policy: MLPPolicy, episodes: int, seed: int = 0
) -> Measurement:
    """Step a gymnasium vector env until every env has finished ``episodes`` episodes (NEXT_STEP autoreset).

    Envs that finish first keep stepping (and those steps count); with Meta-World's fixed 500-step
    episodes all envs finish together, so the total is exactly ``num_envs * episodes * 500``.

    With gymnasium's default ``AutoresetMode.NEXT_STEP`` the call after an env's episode ended
    resets that env and ignores its action: such rows are not counted as env steps.
    """
    if venv.metadata.get("autoreset_mode", gym.vector.AutoresetMode.NEXT_STEP) != gym.vector.AutoresetMode.NEXT_STEP:
        raise ValueError(f"run_gym_vector counts steps for NEXT_STEP autoreset; got {venv.metadata['autoreset_mode']}")
    n = venv.num_envs
    start = now()
    obs, _ = venv.reset(seed=seed)
    resetting = np.zeros(n, dtype=bool)  # this call resets the env (its previous step ended an episode)
    done_eps = np.zeros(n, dtype=np.int64)
    steps = 0
    while done_eps.min() < episodes:
        obs, _, terminated, truncated, _ = venv.step(policy.sample(obs))
        real = ~resetting
        steps += int(real.sum())
        ended = (terminated | truncated) & real
        done_eps += ended
        resetting = ended
    return Measurement(steps, now() - start)


def run_sb3_vector(venv: Any, policy: MLPPolicy, episodes: int, seed: int = 0) -> Measurement:
    """Step an SB3 VecEnv until every env has finished ``episodes`` episodes (SB3 resets inside the ending step,
    so every row of every call is a real env step)."""
    n = venv.num_envs
    venv.seed(seed)
    start = now()
    obs = venv.reset()
    done_eps = np.zeros(n, dtype=np.int64)
    steps = 0
    while done_eps.min() < episodes:
        obs, _, dones, _ = venv.step(policy.sample(obs))
        steps += n
        done_eps += dones.astype(np.int64)
    return Measurement(steps, now() - start)


# --------------------------------------------------------------------------------------------
# methods: build once per configuration, measure repeatedly
# --------------------------------------------------------------------------------------------
class Runner(Protocol):
    def measure(self) -> Measurement: ...

    def close(self) -> None: ...


@dataclass
class Settings:
    """What every measurement runs."""

    episodes: int = 2
    """Episodes of 500 steps per env per measurement."""
    trial_episodes: int = 2
    """Episodes per RL² trial for ``metarl_gru``."""
    workers: int = 2
    """Worker processes of the engine and of the limit baseline."""
    seed: int = 0


class LimitRunner:
    def __init__(self, pool: LimitPool, settings: Settings, strict: bool):
        self.pool, self.settings, self.strict = pool, settings, strict

    def measure(self) -> Measurement:
        return self.pool.measure(self.settings.episodes, self.strict, self.settings.seed)

    def close(self) -> None:
        pass  # the pool is shared by limit and limit_strict; closed by the caller


class GymRunner:
    def __init__(self, venv: gym.vector.VectorEnv[Any, Any, Any], settings: Settings):
        self.venv, self.settings = venv, settings
        self.policy = MLPPolicy()

    def measure(self) -> Measurement:
        return run_gym_vector(self.venv, self.policy, self.settings.episodes, self.settings.seed)

    def close(self) -> None:
        self.venv.close()


class SB3Runner:
    def __init__(self, venv: Any, settings: Settings):
        self.venv, self.settings = venv, settings
        self.policy = MLPPolicy()

    def measure(self) -> Measurement:
        return run_sb3_vector(self.venv, self.policy, self.settings.episodes, self.settings.seed)

    def close(self) -> None:
        self.venv.close()


class EngineRunner:
    """``engine.collect(policy, tasks, episodes_per_task)``; the engine is shared by both metarl rows."""

    def __init__(self, engine: Any, tasks: list[Any], policy: Any, settings: Settings, trial_episodes: int | None):
        self.engine, self.tasks, self.policy, self.settings = engine, tasks, policy, settings
        self.trial_episodes = trial_episodes
        self.last_steps = 0

    def measure(self) -> Measurement:
        start = now()
        traj = self.engine.collect(
            self.policy, self.tasks, episodes_per_task=self.settings.episodes, episodes_per_trial=self.trial_episodes
        )
        seconds = now() - start
        self.last_steps = traj.num_steps
        return Measurement(traj.num_steps, seconds)

    def close(self) -> None:
        pass  # the engine is closed by the caller


def engine_class() -> tuple[Any, str | None]:
    """``(RolloutEngine, None)``, or ``(None, why)`` when the engine cannot be imported."""
    try:
        engine_module = importlib.import_module("metarl.rollout.engine")
    except ModuleNotFoundError as exc:
        if exc.name not in ("metarl.rollout.engine",):
            raise
        return None, "metarl.rollout.engine does not exist yet"
    cls = getattr(engine_module, "RolloutEngine", None)
    if cls is None:
        return None, "metarl.rollout.engine has no RolloutEngine yet"
    return cls, None


def engine_assignment(engine: Any, bench: BenchEnvs, num_workers: int) -> list[list[int]] | None:
    """The engine's env → worker layout as lists of env indices of ``bench``, when the engine exposes one.

    Reads ``engine.layout.slot_worker`` and ``engine.layout.slot_family`` (per env slot: its worker
    and its family); the ``k``-th env of a family in ``bench`` goes where the engine's ``k``-th slot
    of that family lives.  Slots of families ``bench`` does not use (e.g. test classes) are ignored.
    Returns ``None`` when there is no such layout or it cannot hold ``bench``'s envs.
    """
    layout = getattr(engine, "layout", None)
    slot_worker = getattr(layout, "slot_worker", None)
    slot_family = getattr(layout, "slot_family", None)
    if slot_worker is None or slot_family is None:
        return None
    slots_of: dict[str, list[int]] = {}
    for fam, worker in zip(slot_family, slot_worker, strict=True):
        slots_of.setdefault(fam, []).append(int(worker))
    out: list[list[int]] = [[] for _ in range(max(num_workers, 1 + max(slot_worker, default=0)))]
    for i, fam in enumerate(bench.families):
        workers = slots_of.get(fam, [])
        if not workers:
            return None
        out[workers.pop(0)].append(i)
    return [idx for idx in out if idx]


@dataclass
class ConfigResult:
    """Measurements of one configuration: per method, one :class:`Measurement` per repeat."""

    num_envs: int
    samples: dict[str, list[Measurement]]
    skipped: dict[str, str]
    layout: list[list[str]]
    layout_source: str
    build_seconds: dict[str, float]  # per method (the engine's rows share "metarl")


def _build_engine(
    bench: BenchEnvs, methods: Sequence[str], settings: Settings
) -> tuple[Any, dict[str, Runner], str | None]:
    """``(engine, runners, None)`` for the selected metarl rows, or ``(None, {}, why)`` when they cannot run."""
    cls, why = engine_class()
    if cls is None or bench.distribution is None or bench.tasks is None:
        return None, {}, why or f"the envs come from {bench.source}; the engine needs a metarl distribution"
    from metarl.config import available_cores, host_worker_default

    # the layout `metarl train` picks on this machine
    engine = _engine(cls, bench, settings, host_worker_default(settings.workers, available_cores()))
    runners: dict[str, Runner] = {}
    if "metarl_mlp" in methods:
        runners["metarl_mlp"] = EngineRunner(engine, bench.tasks, MLPPolicy(), settings, None)
    if "metarl_gru" in methods:
        trial = settings.trial_episodes if settings.episodes % settings.trial_episodes == 0 else 1
        runners["metarl_gru"] = EngineRunner(engine, bench.tasks, GRUPolicy(), settings, trial)
    return engine, runners, None


def _engine(cls: Any, bench: BenchEnvs, settings: Settings, host_worker: bool) -> Any:
    """The engine of the metarl rows: one slot per benchmarked task, serving only the benchmarked classes; forkserver
    like the other methods (workers fork from the preloaded server: start-up only, same stepping)."""
    families = list(dict.fromkeys(bench.families))
    return cls(bench.distribution, num_workers=settings.workers, slots_per_family=bench.num_envs // len(families),
               seed=settings.seed, families=families, start_method=START_METHOD, host_worker=host_worker)  # fmt: skip


def _add_nohost_runner(
    bench: BenchEnvs,
    settings: Settings,
    runners: dict[str, Runner],
    skipped: dict[str, str],
    closers: list[Callable[[], None]],
) -> None:
    """``metarl_mlp_nohost``: the MLP row's engine with every env in a worker process (``host_worker=False``)."""
    cls, why = engine_class()
    if cls is None or bench.distribution is None:
        skipped["metarl_mlp_nohost"] = why or f"the envs come from {bench.source}; the engine needs metarl's"
        return
    engine = _engine(cls, bench, settings, host_worker=False)
    closers.append(engine.close)
    runners["metarl_mlp_nohost"] = EngineRunner(engine, list(bench.tasks or []), MLPPolicy(), settings, None)


def _build_ray_engine(bench: BenchEnvs, settings: Settings) -> tuple[Any, str | None]:
    """One Ray actor running the process-backend engine of ``metarl_mlp`` (same workers and slots), on a local
    Ray instance kept on loopback: the row measures the ray backend's overhead."""
    if bench.distribution is None or bench.tasks is None:
        return None, f"the envs come from {bench.source}; the engine needs a metarl distribution"
    try:
        import ray
    except ImportError:
        return None, 'Ray is not installed (pip install "metarl[ray]")'
    from metarl.rollout.ray_backend import RayRolloutEngine

    if not ray.is_initialized():
        ray_loopback_env()
        ray.init(num_cpus=settings.workers + 1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    families = list(dict.fromkeys(bench.families))
    engine = RayRolloutEngine(
        bench.distribution, num_actors=1, workers_per_actor=settings.workers,
        slots_per_family=bench.num_envs // len(families), seed=settings.seed,
        engine_options={"families": families, "start_method": START_METHOD},
    )  # fmt: skip
    engine.collect(MLPPolicy(), bench.tasks, episodes_per_task=1)  # warm-up: the actor's first collect starts its pool
    return engine, None


def _add_ray_runner(
    bench: BenchEnvs,
    settings: Settings,
    runners: dict[str, Runner],
    skipped: dict[str, str],
    build_seconds: dict[str, float],
    closers: list[Callable[[], None]],
    log: Callable[[str], None],
) -> None:
    t = now()
    try:
        import ray

        started_here = not ray.is_initialized()
    except ImportError:
        started_here = False
    engine, why = _build_ray_engine(bench, settings)
    if engine is None:
        skipped["metarl_ray"] = str(why)
        log(f"  skipping metarl_ray: {why}")
        return
    if started_here:
        closers.append(ray.shutdown)  # closers run in reverse: the engine closes first, then the Ray it started
    closers.append(engine.close)
    runners["metarl_ray"] = EngineRunner(engine, bench.tasks or [], MLPPolicy(), settings, None)
    build_seconds["metarl_ray"] = now() - t


def _add_vector_runners(
    methods: Sequence[str],
    bench: BenchEnvs,
    settings: Settings,
    runners: dict[str, Runner],
    build_seconds: dict[str, float],
    closers: list[Callable[[], None]],
) -> None:
    for m in ("gym_sync", "gym_async", "sb3_subproc"):
        if m in methods:
            t = now()
            runners[m] = _vector_runner(m, bench, settings)
            closers.append(runners[m].close)
            build_seconds[m] = now() - t


def _vector_runner(method: str, bench: BenchEnvs, settings: Settings) -> GymRunner | SB3Runner:
    fns = list(bench.env_fns)
    if method == "gym_sync":
        return GymRunner(gym.vector.SyncVectorEnv(fns), settings)
    if method == "gym_async":
        return GymRunner(gym.vector.AsyncVectorEnv(fns, context=START_METHOD), settings)
    if method == "sb3_subproc":
        from stable_baselines3.common.vec_env import SubprocVecEnv

        return SB3Runner(SubprocVecEnv(fns, start_method=START_METHOD), settings)
    raise ValueError(f"{method!r} is not a vector-env method; choose gym_sync, gym_async or sb3_subproc")


def run_config(
    bench: BenchEnvs, methods: Sequence[str], repeats: int, settings: Settings, log: Callable[[str], None] = print
) -> ConfigResult:
    """Build every method of ``methods`` over ``bench``'s envs, then measure them in alternating rounds.

    Raises if a measurement took other than ``envs x episodes x horizon`` env steps.
    """
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    if repeats < 1:
        raise ValueError(f"repeats must be a positive integer, got {repeats}")
    runners: dict[str, Runner] = {}
    skipped: dict[str, str] = {}
    build_seconds: dict[str, float] = {}
    closers: list[Callable[[], None]] = []
    layout: list[list[int]] | None = None
    layout_source = "alternate (env i -> worker i % workers)"
    try:
        want_engine = bool({"metarl_mlp", "metarl_gru"} & set(methods))
        if want_engine or {"limit", "limit_strict"} & set(methods):  # the limit workers copy the engine's layout
            t = now()
            engine, engine_runners, why = _build_engine(bench, methods, settings)
            if engine is None:
                skipped.update({m: str(why) for m in ("metarl_mlp", "metarl_gru") if m in methods})
                log(f"  {'skipping metarl rows' if want_engine else 'no engine layout'}: {why}")
            else:
                layout = engine_assignment(engine, bench, settings.workers)
                if layout is not None:
                    layout_source = "the engine's worker layout (engine.layout)"
                if want_engine:
                    closers.append(engine.close)
                    runners.update(engine_runners)
                    build_seconds["metarl"] = now() - t
                else:
                    engine.close()
        if layout is None:
            layout = alternate_assignment(bench.num_envs, settings.workers)
        if {"limit", "limit_strict"} & set(methods):
            t = now()
            pool = LimitPool(bench, layout)
            closers.append(pool.close)
            build_seconds["limit"] = now() - t
            runners.update({m: LimitRunner(pool, settings, m == "limit_strict") for m in ("limit", "limit_strict")
                            if m in methods})  # fmt: skip
        if "metarl_mlp_nohost" in methods:
            _add_nohost_runner(bench, settings, runners, skipped, closers)
        if "metarl_ray" in methods:
            _add_ray_runner(bench, settings, runners, skipped, build_seconds, closers, log)
        _add_vector_runners(methods, bench, settings, runners, build_seconds, closers)
        built = ", ".join(f"{k} {v:.1f} s" for k, v in build_seconds.items())
        log(f"  built over {bench.num_envs} envs: {built}")
        order = [m for m in MEASURE_ORDER if m in runners]
        samples: dict[str, list[Measurement]] = {m: [] for m in order}
        expected_steps = bench.num_envs * settings.episodes * bench.horizon
        for r, round_order in enumerate(alternating_orders(order, repeats)):
            for m in round_order:
                meas = runners[m].measure()
                if meas.steps != expected_steps:  # every env runs whole episodes of exactly `horizon` steps
                    shape = f"{bench.num_envs} envs x {settings.episodes} episodes x {bench.horizon} steps"
                    raise RuntimeError(f"{m} took {meas.steps} env steps; expected {expected_steps} ({shape})")
                samples[m].append(meas)
                log(f"  [{bench.num_envs} envs, round {r + 1}/{repeats}] {m:<13} {meas.steps_per_s:9,.0f} steps/s "
                    f"({meas.steps} steps in {meas.seconds:.2f} s)")  # fmt: skip
    finally:
        for close in reversed(closers):
            close()
    families = [[bench.families[i] for i in idx] for idx in layout]
    return ConfigResult(bench.num_envs, samples, skipped, families, layout_source, build_seconds)


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------
def figures(results: dict[str, ConfigResult]) -> dict[str, float | None]:
    """The JSON figures: ``{method + suffix: median steps/s or None}`` for every method and configuration."""
    out: dict[str, float | None] = {}
    for suffix, _ in CONFIGS:
        res = results.get(suffix)
        for m in METHODS:
            samples = res.samples.get(m) if res is not None else None
            out[m + suffix] = median([s.steps_per_s for s in samples]) if samples else None
    return out


def paired_ratio(samples: Sequence[Measurement], reference: Sequence[Measurement]) -> float | None:
    """Median over rounds of ``samples[r] / reference[r]`` (both measured in round ``r``, minutes apart at most).

    On a shared machine whose speed drifts by tens of percent over minutes, the ratio of two methods
    measured side by side is far steadier than the ratio of their medians over the whole run.
    """
    ratios = [a.steps_per_s / b.steps_per_s for a, b in zip(samples, reference, strict=False) if b.steps_per_s > 0]
    return median(ratios) if ratios else None


def ratios(results: dict[str, ConfigResult]) -> dict[str, float | None]:
    """``{method + suffix + "_per_limit" / "_per_gym_async": paired ratio}`` for every measured pair."""
    out: dict[str, float | None] = {}
    for suffix, res in results.items():
        for m, samples in res.samples.items():
            for ref in ("limit", "gym_async"):
                if ref in res.samples and m != ref:
                    out[f"{m}{suffix}_per_{ref}"] = paired_ratio(samples, res.samples[ref])
    return out


def table(results: dict[str, ConfigResult]) -> str:
    """Method, steps/s, min–max, and the paired ratios to ``limit`` and ``gym_async``, for each configuration."""
    figs = figures(results)
    rats = ratios(results)
    header = ["method"]
    for suffix, _ in CONFIGS:
        n = results[suffix].num_envs if suffix in results else "?"
        header += [f"steps/s ({n} envs)", "min–max", "/ limit", "/ gym_async"]
    rows = []
    for m in METHODS:
        row = [m]
        for suffix, _ in CONFIGS:
            value = figs[m + suffix]
            samples = results[suffix].samples.get(m, []) if suffix in results else []
            rates = [s.steps_per_s for s in samples]
            spread = f"{format_rate(min(rates))}–{format_rate(max(rates))}" if rates else "—"
            cells = []
            for ref in ("limit", "gym_async"):
                r = 1.0 if m == ref and value is not None else rats.get(f"{m}{suffix}_per_{ref}")
                cells.append("—" if r is None else f"{r:.2f}")
            row += [format_rate(value), spread, *cells]
        rows.append(row)
    return format_table(header, rows)


def write_json(path: Path, results: dict[str, ConfigResult], meta: dict[str, Any]) -> dict[str, Any]:
    """Write the figures (steps/s, ``None`` where not measured) plus a ``"meta"`` record; return what was written."""
    data: dict[str, Any] = dict(figures(results))
    data["meta"] = meta
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    return data


def run(
    methods: Sequence[str],
    repeats: int,
    settings: Settings,
    classes: int = 10,
    configs: Sequence[tuple[str, int]] = CONFIGS,
    log: Callable[[str], None] = print,
) -> dict[str, ConfigResult]:
    """Run every configuration; ``classes`` < 10 uses only the first train classes (for smoke tests)."""
    results: dict[str, ConfigResult] = {}
    for suffix, per_class in configs:
        bench = ml10_train_envs(per_class=per_class, classes=classes, seed=settings.seed)
        log(f"{bench.num_envs} envs ({per_class} task(s) of each of {classes} ML10 train classes; {bench.source})")
        results[suffix] = run_config(bench, methods, repeats, settings, log)
    return results


def _meta(args: argparse.Namespace, settings: Settings, results: dict[str, ConfigResult], started: float,
          machine: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    return {
        "settings": {
            **dataclasses.asdict(settings),
            "repeats": args.repeats,
            "quick": args.quick,
            "classes": args.classes,
            "methods": list(args.only),
            "start_method": START_METHOD,
            "steps_per_episode": 500,
        },
        "paired_ratios": {k: None if v is None else round(v, 3) for k, v in ratios(results).items()},
        "samples_steps_per_s": {
            m + suffix: [round(s.steps_per_s, 1) for s in res.samples[m]]
            for suffix, res in results.items()
            for m in res.samples
        },
        "skipped": {m + suffix: why for suffix, res in results.items() for m, why in res.skipped.items()},
        "layout": {
            suffix or "_10": {"workers": res.layout, "source": res.layout_source} for suffix, res in results.items()
        },
        "build_seconds": {
            suffix or "_10": {k: round(v, 1) for k, v in res.build_seconds.items()} for suffix, res in results.items()
        },
        "total_seconds": round(now() - started, 1),
        "versions": package_versions(),
        "machine": machine,
        "note": "the machine may be shared with other work; figures are medians of alternating repeats; "
        "paired_ratios are medians over rounds of the ratio within a round",
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 episode per env per measurement, 2 repeats (< 3 min)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the figures (steps/s) as JSON to PATH")
    parser.add_argument("--repeats", type=int, help="alternating rounds per configuration (default 5; --quick 2)")
    parser.add_argument("--episodes", type=int, help="episodes per env per measurement (default 2; --quick 1)")
    parser.add_argument("--trial-episodes", type=int, default=2, help="episodes per RL² trial for metarl_gru")
    parser.add_argument("--workers", type=int, default=2, help="engine and limit worker processes (default 2)")
    parser.add_argument("--only", type=str, metavar="METHOD[,METHOD]", help=f"run only these of {','.join(METHODS)}")
    parser.add_argument("--classes", type=int, default=10, help="use the first N ML10 train classes (smoke tests)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.repeats = args.repeats if args.repeats is not None else (2 if args.quick else 5)
    args.episodes = args.episodes if args.episodes is not None else (1 if args.quick else 2)
    for name in ("repeats", "episodes", "trial_episodes", "workers"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    if not 1 <= args.classes <= 10:
        parser.error(f"--classes must be in 1..10, got {args.classes}")
    if args.only:
        only = [m.strip() for m in args.only.split(",") if m.strip()]
        bad = [m for m in only if m not in METHODS]
        if bad or not only:
            parser.error(f"unknown method(s) {bad or [args.only]} in --only; choose from {','.join(METHODS)}")
        args.only = [m for m in METHODS if m in only]
    else:
        args.only = list(METHODS)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    started = now()
    args = parse_args(argv)
    single_thread_torch()
    # Env processes fork from a server that has already imported torch, Meta-World and metarl: fast starts.
    mp.get_context(START_METHOD).set_forkserver_preload(FORKSERVER_PRELOAD)
    machine = machine_info()
    settings = Settings(args.episodes, args.trial_episodes, args.workers, args.seed)
    print(f"sampler benchmark: {args.repeats} rounds, {args.episodes} episode(s) of 500 steps per env per measurement, "
          f"{args.workers} workers, torch threads {torch.get_num_threads()}, {machine['cpu_count']} CPUs, "
          f"load {machine['load_average']}")  # fmt: skip
    results = run(args.only, args.repeats, settings, classes=args.classes)
    print()
    print(table(results))
    for suffix, res in results.items():
        for m, why in res.skipped.items():
            print(f"{m + suffix}: skipped ({why})")
    elapsed = now() - started
    print(
        f"\ntotal {elapsed:.0f} s (figures: median steps/s over {args.repeats} alternating rounds; "
        "ratios: median over rounds of the ratio measured within the round)"
    )
    if args.json is not None:
        write_json(args.json, results, _meta(args, settings, results, started, machine))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
