"""Aggregate scores across seeds: interquartile mean and stratified-bootstrap confidence intervals.

Follows rliable (Agarwal et al., 2021, "Deep RL at the Edge of the Statistical Precipice"):

* the IQM is the mean of the middle 50% of all run×task scores, with ``scipy.stats.trim_mean(x, 0.25)``
  semantics: after sorting, ``int(0.25 * n)`` values are dropped from each end;
* a stratified bootstrap replicate resamples the runs (rows) with replacement, independently for every
  task (column), so each task keeps its own number of runs and a task's scores never move to another task;
* the interval is the percentile interval of the statistic over the replicates.

Shapes: ``scores`` is ``[num_runs, num_tasks]`` (runs = seeds).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from metarl.errors import UserError, check_int

Statistic = Callable[[NDArray[np.float64]], float]
"""A function of a ``[num_runs, num_tasks]`` score matrix that returns one number."""


@dataclass(frozen=True)
class Interval:
    """A point estimate and its confidence interval ``[low, high]``."""

    point: float
    low: float
    high: float

    @property
    def width(self) -> float:
        return self.high - self.low

    def format(self, digits: int = 3) -> str:
        """``"0.512 [0.431, 0.598]"``."""
        return f"{self.point:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def _as_finite_array(values: ArrayLike, name: str) -> NDArray[np.float64]:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise UserError(f"{name} must be numbers, got {values!r} ({exc})") from exc
    if arr.size == 0:
        raise UserError(f"{name} is empty (shape {arr.shape}); give at least one score")
    if not np.all(np.isfinite(arr)):
        bad = arr[~np.isfinite(arr)].ravel()[0]
        raise UserError(f"{name} must be finite numbers, got {bad} among values of shape {arr.shape}")
    return arr


def _as_score_matrix(scores: ArrayLike) -> NDArray[np.float64]:
    arr = _as_finite_array(scores, "scores")
    if arr.ndim != 2:
        raise UserError(
            f"scores must be a 2-D array [num_runs, num_tasks], got shape {arr.shape}; "
            "for one task pass a column (x[:, None]), for one run a row (x[None, :])"
        )
    return arr


def iqm(values: ArrayLike) -> float:
    """Interquartile mean of all entries of ``values`` (any shape, flattened): ``trim_mean(x, 0.25)``.

    Sorts the ``n`` values, drops ``int(0.25 * n)`` from each end and averages the rest, so for
    ``n < 4`` it is the plain mean; e.g. ``iqm(1..8)`` is the mean of 3..6 = 4.5.
    """
    flat = _as_finite_array(values, "values").ravel()
    n = flat.size
    cut = int(0.25 * n)
    return float(np.mean(np.sort(flat)[cut : n - cut]))


def _mean(scores: NDArray[np.float64]) -> float:
    return float(np.mean(scores))


def _check_bootstrap_args(reps: Any, confidence: Any) -> None:
    check_int("reps", reps)
    if isinstance(confidence, bool) or not isinstance(confidence, numbers.Real) or not 0 < float(confidence) < 1:
        raise UserError(f"confidence must be a number in (0, 1), e.g. 0.95, got {confidence!r}")


def _percentile_interval(point: float, replicates: NDArray[np.float64], confidence: float) -> Interval:
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(replicates, [tail, 100.0 - tail], axis=0)
    return Interval(float(point), float(low), float(high))


def stratified_bootstrap_ci(
    scores: ArrayLike,
    statistic: Statistic,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Percentile confidence interval of ``statistic(scores)`` by stratified bootstrap (rliable).

    Args:
        scores: ``[num_runs, num_tasks]`` finite scores (e.g. per-task success of each seed).
        statistic: maps a ``[num_runs, num_tasks]`` matrix to a float (e.g. :func:`iqm`).
        reps: number of bootstrap replicates.
        confidence: coverage of the interval, in (0, 1).
        seed: seed of the generator that draws the replicates (same seed, same interval).

    Returns:
        ``Interval(point=statistic(scores), low, high)``.

    Each replicate draws, for every task column independently, ``num_runs`` row indices with replacement;
    all replicates are drawn and gathered at once (``[reps, num_runs, num_tasks]``).
    """
    matrix = _as_score_matrix(scores)
    _check_bootstrap_args(reps, confidence)
    runs, tasks = matrix.shape
    rng = np.random.default_rng(seed)
    rows_RNT = rng.integers(0, runs, size=(int(reps), runs, tasks))
    resampled_RNT = matrix[rows_RNT, np.arange(tasks)]
    replicates = np.fromiter((statistic(m) for m in resampled_RNT), dtype=np.float64, count=int(reps))
    return _percentile_interval(statistic(matrix), replicates, float(confidence))


def columnwise_mean_ci(scores: ArrayLike, reps: int = 2000, confidence: float = 0.95, seed: int = 0) -> list[Interval]:
    """For every column of ``scores`` ``[num_runs, num_columns]``, a bootstrap CI of the mean over runs.

    Same draws as :func:`stratified_bootstrap_ci` with ``statistic=np.mean`` on a single column, computed
    for all columns at once (used for the across-seed band of adaptation curves: one column per curve point).
    """
    matrix = _as_score_matrix(scores)
    _check_bootstrap_args(reps, confidence)
    runs, cols = matrix.shape
    rng = np.random.default_rng(seed)
    rows_RNC = rng.integers(0, runs, size=(int(reps), runs, cols))
    means_RC = matrix[rows_RNC, np.arange(cols)].mean(axis=1)
    tail = 100.0 * (1.0 - float(confidence)) / 2.0
    low_C, high_C = np.percentile(means_RC, [tail, 100.0 - tail], axis=0)
    point_C = matrix.mean(axis=0)
    return [Interval(float(p), float(lo), float(hi)) for p, lo, hi in zip(point_C, low_C, high_C, strict=True)]


def aggregate(scores: ArrayLike, reps: int = 2000, seed: int = 0, confidence: float = 0.95) -> dict[str, Interval]:
    """IQM and mean over all run×task entries of ``scores`` ``[num_runs, num_tasks]``, with stratified-bootstrap CIs.

    Returns ``{"iqm": Interval, "mean": Interval}``.
    """
    matrix = _as_score_matrix(scores)
    return {
        "iqm": stratified_bootstrap_ci(matrix, iqm, reps=reps, confidence=confidence, seed=seed),
        "mean": stratified_bootstrap_ci(matrix, _mean, reps=reps, confidence=confidence, seed=seed),
    }
