"""The RL² policy wrapped for meta-tests and adaptation: evaluation episodes that restart from the adapted memory
state, the no-feedback control, the per-task final state recorder, and the adapted policy ``adapt()`` returns.

Each wrapper is a policy for ``engine.collect`` (``initial_state`` and ``act``) and reads the memory's state only
through :class:`~metarl.agents.rl2.memory.RecurrentMemory` (``gather``, ``scatter``, ``reset``).
"""

from __future__ import annotations

from typing import Any

import torch

from metarl.agents.rl2.memory import MemoryState
from metarl.agents.rl2.policy import RL2Policy
from metarl.rollout.types import StepBatch


class AdaptedStatePolicy:
    """An RL² policy for meta-tests: after ``k`` episodes of a trial, every later episode starts from the
    memory state reached at the end of episode ``k`` (the adapted state), not from where the previous
    evaluation episode left it.

    ``deterministic_eval``: the evaluation episodes (after the ``k`` adaptation episodes) take the mean
    action, the adaptation episodes stay sampled.  ``reward_feedback=False``: the previous reward enters
    the input as 0 in every episode of the trial (the no-feedback control).

    State per slot: (memory state, snapshot of the adapted state, episode number within the trial).
    """

    def __init__(
        self, policy: RL2Policy, k: int, reward_feedback: bool = True, deterministic_eval: bool = False
    ) -> None:
        self.policy = policy
        self.k = int(k)
        self.reward_feedback = reward_feedback
        self.deterministic_eval = deterministic_eval
        self.device = policy.device

    def initial_state(self, num_slots: int) -> tuple[MemoryState, MemoryState, torch.Tensor]:
        h = self.policy.initial_state(num_slots)
        snapshot = self.policy.initial_state(num_slots)
        return h, snapshot, torch.zeros(num_slots, dtype=torch.long, device=self.device)

    @torch.no_grad()
    def act(
        self, step: StepBatch, state: tuple[MemoryState, MemoryState, torch.Tensor]
    ) -> tuple[torch.Tensor, tuple[MemoryState, MemoryState, torch.Tensor], dict[str, torch.Tensor]]:
        memory = self.policy.memory
        hidden, snapshot, count = state
        c, count = _count_episodes(count, step, first=1)
        first_eval = step.episode_start & (c == self.k + 1)  # the adapted state: snapshot it
        adapted = memory.reset(memory.gather(hidden, step.slot), step.trial_start)
        snapshot = memory.scatter(snapshot, step.slot[first_eval], memory.gather(adapted, first_eval.nonzero()[:, 0]))
        later = step.episode_start & (c > self.k + 1)  # later evaluation episodes: restore it
        hidden = memory.scatter(hidden, step.slot[later], memory.gather(snapshot, step.slot[later]))
        if not self.reward_feedback:
            step.prev_reward = torch.zeros_like(step.prev_reward)
        if self.deterministic_eval and not step.deterministic:
            step.noise = torch.where((c > self.k).unsqueeze(-1), torch.zeros_like(step.noise), step.noise)
        action, hidden, extras = self.policy.act(step, hidden)
        return action, (hidden, snapshot, count), extras


def _count_episodes(count: torch.Tensor, step: StepBatch, first: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's episode number within its trial (``first`` at a trial's start, one more at each episode
    start) and the per-slot ``count`` updated with it."""
    c = count[step.slot]
    c = torch.where(step.trial_start, torch.full_like(c, first), torch.where(step.episode_start, c + 1, c))
    return c, count.index_copy(0, step.slot, c)


class _FinalHidden:
    """The RL² policy, recording each task's memory state after its latest step (``final[task]``)."""

    def __init__(self, policy: RL2Policy, num_tasks: int) -> None:
        self.policy = policy
        self.device = policy.device
        self.final = policy.initial_state(num_tasks)

    def initial_state(self, num_slots: int) -> MemoryState:
        return self.policy.initial_state(num_slots)

    @torch.no_grad()
    def act(self, step: StepBatch, state: MemoryState) -> tuple[torch.Tensor, MemoryState, dict[str, torch.Tensor]]:
        memory = self.policy.memory
        action, state, extras = self.policy.act(step, state)
        self.final = memory.scatter(self.final, step.task, memory.gather(state, step.slot))
        return action, state, extras


class AdaptedRL2Policy:
    """What :meth:`RL2Agent.adapt` returns: for ``engine.collect`` on the same task list, every episode of
    task ``i`` starts from ``hidden[i]`` (the memory state after its adaptation episodes) with the done flag set,
    exactly as the evaluation episodes of a meta-test start; without adaptation (``adapted=False``) from a
    fresh trial.  ``act`` takes the engine's ``deterministic`` (evaluation on the mean action) as given."""

    def __init__(self, policy: RL2Policy, hidden: MemoryState, *, adapted: bool = True) -> None:
        self.policy = policy
        self.device = policy.device
        self.hidden = hidden
        self.adapted = adapted

    def initial_state(self, num_slots: int) -> MemoryState:
        return self.policy.initial_state(num_slots)

    @torch.no_grad()
    def act(self, step: StepBatch, state: MemoryState) -> tuple[torch.Tensor, Any, dict[str, torch.Tensor]]:
        if self.adapted:
            memory = self.policy.memory
            start = step.episode_start
            state = memory.scatter(state, step.slot[start], memory.gather(self.hidden, step.task[start]))
            step.prev_done = step.prev_done | start
            step.trial_start = torch.zeros_like(step.trial_start)
        return self.policy.act(step, state)
