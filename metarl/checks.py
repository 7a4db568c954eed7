"""check_task_distribution: validate a (user's) distribution up front with clear messages."""

from __future__ import annotations

from metarl.tasks import TaskDistribution


def check_task_distribution(dist: TaskDistribution) -> None:
    """Placeholder: being written (see issue 2)."""
    raise NotImplementedError
