"""Shared test fixtures (kept small)."""

from __future__ import annotations

import pytest

from metarl.testing import CountingDistribution


@pytest.fixture
def counting() -> CountingDistribution:
    """Two families of four tasks, horizon 6; task 1 of each family terminates after 4 steps."""
    return CountingDistribution(num_families=2, tasks_per_family=4, horizon=6, lengths=(0, 4))
