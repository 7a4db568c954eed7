"""metarl: meta-reinforcement learning on robot control.

Core types live here; distributions in :mod:`metarl.envs`, agents in :mod:`metarl.agents`,
the rollout engine in :mod:`metarl.rollout`.
"""

from metarl.checks import check_task_distribution
from metarl.tasks import DistributionSpec, Split, Task, TaskDistribution

__version__ = "0.1.0"

__all__ = ["DistributionSpec", "Split", "Task", "TaskDistribution", "__version__", "check_task_distribution"]
