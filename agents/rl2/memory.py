"""The recurrent memory of the RL² policy behind a small interface, so a non-GRU memory (a transformer over the
trial, issue 35) can take the GRU's place without touching the PPO over trial chunks.

What the rest of RL² asks of a memory:

- **per slot, in the engine's one batched call per step**: a state for every env slot (:meth:`initial_state`), the
  rows of the slots that act this step (:meth:`gather`), written back after the step (:meth:`scatter`), and reset
  where a trial starts (:meth:`reset`); :meth:`step` advances R rows by one step;
- **over trial chunks, in the update**: :meth:`sequence` runs C steps of B sequences from their states at the
  chunk's start and returns the outputs and a trace, from which :meth:`handover` takes the state after any step of
  the chunk: the state the next chunk starts from (truncated BPTT: without gradient).  The GRU's state after step
  t is its output there; a cache-based memory returns its cache as the trace.

A new memory implements these methods and a policy subclass creates it in ``RL2Policy._build_memory`` and returns
it from :attr:`RL2Policy.memory <metarl.agents.rl2.policy.RL2Policy.memory>` (registered under its own attribute
name: ``gru`` stays the GRU's, so RL² checkpoints keep their keys); an agent subclass of ``RL2Agent`` names that
policy in ``policy_class`` (``metarl.agents.rl2_transformer`` does both); the sequential update order (the
default) and the wrappers of :mod:`metarl.agents.rl2.adapted` then work unchanged.  The shuffled order stacks the
states at chunk starts (:func:`metarl.agents.rl2.trials.chunk_starts_hidden`), so it needs a tensor state of width
:attr:`width`.

Shapes: ``S`` slots, ``R`` rows acting this step, ``C`` chunk length, ``B`` sequences, ``D`` input width, ``W``
the memory's output width (:attr:`width`).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from metarl.agents.gru import gru_sequence

MemoryState = Any
"""A memory's state for a batch of slots or sequences: a tensor [S, ...] for the GRU, any structure of tensors
with the slot axis first for others."""


@runtime_checkable
class RecurrentMemory(Protocol):
    """What the RL² policy and its update need from the memory between the encoder and the heads."""

    @property
    def width(self) -> int:
        """W, the width of the outputs the heads read."""
        ...

    def initial_state(self, num_slots: int, device: torch.device) -> MemoryState:
        """The state of ``num_slots`` fresh trials (nothing seen yet)."""
        ...

    def gather(self, state: MemoryState, index: torch.Tensor) -> MemoryState:
        """The rows ``index`` [R] of ``state``."""
        ...

    def scatter(self, state: MemoryState, index: torch.Tensor, rows: MemoryState) -> MemoryState:
        """``state`` with rows ``index`` [R] replaced by ``rows`` (a new state; the old one is left as it was)."""
        ...

    def reset(self, rows: MemoryState, mask: torch.Tensor) -> MemoryState:
        """``rows`` with the rows where ``mask`` [R] is set back at a fresh trial's state."""
        ...

    def step(self, x: torch.Tensor, rows: MemoryState) -> tuple[torch.Tensor, MemoryState]:
        """One step of R rows: inputs [R, D] → outputs [R, W] and the rows' next state."""
        ...

    def sequence(self, x: torch.Tensor, state: MemoryState) -> tuple[torch.Tensor, Any]:
        """C steps of B sequences from ``state`` (their states before step 0): inputs [C, B, D] → outputs [C, B, W]
        and a trace for :meth:`handover`, with gradient to the memory's parameters and to ``x``."""
        ...

    def handover(self, trace: Any, t: int) -> MemoryState:
        """The state after step ``t`` of a :meth:`sequence` call, detached: where the next chunk starts."""
        ...


class GRUMemory(nn.GRU):
    """A one-layer GRU as :class:`RecurrentMemory`: the state of a slot is its hidden vector [G].

    An ``nn.GRU`` itself, so the policy's checkpoint keys (``gru.weight_ih_l0``, ...) and initialisation are
    those of the GRU it replaced.  On the CPU the sequence pass runs :func:`metarl.agents.gru.gru_sequence`
    (the same function with a fused backward); on CUDA ``nn.GRU`` runs cuDNN's fused kernels.
    """

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__(input_size, hidden_size)

    @property
    def width(self) -> int:
        return int(self.hidden_size)

    def initial_state(self, num_slots: int, device: torch.device) -> torch.Tensor:  # [S, G]
        return torch.zeros(num_slots, self.hidden_size, device=device)

    def gather(self, state: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return state[index]

    def scatter(self, state: torch.Tensor, index: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return state.index_copy(0, index, rows)

    def reset(self, rows: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.where(mask.unsqueeze(-1), torch.zeros_like(rows), rows)

    def step(self, x: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out, h_new = self(x.unsqueeze(0), rows.unsqueeze(0))
        return out[0], h_new[0]

    def sequence(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.device.type == "cpu":  # the same GRU with a fused backward (metarl.agents.gru): fewer calls per step
            out = gru_sequence(self, x, state)
        else:  # CUDA: nn.GRU runs cuDNN's fused kernels
            out, _ = self(x, state.unsqueeze(0))
        return out, out

    def handover(self, trace: torch.Tensor, t: int) -> torch.Tensor:
        return trace[t].detach()
