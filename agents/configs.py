"""Named reference configs, ``AGENT-BENCHMARK``: each names its agent and benchmark, so
``metarl train rl2 --config rl2-ml10`` needs nothing else.  Flags override fields.

Meta-World settings follow metaworld-algorithms (the Meta-World+ reference; docs/reference.md):
meta-batch 20/50/45 tasks for ML10/ML25/ML45, 10 episodes of 500 steps per task per iteration,
2M env steps per training class.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from metarl.agents.maml import FOMAMLConfig, MAMLConfig, MAMLPPOConfig, ReptileConfig
from metarl.agents.rl2 import RL2Config, RL2PolicyConfig, RL2PPOConfig
from metarl.agents.rl2_transformer import RL2TransformerConfig, TransformerPolicyConfig
from metarl.config import TrainConfig
from metarl.errors import UserError


@dataclass(frozen=True)
class NamedConfig:
    name: str
    description: str
    train: TrainConfig
    agent: Any


_MW_EVAL: dict[str, Any] = {"eval_every": 25, "eval_tasks": 10, "adaptation_episodes": 10, "eval_episodes": 3}


def _mw_multi(benchmark: str, agent: str) -> dict[str, Any]:
    """ML10/ML25/ML45 at the reference budget (2M env steps per train class, meta-batch 20/50/45, 10 episodes of 500
    steps per task) with a held-out meta-test of 10 goals per test class every 2M env steps on ML10 and ML25 and
    every 4.5M on ML45 (metaworld-algorithms evaluates ML45 every 4.5M).  An RL² iteration is meta-batch x 5,000
    steps; a MAML iteration twice that (pre- and post-adaptation episodes)."""
    meta_batch, train_classes, test_classes = {"ML10": (20, 10, 5), "ML25": (50, 25, 4), "ML45": (45, 45, 5)}[benchmark]
    per_iteration = meta_batch * 10 * 500 * (2 if agent.startswith("maml") else 1)
    every_steps = 4_500_000 if benchmark == "ML45" else 2_000_000
    return {
        "agent": agent, "benchmark": benchmark, "meta_batch": meta_batch, "episodes_per_task": 10,
        "total_env_steps": 2_000_000 * train_classes, "eval_every": every_steps // per_iteration,
        "eval_tasks": 10 * test_classes, "adaptation_episodes": 10, "eval_episodes": 3,
    }  # fmt: skip


# ML1: 50k steps per iteration, so every 10 iterations is every 500k steps (4 meta-tests in the 2M budget)
_MW_ML1_EVAL: dict[str, Any] = {**_MW_EVAL, "eval_every": 10}
# MAML-TRPO ML1: 100k steps per iteration (pre- and post-adaptation episodes): every 5 iterations is every 500k
_MW_MAML_ML1_EVAL: dict[str, Any] = {**_MW_EVAL, "eval_every": 5}
# 2-D navigation as in pytorch-maml-rl (20 tasks x 20 episodes per phase); the cheap envs run inline in the
# driver, all 400 episodes of a phase side by side, so one policy call serves all of them
_NAV: dict[str, Any] = {
    "benchmark": "point-nav", "meta_batch": 20, "episodes_per_task": 20, "total_env_steps": 4_000_000,
    "backend": "inline", "slots_per_family": 400, "eval_every": 10, "eval_tasks": 40,
    "adaptation_episodes": 20, "eval_episodes": 2, "checkpoint_every": 10,
}  # fmt: skip
# garage, ProMP and pytorch-maml-rl run HalfCheetah in a x10 action box with an initial std of 1 there, i.e. 0.1 in
# the env's own units (metarl's init_std is in [-1, 1]-normalised units, which are the env's for HalfCheetah)
_CHEETAH_MAML = MAMLConfig(hidden=(100, 100), init_std=0.1)
# metaworld-algorithms MAML-TRPO: MLP 2x512 tanh, 1 inner step lr 0.1, TRPO max KL 0.01, 10 CG its, 0.8 x 15, λ 1.0
_MW_MAML = MAMLConfig(hidden=(512, 512), inner_lr=0.1, inner_steps=1, gamma=0.99, gae_lambda=1.0, max_kl=0.01)
# ML10/ML25/ML45: the TRPO step's curvature from a quarter of the tasks (an ML10 iteration in 114 s against 387 s,
# step cosine 0.998 against the full curvature, the same learning on ML1-reach; README: where metarl differs)
_MW_MAML_MULTI = dataclasses.replace(_MW_MAML, hvp_subsample=0.25)
# RL² at the reference settings on the fastest learner path with learning parity: the update under bfloat16 autocast
# (ML1-reach at 1M steps matched float32; README: where metarl differs)
_MW_RL2_MULTI = RL2Config(episodes_per_trial=10, ppo=RL2PPOConfig(autocast_bf16=True))

# rl2-transformer: RL²'s settings with the transformer memory in place of the GRU (docs/rl2-transformer.md), so a
# comparison with the GRU isolates the memory; chunks in time order (the only order it trains with), and the
# float32 update until a learning run shows bf16 parity for this memory
_TRANSFORMER_MW = TransformerPolicyConfig(d_model=64, n_layers=2, n_heads=4, window=64, max_episodes=16)

# rl2-ml1's training settings (metaworld-algorithms' ML1: meta-batch 10, 2M steps), shared by its variants
_RL2_ML1 = TrainConfig(agent="rl2", benchmark="ML1-reach-v3", meta_batch=10, episodes_per_task=10,
                       total_env_steps=2_000_000, **_MW_ML1_EVAL)  # fmt: skip

NAMED_CONFIGS: dict[str, NamedConfig] = {
    c.name: c
    for c in [
        NamedConfig(
            "rl2-point-nav",
            "RL² on 2-D navigation, small GRU so it learns in minutes on 2 CPU cores",
            TrainConfig(
                agent="rl2", benchmark="point-nav", meta_batch=20, episodes_per_task=4, total_env_steps=2_000_000,
                eval_every=20, eval_tasks=20, adaptation_episodes=3, eval_episodes=1, checkpoint_every=20,
            ),
            RL2Config(
                episodes_per_trial=4,
                # point-nav keeps the settings it learns with (README: where metarl differs from the reference)
                policy=RL2PolicyConfig(mlp_hidden=(64,), gru_hidden=64, reward_scale=1.0, normalize_value=True,
                                       squash_heads=False),
                ppo=RL2PPOConfig(bptt_chunk=100, minibatches=4, epochs=5, lr=1e-3, ent_coef=1e-3, baseline="value",
                                 chunk_order="shuffled", bptt_overlap=0, normalize_advantages=True),
            ),
        ),
        NamedConfig(
            "rl2-ml1",
            "RL² on ML1-reach-v3 (held-out goals; metaworld-algorithms ML1 settings: meta-batch 10, 2M steps)",
            _RL2_ML1,
            RL2Config(episodes_per_trial=10),
        ),
        NamedConfig(
            "rl2-ml1-tuned",
            "RL² on ML1-reach-v3, the setting with the best mean-action held-out success over three seeds here "
            "(README): rl2-ml1 plus KL early stop 0.02 and no previous-action input; 2.5M steps",
            TrainConfig(agent="rl2", benchmark="ML1-reach-v3", meta_batch=10, episodes_per_task=10,
                        total_env_steps=2_500_000, **_MW_ML1_EVAL),
            RL2Config(
                episodes_per_trial=10,
                policy=RL2PolicyConfig(action_input=False),
                ppo=RL2PPOConfig(target_kl=0.02),
            ),
        ),
        NamedConfig(
            "rl2-ml1-shaped",
            "RL² on ML1-reach-v3 with 10 added to the env's reward at every successful step (README: held-out "
            "success with the mean action over three seeds at 5M steps): rl2-ml1-tuned with env_success_reward 10",
            TrainConfig(agent="rl2", benchmark="ML1-reach-v3", meta_batch=10, episodes_per_task=10,
                        total_env_steps=5_000_000, env_success_reward=10.0, **_MW_ML1_EVAL),
            RL2Config(
                episodes_per_trial=10,
                policy=RL2PolicyConfig(action_input=False),
                ppo=RL2PPOConfig(target_kl=0.02),
            ),
        ),
        NamedConfig(
            "rl2-ml10",
            "RL² on ML10 (metaworld-algorithms settings: meta-batch 20, 10 x 500-step episodes per trial, 20M "
            "steps; bf16 update)",
            TrainConfig(**_mw_multi("ML10", "rl2")),
            _MW_RL2_MULTI,
        ),
        NamedConfig(
            "rl2-ml25",
            "RL² on ML25 (metaworld-algorithms settings: meta-batch 50, 50M steps; bf16 update)",
            TrainConfig(**_mw_multi("ML25", "rl2")),
            _MW_RL2_MULTI,
        ),
        NamedConfig(
            "rl2-ml45",
            "RL² on ML45 (metaworld-algorithms settings: meta-batch 45, 90M steps; bf16 update)",
            TrainConfig(**_mw_multi("ML45", "rl2")),
            _MW_RL2_MULTI,
        ),
        NamedConfig(
            "rl2-transformer-point-nav",
            "RL² with a transformer memory (window of its episode + one summary per earlier episode) on 2-D "
            "navigation: rl2-point-nav's settings, a small transformer, chunks in time order",
            TrainConfig(
                agent="rl2-transformer", benchmark="point-nav", meta_batch=20, episodes_per_task=4,
                total_env_steps=2_000_000, eval_every=20, eval_tasks=20, adaptation_episodes=3, eval_episodes=1,
                checkpoint_every=20,
            ),
            RL2TransformerConfig(
                episodes_per_trial=4,
                policy=TransformerPolicyConfig(mlp_hidden=(64,), reward_scale=1.0, normalize_value=True,
                                               squash_heads=False, d_model=32, n_layers=2, n_heads=4, window=32,
                                               max_episodes=8),
                ppo=RL2PPOConfig(bptt_chunk=100, epochs=5, lr=1e-3, ent_coef=1e-3, baseline="value",
                                 chunk_order="sequential", bptt_overlap=0, normalize_advantages=True),
            ),
        ),
        NamedConfig(
            "rl2-transformer-ml1",
            "RL² with a transformer memory on ML1-reach-v3: rl2-ml1's settings and budget (meta-batch 10, 2M steps) "
            "with the GRU replaced",
            dataclasses.replace(_RL2_ML1, agent="rl2-transformer"),
            RL2TransformerConfig(episodes_per_trial=10, policy=_TRANSFORMER_MW),
        ),
        NamedConfig(
            "rl2-transformer-ml10",
            "RL² with a transformer memory on ML10: rl2-ml10's settings and budget (meta-batch 20, 10 x 500-step "
            "episodes per trial, 20M steps) with the GRU replaced; float32 update",
            TrainConfig(**_mw_multi("ML10", "rl2-transformer")),
            RL2TransformerConfig(episodes_per_trial=10, policy=_TRANSFORMER_MW),
        ),
        NamedConfig(
            "maml-trpo-point-nav",
            "MAML-TRPO on 2-D navigation (pytorch-maml-rl settings: 2x64 policy, 20 tasks x 20 episodes, lr 0.1)",
            TrainConfig(
                agent="maml-trpo", **_NAV,
            ),
            MAMLConfig(hidden=(64, 64)),
        ),
        NamedConfig(
            "maml-ppo-point-nav",
            "MAML-PPO on 2-D navigation: MAML's inner step, a clipped outer surrogate with 5 Adam steps per iteration "
            "(not ProMP: no low-variance inner objective, no inner KL penalty)",
            TrainConfig(agent="maml-ppo", **_NAV),
            MAMLPPOConfig(hidden=(64, 64)),
        ),
        NamedConfig(
            "fomaml-point-nav",
            "First-order MAML (TRPO outer loop) on 2-D navigation",
            TrainConfig(agent="fomaml", **_NAV),
            FOMAMLConfig(hidden=(64, 64)),
        ),
        NamedConfig(
            "reptile-point-nav",
            "Reptile on 2-D navigation: 3 inner policy-gradient steps, outer step 0.5 toward the adapted weights",
            TrainConfig(agent="reptile", **_NAV),
            ReptileConfig(hidden=(64, 64)),
        ),
        NamedConfig(
            "maml-trpo-cheetah-dir",
            "MAML-TRPO on HalfCheetah forward/backward (learn2learn settings: 2x100 policy, horizon 100, "
            "meta-batch 20 drawn with repeats from the 2 directions, 20 episodes)",
            TrainConfig(
                agent="maml-trpo", benchmark="cheetah-dir", max_episode_steps=100, meta_batch=20, episodes_per_task=20,
                repeat_tasks=True,
                total_env_steps=100_000_000, eval_every=10, eval_tasks=2, adaptation_episodes=20,
                eval_episodes=2, checkpoint_every=5,
            ),
            _CHEETAH_MAML,
        ),
        NamedConfig(
            "maml-trpo-cheetah-vel",
            "MAML-TRPO on HalfCheetah velocity (ProMP settings: 2x100 policy, 20 episodes, meta-batch 40)",
            TrainConfig(
                agent="maml-trpo", benchmark="cheetah-vel", meta_batch=40, episodes_per_task=20,
                total_env_steps=100_000_000, eval_every=10, eval_tasks=10, adaptation_episodes=20,
                eval_episodes=2, checkpoint_every=5,
            ),
            _CHEETAH_MAML,
        ),
        NamedConfig(
            "maml-trpo-ml1",
            "MAML-TRPO on ML1-reach-v3 (held-out goals; metaworld-algorithms ML1 settings: meta-batch 10, 2M steps)",
            TrainConfig(agent="maml-trpo", benchmark="ML1-reach-v3", meta_batch=10, episodes_per_task=10,
                        total_env_steps=2_000_000, **_MW_MAML_ML1_EVAL),
            _MW_MAML,
        ),
        NamedConfig(
            "maml-trpo-ml10",
            "MAML-TRPO on ML10 (metaworld-algorithms settings: meta-batch 20, 10 x 500-step episodes, 20M steps; "
            "curvature from a quarter of the tasks)",
            TrainConfig(**_mw_multi("ML10", "maml-trpo")),
            _MW_MAML_MULTI,
        ),
        NamedConfig(
            "maml-trpo-ml25",
            "MAML-TRPO on ML25 (metaworld-algorithms settings: meta-batch 50, 50M steps; curvature from a quarter "
            "of the tasks)",
            TrainConfig(**_mw_multi("ML25", "maml-trpo")),
            _MW_MAML_MULTI,
        ),
        NamedConfig(
            "maml-trpo-ml45",
            "MAML-TRPO on ML45 (metaworld-algorithms settings: meta-batch 45, 90M steps; curvature from a quarter "
            "of the tasks)",
            TrainConfig(**_mw_multi("ML45", "maml-trpo")),
            _MW_MAML_MULTI,
        ),
    ]
}  # fmt: skip


def get_config(name: str) -> NamedConfig:
    if name not in NAMED_CONFIGS:
        raise UserError(f"unknown config {name!r}; choose one of {sorted(NAMED_CONFIGS)}")
    return NAMED_CONFIGS[name]


def default_config(agent: str) -> NamedConfig:
    """The config used when only an agent is named: its point-nav config."""
    for cfg in NAMED_CONFIGS.values():
        if cfg.train.agent == agent and cfg.train.benchmark == "point-nav":
            return cfg
    raise UserError(f"no default config for agent {agent!r}; pass --config (see `metarl configs`)")
