"""``rl2-transformer`` (issue 35): RL² with a causal transformer memory over the whole trial in place of the GRU.

Everything but the memory is RL²'s: the trials, the PPO over trial chunks (sequential order: each chunk starts
from the memory state the previous chunk handed over), the meta-test and no-feedback wrappers, ``adapt()`` and
the Meta-World adapter (:mod:`metarl.agents.rl2`).  This package adds the memory
(:mod:`~metarl.agents.rl2_transformer.memory`), the policy that holds it
(:mod:`~metarl.agents.rl2_transformer.policy`), and the agent and its config below.  The design and its sources:
docs/rl2-transformer.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from metarl.agents.rl2 import RL2Agent, RL2Config, RL2PPOConfig
from metarl.agents.rl2.agent import build as rl2_build
from metarl.agents.rl2_transformer.memory import TransformerMemory
from metarl.agents.rl2_transformer.policy import TransformerPolicyConfig, TransformerRL2Policy
from metarl.errors import UserError


@dataclass(frozen=True)
class RL2TransformerConfig(RL2Config):
    """``rl2-transformer`` agent settings: RL²'s, with the transformer policy's shape."""

    policy: TransformerPolicyConfig = TransformerPolicyConfig()  # noqa: RUF009 (frozen, so one shared default is safe)
    ppo: RL2PPOConfig = RL2PPOConfig()  # noqa: RUF009

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.ppo.chunk_order != "sequential":
            raise UserError(
                f"chunk_order {self.ppo.chunk_order!r}: rl2-transformer trains its chunks in time order only "
                "(each chunk starts from the cache the previous one handed over); use --chunk-order sequential"
            )


class RL2TransformerAgent(RL2Agent):
    """RL² (:class:`~metarl.agents.rl2.agent.RL2Agent`) training :class:`TransformerRL2Policy`."""

    name = "rl2-transformer"
    policy_class = TransformerRL2Policy

    def learner_record(self) -> dict[str, str]:
        memory = self.policy.memory
        assert isinstance(memory, TransformerMemory)
        return {"memory": f"transformer (window {memory.window}, {memory.max_episodes} episode summaries)"}


def build(
    observation_space: Any, action_space: Any, config: RL2TransformerConfig, train: Any, device: torch.device
) -> RL2TransformerAgent:
    """Agent factory used by the training loop: RL²'s, with this agent's class."""
    return rl2_build(observation_space, action_space, config, train, device, agent_class=RL2TransformerAgent)


__all__ = [
    "RL2TransformerAgent",
    "RL2TransformerConfig",
    "TransformerMemory",
    "TransformerPolicyConfig",
    "TransformerRL2Policy",
    "build",
]
