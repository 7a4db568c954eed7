"""Training curves: scalars vs env steps read from run directories (TensorBoard events, else progress.csv), one
line per label (the mean over its runs, the seeds) over thin lines of the single runs."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter, MaxNLocator
from numpy.typing import NDArray

from metarl.evaluation.report.format import check_groups, save_figure
from metarl.run import PROGRESS_FILE

ENV_STEPS_COLUMN = "charts/env_steps"
"""progress.csv column with the env steps of a row (the TensorBoard step)."""


@dataclass(frozen=True)
class _Series:
    """One run's scalar: ``steps[n]`` (env steps, increasing) and ``values[n]``."""

    steps: NDArray[np.float64]
    values: NDArray[np.float64]


def _series(pairs: Mapping[float, float]) -> _Series:
    steps = sorted(pairs)
    return _Series(np.asarray(steps, dtype=np.float64), np.asarray([pairs[s] for s in steps], dtype=np.float64))


def _read_events(run_dir: Path, tags: Sequence[str]) -> dict[str, _Series]:
    if not any(run_dir.glob("events.out.tfevents.*")):
        return {}
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    available = set(acc.Tags().get("scalars", []))
    out = {}
    for tag in tags:
        if tag in available:
            # a step logged twice (a resumed run) keeps its last value
            out[tag] = _series({float(e.step): float(e.value) for e in acc.Scalars(tag)})
    return out


def _read_progress_csv(run_dir: Path, tags: Sequence[str]) -> dict[str, _Series]:
    path = run_dir / PROGRESS_FILE
    if not path.is_file():
        return {}
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    out = {}
    for tag in tags:
        pairs: dict[float, float] = {}
        for row in rows:
            try:
                step, value = float(row[ENV_STEPS_COLUMN]), float(row[tag])
            except (KeyError, TypeError, ValueError):  # column absent or empty in this row
                continue
            if math.isfinite(step) and math.isfinite(value):
                pairs[step] = value
        if pairs:
            out[tag] = _series(pairs)
    return out


def _read_scalars(run_dir: Path, tags: Sequence[str]) -> dict[str, _Series]:
    """Scalars of ``run_dir`` by tag: TensorBoard events first, else the progress.csv column of the same name."""
    found = _read_events(Path(run_dir), tags)
    missing = [t for t in tags if t not in found]
    if missing:
        found.update(_read_progress_csv(Path(run_dir), missing))
    return found


def training_data(
    run_dirs: Mapping[str, Sequence[Path]], tags: Sequence[str]
) -> tuple[dict[str, dict[str, list[_Series]]], list[str]]:
    """``({tag: {label: [series per run]}}, notes)``; tags no run has are left out and named in the notes."""
    check_groups(run_dirs, "run directories")
    per_run = {label: [_read_scalars(Path(d), tags) for d in dirs] for label, dirs in run_dirs.items()}
    data: dict[str, dict[str, list[_Series]]] = {}
    notes = []
    for tag in tags:
        by_label = {label: [r[tag] for r in runs if tag in r] for label, runs in per_run.items()}
        by_label = {label: series for label, series in by_label.items() if series}
        if not by_label:
            notes.append(f"no run has training scalar {tag!r} (in TensorBoard events or progress.csv); not plotted")
            continue
        data[tag] = by_label
        for label, runs in per_run.items():
            have = len(by_label.get(label, []))
            if have < len(runs):
                notes.append(f"{tag!r}: {len(runs) - have} of {len(runs)} runs of {label!r} do not have it")
    return data, notes


def _mean_series(series: Sequence[_Series]) -> _Series | None:
    """Mean over runs on the union of their steps within the range all runs cover (None if they do not overlap)."""
    if len(series) == 1:
        return series[0]
    first = series[0].steps
    if all(s.steps.shape == first.shape and np.array_equal(s.steps, first) for s in series):
        return _Series(first, np.mean([s.values for s in series], axis=0))
    lo, hi = max(s.steps[0] for s in series), min(s.steps[-1] for s in series)
    grid = np.unique(np.concatenate([s.steps for s in series]))
    grid = grid[(grid >= lo) & (grid <= hi)]
    if grid.size == 0:
        return None
    return _Series(grid, np.mean([np.interp(grid, s.steps, s.values) for s in series], axis=0))


def plot_training_data(
    data: Mapping[str, Mapping[str, Sequence[_Series]]], path: Path, notes: list[str], labels: Sequence[str]
) -> Path:
    """One subplot per tag; ``labels`` fixes the colour order (the same as in the other figures of a comparison)."""
    tags = list(data)
    fig = Figure(figsize=(5.5 * len(tags), 4.2))
    axes: list[Axes] = list(np.atleast_1d(fig.subplots(1, len(tags))))
    for ax, tag in zip(axes, tags, strict=True):
        for label, runs in data[tag].items():
            color = f"C{labels.index(label) % 10}"
            if len(runs) > 1:
                for s in runs:
                    ax.plot(s.steps, s.values, color=color, alpha=0.25, lw=0.8)
            mean = _mean_series(runs)
            if mean is None:
                notes.append(f"{tag!r}: the runs of {label!r} cover disjoint env-step ranges; only runs plotted")
                continue
            ax.plot(mean.steps, mean.values, color=color, lw=1.8, label=f"{label} (n={len(runs)})")
        ax.set_title(tag)
        ax.set_xlabel("env steps")
        ax.xaxis.set_major_locator(MaxNLocator(5))
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))
        ax.set_ylabel(f"{tag} (mean over seeds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        if tag.endswith("success"):
            ax.set_ylim(-0.02, 1.02)
    fig.suptitle("Training curves (thin lines: single seeds)")
    return save_figure(fig, path)


def plot_training_curves(
    run_dirs: Mapping[str, Sequence[Path]], path: Path, tags: Sequence[str] = ("eval/success", "eval/return")
) -> list[str]:
    """Scalars vs env steps from run directories, one line per label: the mean over its runs (seeds).

    Reads each run's TensorBoard events (x = the event step, i.e. env steps); for a tag without events falls
    back to the progress.csv column of the same name (x = ``charts/env_steps``).  Returns notes on tags or
    runs that had no data; the figure is written only when at least one tag has data.
    """
    data, notes = training_data(run_dirs, tags)
    if data:
        plot_training_data(data, path, notes, list(run_dirs))
    else:
        notes.append(f"no training curves written to {str(path)!r}: none of the tags {list(tags)} was found")
    return notes
