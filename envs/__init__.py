"""Task distributions: Meta-World (ML1/ML10/ML25/ML45), classic MuJoCo/2-D ones, and your own.

>>> from metarl.envs import make_distribution, list_distributions
>>> dist = make_distribution("ML1-reach-v3", seed=0)
"""

from metarl.envs.custom import GymTaskDistribution
from metarl.envs.registry import (
    ENTRY_POINT_GROUP,
    canonical_name,
    list_distributions,
    make_distribution,
    register_distribution,
    reload_entry_points,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "GymTaskDistribution",
    "canonical_name",
    "list_distributions",
    "make_distribution",
    "register_distribution",
    "reload_entry_points",
]
