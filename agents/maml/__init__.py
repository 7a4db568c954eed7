"""Gradient-based meta-RL (Finn et al. 2017): MAML-TRPO, MAML-PPO (clipped outer loop), FOMAML and Reptile.

One Gaussian MLP policy with parameters ``θ``.  For each task of a meta-batch, the inner loop takes
``inner_steps`` vanilla policy-gradient steps from ``θ`` on that task's episodes, giving adapted parameters
``θ'_i``; the outer loop then moves ``θ``.  One module per responsibility:

- ``policy.py``: the Gaussian MLP, called with explicit parameter dicts, and the engine-facing
  :class:`TaskPolicy` that applies every task's weights in one vmapped call;
- ``inner.py``: what every algorithm shares: :class:`InnerLoopConfig` (the policy and inner-loop fields),
  the per-task batches and advantages, the differentiable inner step, and the :class:`OuterLoop` protocol;
- ``trpo.py``: MAML-TRPO (:class:`MAMLConfig`) and FOMAML, its first-order option (:class:`FOMAMLConfig`);
- ``ppo.py``: MAML-PPO (:class:`MAMLPPOConfig`); ``reptile.py``: Reptile (:class:`ReptileConfig`);
- ``agent.py``: :class:`MAMLAgent` (sampling, adaptation, meta-test, checkpoints) and the registry's ``build``;
- ``metaworld.py``: the agent as Meta-World's ``MetaLearningAgent``, for its official evaluator.

Each algorithm's config carries only the fields that algorithm reads.  Runs written while one ``MAMLConfig``
held every field (up to commit ``bce0993``) still load: the fields an algorithm never read are registered as
removed and ignored (:func:`metarl.config.removed_fields`).
"""

from metarl.agents.distributions import gaussian_kl, gaussian_log_prob
from metarl.agents.linear_baseline import baseline_features, discounted_returns, fit_linear_baseline, gae
from metarl.agents.maml.agent import AGENT_CONFIGS, MAMLAgent, build
from metarl.agents.maml.inner import (
    InnerLoopConfig,
    OuterLoop,
    TaskBatch,
    adapt_params,
    inner_losses,
    inner_step,
    normalize_per_task,
    task_batch,
)
from metarl.agents.maml.metaworld import MAMLMetaWorldAgent
from metarl.agents.maml.policy import (
    GaussianMLPPolicy,
    LoopTaskPolicy,
    Params,
    TaskPolicy,
    detach_params,
    group_rows,
    stack_params,
)
from metarl.agents.maml.ppo import MAMLPPOConfig, PPOOuterLoop, ppo_outer_step
from metarl.agents.maml.reptile import ReptileConfig, ReptileOuterLoop, reptile_outer_step
from metarl.agents.maml.trpo import (
    FOMAMLConfig,
    MAMLConfig,
    TRPOOuterLoop,
    conjugate_gradient,
    flat,
    hvp_tasks,
    surrogate_loss,
    trpo_step,
)

__all__ = [
    "AGENT_CONFIGS",
    "FOMAMLConfig",
    "GaussianMLPPolicy",
    "InnerLoopConfig",
    "LoopTaskPolicy",
    "MAMLAgent",
    "MAMLConfig",
    "MAMLMetaWorldAgent",
    "MAMLPPOConfig",
    "OuterLoop",
    "PPOOuterLoop",
    "Params",
    "ReptileConfig",
    "ReptileOuterLoop",
    "TRPOOuterLoop",
    "TaskBatch",
    "TaskPolicy",
    "adapt_params",
    "baseline_features",
    "build",
    "conjugate_gradient",
    "detach_params",
    "discounted_returns",
    "fit_linear_baseline",
    "flat",
    "gae",
    "gaussian_kl",
    "gaussian_log_prob",
    "group_rows",
    "hvp_tasks",
    "inner_losses",
    "inner_step",
    "normalize_per_task",
    "ppo_outer_step",
    "reptile_outer_step",
    "stack_params",
    "surrogate_loss",
    "task_batch",
    "trpo_step",
]
