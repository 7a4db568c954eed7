"""The engine's call contract (:class:`Policy`, :class:`StepBatch`) and its output (:class:`Trajectories`).

Axis order everywhere: ``[task, episode, time, ...]``; suffixes in comments give shapes with
``N`` tasks, ``E`` episodes per task, ``H`` horizon (max episode steps), ``R`` active rows in one
policy call, ``S`` env slots, ``O`` observation dim and ``A`` action dim.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Protocol, runtime_checkable

import torch

from metarl.tasks import Task


@dataclass
class StepBatch:
    """What the engine gives a policy on one step: one row per active env slot, of any task.

    All tensors are on the policy's device.  Rows are in no particular order; a task may have
    zero, one or several rows.
    """

    obs: torch.Tensor  # [R, O] float32
    prev_action: torch.Tensor  # [R, A] float32, zeros at episode start
    prev_reward: torch.Tensor  # [R] float32, zero at episode start
    prev_done: torch.Tensor  # [R] bool: the previous step ended an episode of the same trial
    episode_start: torch.Tensor  # [R] bool: first step of an episode
    trial_start: torch.Tensor  # [R] bool: first step of a trial (reset recurrent state here)
    slot: torch.Tensor  # [R] int64: env-slot id, index into the per-slot policy state
    task: torch.Tensor  # [R] int64: index into the task list given to collect()
    noise: torch.Tensor  # [R, A] float32 standard normal, from per-(seed, task, episode) streams
    deterministic: bool = False  # evaluate the mean action (ignore noise)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _INPUT_FIELDS:  # a policy may rewrite a field (e.g. hide rewards): inputs() follows
            self.__dict__.pop("_inputs", None)
        object.__setattr__(self, name, value)

    def inputs(self) -> torch.Tensor:
        """``[R, O + A + 2]``: ``obs ⊕ prev_action ⊕ prev_reward ⊕ prev_done`` (as a float), what RL² feeds
        its recurrent core.  For a batch built by the engine on the CPU this is a view of the gathered
        rows (no copy, not contiguous); once any of those four fields is reassigned it is concatenated
        from them."""
        cached = self.__dict__.get("_inputs")
        if cached is None:
            cached = torch.cat(
                [self.obs, self.prev_action, self.prev_reward[:, None], self.prev_done[:, None].to(self.obs.dtype)],
                dim=1,
            )
            self.__dict__["_inputs"] = cached
        return cached


_INPUT_FIELDS = frozenset({"obs", "prev_action", "prev_reward", "prev_done"})


@runtime_checkable
class Policy(Protocol):
    """What the engine calls: one batched, no-grad call per step for every active slot."""

    device: torch.device

    def initial_state(self, num_slots: int) -> Any:
        """Per-slot recurrent state for ``num_slots`` slots (``None`` for feed-forward policies)."""
        ...

    def act(self, step: StepBatch, state: Any) -> tuple[torch.Tensor, Any, dict[str, torch.Tensor]]:
        """Return ``(action [R, A], new_state, extras)``; each extra is ``[R, ...]`` and is stored per step.

        Recurrent policies reset the state of rows where ``step.trial_start`` is set and update
        only the rows given (``step.slot`` indexes the state).
        """
        ...


@dataclass
class Trajectories:
    """Whole episodes of ``N`` tasks, ``E`` episodes each, padded to the horizon ``H``.

    Steps past an episode's end have ``valid == False`` and zero content.  ``terminated`` and
    ``truncated`` are kept apart: bootstrap from ``final_obs`` on truncation, not on termination.
    With trials, episodes ``e*k .. e*k + k-1`` of a task form trial ``e`` (``k`` = episodes_per_trial),
    all run in one slot with the policy state carried across them.
    """

    tasks: list[Task]  # N, in the order given to collect()
    obs: torch.Tensor  # [N, E, H, O] float32: observation the action was taken in
    actions: torch.Tensor  # [N, E, H, A] float32: the action the policy returned (before any env clipping)
    rewards: torch.Tensor  # [N, E, H] float32
    terminated: torch.Tensor  # [N, E, H] bool
    truncated: torch.Tensor  # [N, E, H] bool
    success: torch.Tensor  # [N, E, H] bool: info["success"] of that step
    valid: torch.Tensor  # [N, E, H] bool
    final_obs: torch.Tensor  # [N, E, O] float32: observation after each episode's last step
    lengths: torch.Tensor  # [N, E] int64
    episode_seeds: torch.Tensor  # [N, E] int64: the env seed each episode was reset with
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # each [N, E, H, ...]
    episodes_per_trial: int = 1

    @property
    def num_tasks(self) -> int:
        return int(self.obs.shape[0])

    @property
    def episodes_per_task(self) -> int:
        return int(self.obs.shape[1])

    @property
    def horizon(self) -> int:
        return int(self.obs.shape[2])

    @property
    def episode_success(self) -> torch.Tensor:  # [N, E] bool: success at any step of the episode
        return (self.success & self.valid).any(dim=-1)

    @property
    def episode_returns(self) -> torch.Tensor:  # [N, E] float32
        return (self.rewards * self.valid).sum(dim=-1)

    @property
    def num_steps(self) -> int:
        """Env steps taken (valid steps)."""
        return int(self.valid.sum())

    def to_state(self) -> dict[str, Any]:
        """Tensors, numbers and task ids only, as checkpoints hold them (``torch.load(weights_only=True)``)."""
        state: dict[str, Any] = {
            f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("tasks", "extras")
        }
        state["extras"] = dict(self.extras)
        state["task_ids"] = [t.id for t in self.tasks]
        return state

    @classmethod
    def from_state(cls, state: Mapping[str, Any], tasks: Sequence[Task]) -> Trajectories:
        """The inverse of :meth:`to_state`, given the tasks its ids name (checked)."""
        ids = [t.id for t in tasks]
        if list(state["task_ids"]) != ids:
            raise ValueError(f"trajectories are of tasks {list(state['task_ids'])}, not {ids}")
        kwargs = {k: v for k, v in state.items() if k != "task_ids"}
        return cls(tasks=list(tasks), **kwargs)
