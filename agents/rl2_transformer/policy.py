"""The ``rl2-transformer`` policy and its config: RL²'s policy (inputs, encoder, heads, engine contract) with the
GRU replaced by :class:`~metarl.agents.rl2_transformer.memory.TransformerMemory`."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from metarl.agents.rl2.memory import RecurrentMemory
from metarl.agents.rl2.policy import RL2Policy, RL2PolicyConfig
from metarl.agents.rl2_transformer.memory import TransformerMemory
from metarl.errors import UserError, check_int_field

_GRU_HIDDEN_DEFAULT = RL2PolicyConfig.gru_hidden


@dataclass(frozen=True)
class TransformerPolicyConfig(RL2PolicyConfig):
    """Network shape of the ``rl2-transformer`` policy: RL²'s inputs, encoder and heads (the fields it inherits;
    ``gru_hidden`` is unused and must keep its default) and the transformer memory's shape."""

    d_model: int = 64
    """Width of the transformer's tokens (the heads read this width)."""
    n_layers: int = 2
    """Transformer blocks."""
    n_heads: int = 4
    """Attention heads per block (d_model must be a multiple of it)."""
    window: int = 64
    """Steps of its own episode a step attends to (itself included); earlier steps of the episode reach it
    through the episode's running summary."""
    max_episodes: int = 16
    """Earlier episodes of the trial a step attends to, one summary token each (the last ones if a trial has
    more); also the number of episode-index embeddings (later episodes share the last)."""
    ff_mult: int = 4
    """Width of each block's feed-forward layer as a multiple of d_model."""
    normformer: bool = True
    """AMAGO's NormFormer norms: a LayerNorm after the attention's output and after the feed-forward
    activation, besides the pre-norms."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("d_model", "n_layers", "n_heads", "window", "max_episodes", "ff_mult"):
            check_int_field(self, name)
        if self.d_model % self.n_heads:
            raise UserError(f"d_model ({self.d_model}) must be a multiple of n_heads ({self.n_heads})")
        if not isinstance(self.normformer, bool):
            raise UserError(f"normformer must be true or false, got {self.normformer!r}")
        if self.gru_hidden != _GRU_HIDDEN_DEFAULT:
            raise UserError("gru_hidden is RL²'s GRU width; rl2-transformer has no GRU (set d_model instead)")
        if self.weight_init != "torch":
            raise UserError(
                f"weight_init {self.weight_init!r} is metaworld-algorithms' GRU initialisation; rl2-transformer "
                "supports only 'torch'"
            )


class _AppendDone(nn.Module):
    """The encoder MLP, its output followed by the input's done flag (the last input column): the memory reads
    the episode boundaries from it."""

    def __init__(self, mlp: nn.Module) -> None:
        super().__init__()
        self.mlp = mlp

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.mlp(inputs), inputs[..., -1:]], -1)


class TransformerRL2Policy(RL2Policy):
    """RL²'s policy with a transformer memory: obs ⊕ previous action ⊕ scaled reward ⊕ done flag → MLP →
    :class:`TransformerMemory` → Gaussian head + value head.  The engine's one call per step adds one token per
    env slot to that slot's cache; the update runs trial chunks through :meth:`TransformerMemory.sequence`."""

    config: TransformerPolicyConfig

    def _build_memory(self, input_width: int) -> None:
        c = self.config
        if not isinstance(c, TransformerPolicyConfig):
            raise TypeError(f"TransformerRL2Policy needs a TransformerPolicyConfig, got {type(c).__name__}")
        self.encoder = _AppendDone(self.get_submodule("encoder"))
        self.transformer = TransformerMemory(
            input_width, c.d_model, c.n_layers, c.n_heads, c.window, c.max_episodes, c.ff_mult, c.normformer
        )

    @property
    def memory(self) -> RecurrentMemory:
        return self.transformer
