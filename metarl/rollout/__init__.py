"""Rollout engine: process workers over shared memory, one batched policy call per step."""

from metarl.rollout.types import Policy, StepBatch, Trajectories

__all__ = ["Policy", "StepBatch", "Trajectories"]
