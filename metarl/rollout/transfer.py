"""Moving one policy call's rows between host numpy arrays and the policy's device.

The driver gathers a policy batch as one ``[R, K]`` float32 array of input rows (columns in
:class:`~metarl.rollout.shm.Cols`) plus the rows' noise ``[R, A]``; the :class:`StepBatch`
fields are views of it.

* :class:`HostTransfer` (CPU policies): ``torch.from_numpy`` on the gathered rows, no copies.
* :class:`PackedTransfer` (CUDA policies): rows and noise are written into one pinned host
  buffer and moved with a single host→device copy, then sliced on the device; the action and every
  float32 extra are concatenated on the device and moved back with a single device→host copy into
  a pinned buffer.  Extras of other dtypes (rare) travel on their own.
"""

from __future__ import annotations

import numpy as np
import torch

from metarl.rollout.shm import Cols
from metarl.rollout.types import StepBatch


def split_rows(t: torch.Tensor, noise: torch.Tensor, cols: Cols, deterministic: bool) -> StepBatch:
    """The :class:`StepBatch` whose fields are views (or small conversions) of input rows ``t``."""
    step = StepBatch(
        obs=t[:, : cols.obs_dim],
        prev_action=t[:, cols.action],
        prev_reward=t[:, cols.reward],
        prev_done=t[:, cols.prev_done] > 0.5,
        episode_start=t[:, cols.episode_start] > 0.5,
        trial_start=t[:, cols.trial_start] > 0.5,
        slot=t[:, cols.slot].long(),
        task=t[:, cols.task].long(),
        noise=noise,
        deterministic=deterministic,
    )
    step.__dict__["_inputs"] = t[:, : cols.prev_done + 1]
    return step


class RowStepBatch(StepBatch):
    """A :class:`StepBatch` over gathered input rows (numpy, CPU) whose fields are made on first access.

    Most policies read two or three fields; making the others costs more than the policy call's
    arithmetic on this class of machine (every driver operation runs with cold caches).  Reading a
    field gives the same tensor as the eager construction would; assigning one works as usual.
    """

    @classmethod
    def from_rows(cls, rows: np.ndarray, noise: np.ndarray, cols: Cols, deterministic: bool) -> RowStepBatch:
        self = object.__new__(cls)
        d = self.__dict__
        d["_rows"], d["_noise"], d["_cols"] = rows, noise, cols
        d["deterministic"] = deterministic
        d["_inputs"] = torch.from_numpy(rows[:, : cols.prev_done + 1])
        return self

    def __getattr__(self, name: str) -> torch.Tensor:  # only called for attributes not yet made
        make = _ROW_FIELDS.get(name)
        d = self.__dict__
        if make is None or "_rows" not in d:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        value = make(d["_rows"], d["_noise"], d["_cols"])
        d[name] = value
        return value


_ROW_FIELDS = {
    "obs": lambda r, n, c: torch.from_numpy(np.ascontiguousarray(r[:, : c.obs_dim])),
    "prev_action": lambda r, n, c: torch.from_numpy(np.ascontiguousarray(r[:, c.action])),
    "prev_reward": lambda r, n, c: torch.from_numpy(r[:, c.reward]),
    "prev_done": lambda r, n, c: torch.from_numpy(r[:, c.prev_done] > 0.5),
    "episode_start": lambda r, n, c: torch.from_numpy(r[:, c.episode_start] > 0.5),
    "trial_start": lambda r, n, c: torch.from_numpy(r[:, c.trial_start] > 0.5),
    "slot": lambda r, n, c: torch.from_numpy(r[:, c.slot].astype(np.int64)),
    "task": lambda r, n, c: torch.from_numpy(r[:, c.task].astype(np.int64)),
    "noise": lambda r, n, c: torch.from_numpy(n),
}


class HostTransfer:
    """Zero-copy wrapping for policies on the CPU; each field is made when the policy first reads it."""

    def __init__(self, device: torch.device, cols: Cols) -> None:
        self.device = device
        self.cols = cols

    def step_batch(self, rows: np.ndarray, noise: np.ndarray, deterministic: bool) -> StepBatch:
        return RowStepBatch.from_rows(rows, noise, self.cols, deterministic)

    def to_host(
        self, action: torch.Tensor, extras: dict[str, torch.Tensor]
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        a = action.detach()
        if a.device.type != "cpu":
            a = a.cpu()
        if a.dtype != torch.float32:
            a = a.float()
        out = {}
        for k, v in extras.items():
            v = v.detach()
            out[k] = (v if v.device.type == "cpu" else v.cpu()).numpy()
        return a.numpy(), out


class PackedTransfer:
    """One host→device and one device→host copy per policy call, through pinned buffers.

    ``pin=False`` allows exercising the packing on CPU-only machines (tests).
    """

    def __init__(self, device: torch.device, max_rows: int, cols: Cols, pin: bool) -> None:
        self.device = device
        self.cols = cols
        self.pin = pin
        self._width = cols.width
        self._host_in = torch.empty((max_rows, cols.width + cols.act_dim), dtype=torch.float32, pin_memory=pin)
        self._host_in_np = self._host_in.numpy()
        self._host_out: torch.Tensor | None = None

    @property
    def pinned(self) -> bool:
        """Whether the host buffers are page-locked (pinned) memory."""
        return bool(self._host_in.is_pinned())

    def step_batch(self, rows: np.ndarray, noise: np.ndarray, deterministic: bool) -> StepBatch:
        r = rows.shape[0]
        h = self._host_in_np
        h[:r, : self._width] = rows
        h[:r, self._width :] = noise
        d = self._host_in[:r].to(self.device, non_blocking=self.pin, copy=True)
        return split_rows(d, d[:, self._width :], self.cols, deterministic)

    def to_host(
        self, action: torch.Tensor, extras: dict[str, torch.Tensor]
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        r = action.shape[0]
        packed: list[torch.Tensor] = [action.detach().float().reshape(r, -1)]
        shapes: list[tuple[str, tuple[int, ...], int]] = []
        others: dict[str, torch.Tensor] = {}
        for k, v in extras.items():
            v = v.detach()
            if v.dtype == torch.float32 and v.shape[:1] == (r,):
                flat = v.reshape(r, -1)
                packed.append(flat)
                shapes.append((k, tuple(v.shape[1:]), flat.shape[1]))
            else:
                others[k] = v
        cat = torch.cat(packed, dim=1) if len(packed) > 1 else packed[0]
        width = cat.shape[1]
        if self._host_out is None or self._host_out.shape[0] < r or self._host_out.shape[1] < width:
            rows = max(r, self._host_in.shape[0])
            self._host_out = torch.empty((rows, width), dtype=torch.float32, pin_memory=self.pin)
        host = self._host_out[:r, :width]
        host.copy_(cat, non_blocking=self.pin)
        if self.pin and self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()
        out_np = host.numpy()
        a_width = packed[0].shape[1]
        act = out_np[:, :a_width].copy()
        extras_np: dict[str, np.ndarray] = {}
        col = a_width
        for k, shape, w in shapes:
            extras_np[k] = out_np[:, col : col + w].reshape((r, *shape)).copy()
            col += w
        for k, v in others.items():
            extras_np[k] = v.cpu().numpy()
        return act, extras_np
