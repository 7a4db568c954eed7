"""Progress bar for training runs: env steps, steps/s, ETA, latest return and success."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any


class ProgressBar:
    """A tqdm bar over env steps (or iterations when no step budget is set); silent when disabled."""

    def __init__(self, cfg: Any, state: Any, *, enabled: bool = True) -> None:
        self._bar: Any = None
        if not enabled:
            return
        from tqdm.auto import tqdm

        if cfg.total_env_steps is not None:
            self._unit, total, initial = "steps", cfg.total_env_steps, state.env_steps
        else:
            self._unit, total, initial = "it", cfg.iterations, state.iteration
        self._bar = tqdm(
            total=total, initial=initial, unit=self._unit, unit_scale=True, dynamic_ncols=True,
            file=sys.stderr, desc=f"{cfg.agent} {cfg.benchmark}", smoothing=0.1,
        )  # fmt: skip

    def update(self, state: Any, metrics: Mapping[str, float]) -> None:
        if self._bar is None:
            return
        target = state.env_steps if self._unit == "steps" else state.iteration
        self._bar.update(target - self._bar.n)
        post = {"it": state.iteration}
        for key, short in (("charts/episode_return", "ret"), ("charts/success_rate", "succ"), ("eval/success", "test")):
            if key in metrics:
                post[short] = f"{metrics[key]:.3g}"
        self._bar.set_postfix(post, refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
