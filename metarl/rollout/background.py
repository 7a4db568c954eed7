"""One ``collect`` in a thread of its own, so that the learner can update while the next batch is sampled.

>>> job = BackgroundCollect(engine, frozen_policy, next_tasks, episodes_per_task=10)  # doctest: +SKIP
>>> losses = update(batch)                 # the learner, meanwhile, in the calling thread  # doctest: +SKIP
>>> next_batch = job.result()              # waits for the collect; re-raises its error  # doctest: +SKIP

The policy handed over must not change while the collect runs (give a copy, not the network the learner
is updating).  The collect leaves torch's thread count alone (it is process-wide: the learner's setting
holds for both) and stops at its next step when :meth:`BackgroundCollect.cancel` is called, so a Ctrl-C in
the learner does not wait for a whole batch.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from metarl.rollout.types import Trajectories
from metarl.tasks import Task


class BackgroundCollect:
    """``engine.collect(policy, tasks, ...)`` started at construction in a daemon thread (``policy``: a
    :class:`~metarl.rollout.Policy`)."""

    def __init__(
        self,
        engine: Any,
        policy: Any,
        tasks: Sequence[Task],
        episodes_per_task: int,
        episodes_per_trial: int | None = None,
        deterministic: bool = False,
    ) -> None:
        self._stop = threading.Event()
        self._result: Trajectories | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run,
            args=(engine, policy, list(tasks), episodes_per_task, episodes_per_trial, deterministic),
            name="metarl-background-collect",
            daemon=True,
        )
        self._thread.start()

    def _run(
        self,
        engine: Any,
        policy: Any,
        tasks: list[Task],
        episodes_per_task: int,
        episodes_per_trial: int | None,
        deterministic: bool,
    ) -> None:
        try:
            self._result = engine.collect(
                policy, tasks, episodes_per_task, episodes_per_trial, deterministic,
                stop=self._stop, own_threads=False,
            )  # fmt: skip
        except BaseException as exc:  # handed to the caller by result()
            self._error = exc

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def result(self) -> Trajectories:
        """Wait for the collect and return its trajectories; its exception, if it raised one, is raised here."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    def cancel(self) -> None:
        """Stop the collect at its next step and wait for its thread (the engine drains the abandoned work at
        its next collect).  Any error of the collect is dropped: the caller is already unwinding."""
        self._stop.set()
        self._thread.join()
