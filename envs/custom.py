"""GymTaskDistribution: wrap any gymnasium env with task sampling and task application functions."""

from __future__ import annotations


class GymTaskDistribution:  # placeholder, being written
    pass
