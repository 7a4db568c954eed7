"""RL² (Duan et al. 2016; Wang et al. 2016): a recurrent policy whose memory carries what it learned about the task
across the episodes of a trial, trained with PPO over whole trials.

One module per responsibility:

- :mod:`~metarl.agents.rl2.policy`: the policy the engine calls, and its config;
- :mod:`~metarl.agents.rl2.memory`: the recurrent memory behind an interface (the GRU; the per-slot state and its
  hand-over between BPTT chunks);
- :mod:`~metarl.agents.rl2.trials`: trials from the engine's batches, GAE and the baseline along them, BPTT chunks;
- :mod:`~metarl.agents.rl2.ppo`: the PPO config, losses, KL stop and the two update orders;
- :mod:`~metarl.agents.rl2.agent`: the agent (with the ``--overlap`` path) and its config;
- :mod:`~metarl.agents.rl2.adapted`: the policy wrapped for meta-tests and adaptation;
- :mod:`~metarl.agents.rl2.metaworld`: the policy as Meta-World's ``MetaLearningAgent``;
- :mod:`~metarl.agents.rl2.removed`: the commit that still has the settings removed since.
"""

from metarl.agents.rl2.adapted import AdaptedRL2Policy, AdaptedStatePolicy
from metarl.agents.rl2.agent import RL2Agent, RL2Config, build
from metarl.agents.rl2.memory import GRUMemory, MemoryState, RecurrentMemory
from metarl.agents.rl2.policy import (
    LOG_STD_MAX,
    LOG_STD_MIN,
    POLICY_INITS,
    SQUASHED_LOG_STD,
    RL2Policy,
    RL2PolicyConfig,
    log_std_bounds,
)
from metarl.agents.rl2.ppo import (
    BASELINES,
    CHUNK_ORDERS,
    Baseline,
    ChunkOrder,
    RL2PPOConfig,
    _kl_stop,
    _network_precision,
    _ppo_losses,
    _PPOBatch,
    _update_sequential,
    optimizer_steps_per_update,
    ppo_update,
)
from metarl.agents.rl2.removed import LAST_COMMIT_WITH_EXPERIMENTS
from metarl.agents.rl2.trials import (
    TrialBatch,
    as_chunks,
    chunk_starts,
    chunk_starts_hidden,
    discounted_trial_returns,
    gae_over_trials,
    linear_trial_baseline,
    trials_from_trajectories,
)

__all__ = [
    "BASELINES",
    "CHUNK_ORDERS",
    "LAST_COMMIT_WITH_EXPERIMENTS",
    "LOG_STD_MAX",
    "LOG_STD_MIN",
    "POLICY_INITS",
    "SQUASHED_LOG_STD",
    "AdaptedRL2Policy",
    "AdaptedStatePolicy",
    "Baseline",
    "ChunkOrder",
    "GRUMemory",
    "MemoryState",
    "RL2Agent",
    "RL2Config",
    "RL2PPOConfig",
    "RL2Policy",
    "RL2PolicyConfig",
    "RecurrentMemory",
    "TrialBatch",
    "_PPOBatch",
    "_kl_stop",
    "_network_precision",
    "_ppo_losses",
    "_update_sequential",
    "as_chunks",
    "build",
    "chunk_starts",
    "chunk_starts_hidden",
    "discounted_trial_returns",
    "gae_over_trials",
    "linear_trial_baseline",
    "log_std_bounds",
    "optimizer_steps_per_update",
    "ppo_update",
    "trials_from_trajectories",
]
