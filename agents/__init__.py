"""Meta-learning agents. They talk to envs only through metarl's rollout engine.

``AGENTS`` maps an agent name to its module; each module provides a frozen config dataclass
(``CONFIG``) and ``build(observation_space, action_space, config, train_config, device)``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from metarl.errors import UserError

AGENTS: dict[str, str] = {
    "rl2": "metarl.agents.rl2",
    "rl2-transformer": "metarl.agents.rl2_transformer",
    "maml-trpo": "metarl.agents.maml",
    "maml-ppo": "metarl.agents.maml",
    "fomaml": "metarl.agents.maml",
    "reptile": "metarl.agents.maml",
}
CONFIG_CLASS: dict[str, str] = {
    "rl2": "RL2Config",
    "rl2-transformer": "RL2TransformerConfig",
    "maml-trpo": "MAMLConfig",
    "maml-ppo": "MAMLPPOConfig",
    "fomaml": "FOMAMLConfig",
    "reptile": "ReptileConfig",
}


def agent_module(name: str) -> ModuleType:
    """The module implementing agent ``name``."""
    if name not in AGENTS:
        raise UserError(f"unknown agent {name!r}; choose one of {sorted(AGENTS)}")
    return importlib.import_module(AGENTS[name])


def agent_config_class(name: str) -> type:
    cls: type = getattr(agent_module(name), CONFIG_CLASS[name])
    return cls
