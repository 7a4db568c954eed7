"""The ``ray`` backend: Ray actors, each running a process-backend :class:`RolloutEngine` over its share.

A collect splits the task list into contiguous shares, one per actor.  The policy goes out once
(``ray.put``), each actor collects its share with its own worker processes and batched inference
(one policy call per step for all of its slots, on its CPU or its GPU), and the whole share comes
back as one :class:`Trajectories`; the driver concatenates them along the task axis.  There is
never a remote call per step.

Determinism: a share's tasks keep their positions in the whole list (``task_offset``) and every
actor uses the driver's collect index, so env seeds and action noise are those of the process
backend, and a policy whose output for a row does not depend on the other rows of its batch gives
the same trajectories.

Faults: an actor that dies mid-collect is replaced and its share collected again, up to
``max_restarts`` times per collect; then a :class:`RayBackendError` names the tasks and the cause.

Ray on one machine: :func:`loopback_env` (called when this module starts a local Ray instance)
keeps Ray on 127.0.0.1 and away from the network.  On a cluster: ``ray start --head`` on one node,
``ray start --address=HEAD:6379`` on the others, then ``address="auto"`` (``--ray-address auto``).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from metarl.errors import check_int
from metarl.rollout.errors import CollectCancelled
from metarl.rollout.types import Policy, Trajectories
from metarl.tasks import DistributionSpec, Task, TaskDistribution


class RayBackendError(RuntimeError):
    """A share of a collect could not be collected on Ray."""


LOOPBACK_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # bind and advertise 127.0.0.1
    "RAY_USAGE_STATS_ENABLED": "0",
    "HTTP_PROXY": "http://127.0.0.1:9",  # the dashboard would otherwise probe a cloud metadata address
    "http_proxy": "http://127.0.0.1:9",
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
}


def loopback_env() -> dict[str, str]:
    """Set the environment that keeps a local Ray instance on 127.0.0.1 (call before ``ray.init``)."""
    os.environ.update(LOOPBACK_ENV)
    return dict(LOOPBACK_ENV)


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> Any:
    """``ray`` after ``ray.init`` (a local loopback instance when ``address`` is None)."""
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError('the ray backend needs Ray: pip install "metarl[ray]"') from exc
    if not ray.is_initialized():
        if address is None:
            loopback_env()
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
        else:
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            ray.init(address=address, log_to_driver=False, configure_logging=False)
    return ray


class _EngineActor:
    """Runs a process-backend engine; Ray makes it an actor (``ray.remote(_EngineActor)``)."""

    def __init__(self, spec: DistributionSpec, engine_kwargs: Mapping[str, Any]) -> None:
        from metarl.rollout.engine import RolloutEngine

        torch.set_num_threads(1)
        self.engine = RolloutEngine(spec.build(), backend="process", **engine_kwargs)

    def pid(self) -> int:
        return os.getpid()

    def collect(
        self,
        policy: Policy,
        tasks: list[Task],
        episodes_per_task: int,
        episodes_per_trial: int | None,
        deterministic: bool,
        task_offset: int,
        collect_index: int,
    ) -> Trajectories:
        return self.engine.collect(
            policy, tasks, episodes_per_task, episodes_per_trial, deterministic,
            task_offset=task_offset, collect_index=collect_index,
        )  # fmt: skip

    def close(self) -> None:
        self.engine.close()


def shares(n: int, parts: int) -> list[tuple[int, int]]:
    """Contiguous ``[lo, hi)`` ranges splitting ``n`` items into at most ``parts`` near-equal non-empty shares."""
    parts = max(1, min(parts, n))
    base, extra = divmod(n, parts)
    out, lo = [], 0
    for i in range(parts):
        hi = lo + base + (1 if i < extra else 0)
        out.append((lo, hi))
        lo = hi
    return out


def concat_trajectories(parts: Sequence[Trajectories]) -> Trajectories:
    """Join shares along the task axis (they have the same episodes per task and horizon)."""
    first = parts[0]

    def cat(name: str) -> torch.Tensor:
        return torch.cat([getattr(p, name) for p in parts], 0)

    return Trajectories(
        tasks=[t for p in parts for t in p.tasks],
        obs=cat("obs"),
        actions=cat("actions"),
        rewards=cat("rewards"),
        terminated=cat("terminated"),
        truncated=cat("truncated"),
        success=cat("success"),
        valid=cat("valid"),
        final_obs=cat("final_obs"),
        lengths=cat("lengths"),
        episode_seeds=cat("episode_seeds"),
        extras={k: torch.cat([p.extras[k] for p in parts], 0) for k in first.extras},
        episodes_per_trial=first.episodes_per_trial,
    )


class RayRolloutEngine:
    """:class:`RolloutEngine`'s interface over Ray actors (see the module docstring).

    The policy runs in the actors (a copy of it, sent with each collect): what it records while acting
    stays there; only the trajectories come back (``policy_runs_remotely``).

    Args:
        distribution: the task distribution; actors rebuild it from ``distribution.spec``.
        num_actors: actors (default: one per 2 CPUs Ray reports, at least 1).
        workers_per_actor: worker processes of each actor's engine.
        slots_per_family: env slots per family in each actor's engine (default: the engine's).
        device: the actors' policy device (``"auto"``: the policy's).
        seed: root of the seed and noise streams (as for the other backends).
        address: a Ray cluster (``"auto"``, ``"HOST:PORT"``); ``None`` starts a local loopback instance.
        max_restarts: replacements of dead actors per collect before giving up.
        actor_options: passed to ``.options(...)`` of each actor (e.g. ``{"num_gpus": 1}``).
        engine_options: more :class:`RolloutEngine` arguments for the actors' engines (e.g. ``families``).
    """

    backend = "ray"

    policy_runs_remotely = True

    def __init__(
        self,
        distribution: TaskDistribution,
        num_actors: int | None = None,
        workers_per_actor: int = 2,
        slots_per_family: int | None = None,
        device: str = "auto",
        seed: int = 0,
        address: str | None = None,
        max_restarts: int = 3,
        actor_options: Mapping[str, Any] | None = None,
        engine_options: Mapping[str, Any] | None = None,
    ) -> None:
        seed = check_int("seed", seed, 0)
        self.ray = ensure_ray(address)
        self.distribution = distribution
        self.spec = distribution.spec
        self.seed = seed
        self.device = device
        self.max_restarts = int(max_restarts)
        if num_actors is None:
            num_actors = max(1, int(self.ray.cluster_resources().get("CPU", 2)) // max(1, workers_per_actor))
        check_int("num_actors", num_actors, 1)
        self.engine_kwargs: dict[str, Any] = {
            "num_workers": workers_per_actor, "slots_per_family": slots_per_family, "seed": seed, "device": device,
            **dict(engine_options or {}),
        }  # fmt: skip
        self.actor_options = {"num_cpus": 1, **dict(actor_options or {})}
        self._remote = self.ray.remote(_EngineActor)
        self.actors = [self._start() for _ in range(num_actors)]
        self.restarts = 0
        self._collects = 0
        self._closed = False

    def _start(self) -> Any:
        return self._remote.options(**self.actor_options).remote(self.spec, self.engine_kwargs)

    @property
    def num_actors(self) -> int:
        return len(self.actors)

    @property
    def closed(self) -> bool:
        return self._closed

    def actor_pids(self) -> list[int]:
        return [int(p) for p in self.ray.get([a.pid.remote() for a in self.actors])]

    def collect(
        self,
        policy: Policy,
        tasks: Sequence[Task],
        episodes_per_task: int,
        episodes_per_trial: int | None = None,
        deterministic: bool = False,
        *,
        stop: threading.Event | None = None,
        own_threads: bool = True,
    ) -> Trajectories:
        """As :meth:`RolloutEngine.collect`; each actor collects a contiguous share of ``tasks``.

        The actors sample in processes of their own, so ``own_threads`` changes nothing here, and ``stop`` is
        checked only before the shares are submitted and after they return."""
        if stop is not None and stop.is_set():
            raise CollectCancelled("the collect was cancelled before it started")
        if self._closed:
            raise RuntimeError("this RayRolloutEngine is closed")
        if isinstance(tasks, Task) or not isinstance(tasks, Sequence) or not tasks:
            raise ValueError("tasks must be a non-empty sequence of Task")
        tasks = list(tasks)
        for task in tasks:
            self.distribution.validate_task(task)
        index = self._collects
        self._collects += 1
        policy_ref = self.ray.put(policy)
        ranges = shares(len(tasks), len(self.actors))

        def submit(i: int) -> Any:
            lo, hi = ranges[i]
            return self.actors[i].collect.remote(
                policy_ref, tasks[lo:hi], episodes_per_task, episodes_per_trial, deterministic, lo, index
            )

        pending = {i: submit(i) for i in range(len(ranges))}
        results: dict[int, Trajectories] = {}
        attempts = dict.fromkeys(pending, 0)
        from ray.exceptions import RayActorError

        while pending:
            for i, ref in list(pending.items()):
                try:
                    results[i] = self.ray.get(ref)
                    del pending[i]
                except RayActorError as exc:
                    attempts[i] += 1
                    lo, hi = ranges[i]
                    if attempts[i] > self.max_restarts:
                        raise RayBackendError(
                            f"the actor collecting tasks {tasks[lo].id} .. {tasks[hi - 1].id} died "
                            f"{attempts[i]} times; giving up after max_restarts={self.max_restarts}; "
                            f"last cause: {str(exc).splitlines()[0][:200]}"
                        ) from exc
                    self.actors[i] = self._start()
                    self.restarts += 1
                    pending[i] = submit(i)
        if stop is not None and stop.is_set():
            raise CollectCancelled(f"collect {index} was cancelled")
        return concat_trajectories([results[i] for i in range(len(ranges))])

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "collects": self._collects}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        from metarl.rollout.engine import checked_engine_state

        seed, collects = checked_engine_state(state)
        if seed != self.seed:
            raise ValueError(
                f"engine state has seed {seed}, but this engine's actors run seed {self.seed}; "
                "build the engine with that seed"
            )
        self._collects = collects

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for actor in self.actors:
            with contextlib.suppress(Exception):  # a dead actor has nothing left to close
                self.ray.get(actor.close.remote(), timeout=30)
            self.ray.kill(actor)

    def __enter__(self) -> RayRolloutEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RayRolloutEngine({self.distribution.name!r}, actors={len(self.actors)})"
