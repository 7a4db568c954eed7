"""Figures of groups of results (one group per label, e.g. agent; one result per seed): the adaptation curve and
success per task (per family and sorted per task above ``MAX_TASK_BARS`` tasks).

Drawn with matplotlib's object API (``matplotlib.figure.Figure``, rendered by Agg): no display is needed and the
pyplot backend of the caller (a notebook, say) is left untouched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from numpy.typing import NDArray

from metarl.errors import UserError
from metarl.evaluation.report.format import (
    check_groups,
    common_prefix,
    curve,
    natural_key,
    save_figure,
    short_task_label,
    task_success,
    unit_words,
)
from metarl.evaluation.result import EvalResult
from metarl.evaluation.stats import columnwise_mean_ci

MAX_TASK_BARS = 24
"""Up to this many tasks the per-task figure draws one group of bars per task."""


def _curve_matrix(label: str, results: Sequence[EvalResult]) -> tuple[list[float], dict[str, NDArray[np.float64]]]:
    """``(x, {"success": [num_seeds, num_points], "return": ...})``; all seeds of a label must share ``x``."""
    curves = [curve(r) for r in results]
    xs = curves[0][0]
    for r, (x, _, _) in zip(results, curves, strict=True):
        if x != xs:
            raise UserError(
                f"the results of {label!r} have different adaptation curves (x = {xs} and x = {x} for seed "
                f"{r.seed}); a label groups seeds of one configuration"
            )
    return xs, {
        "success": np.asarray([c[1] for c in curves], dtype=np.float64),
        "return": np.asarray([c[2] for c in curves], dtype=np.float64),
    }


def plot_adaptation_curve(
    groups: Mapping[str, Sequence[EvalResult]], path: Path, reps: int = 2000, seed: int = 0
) -> Path:
    """Success and return vs adaptation, one line per label: the mean over its results (seeds).

    With two or more results a label gets a 95% percentile-bootstrap band over seeds at every curve point.
    Labels whose curves are in different units (RL² episodes vs MAML gradient steps) say so in the legend.
    """
    check_groups(groups, "EvalResults")
    units = {str(r.curve.get("unit", "episodes")) for rs in groups.values() for r in rs}
    fig = Figure(figsize=(11, 4.2))
    axes = fig.subplots(1, 2)
    for color_i, (label, results) in enumerate(groups.items()):
        unit = str(results[0].curve.get("unit", "episodes"))
        legend = f"{label} (n={len(results)})" + (f", x in {unit_words(unit)}" if len(units) > 1 else "")
        xs, values = _curve_matrix(label, results)
        for ax, key in zip(axes, ("success", "return"), strict=True):
            values_SP = values[key]
            color = f"C{color_i % 10}"
            ax.plot(xs, values_SP.mean(axis=0), marker="o", markersize=3, color=color, label=legend)
            if len(results) >= 2:
                band = columnwise_mean_ci(values_SP, reps=reps, seed=seed)
                ax.fill_between(xs, [b.low for b in band], [b.high for b in band], color=color, alpha=0.2, lw=0)
    xlabel = unit_words(units.pop()) if len(units) == 1 else "adaptation (episodes or gradient steps, see legend)"
    for ax, key in zip(axes, ("success", "return"), strict=True):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"{key} (mean over seeds)")
        ax.grid(alpha=0.3)
    axes[0].set_ylim(-0.02, 1.02)
    axes[0].legend(fontsize=8, loc="best")
    bands = any(len(results) >= 2 for results in groups.values())
    fig.suptitle(_groups_title(groups, "Adaptation curve") + (" (bands: 95% bootstrap CI over seeds)" if bands else ""))
    return save_figure(fig, path)


def _groups_title(groups: Mapping[str, Sequence[EvalResult]], what: str) -> str:
    names = sorted({f"{r.distribution} ({r.split})" for rs in groups.values() for r in rs})
    return f"{what}: {', '.join(names)}" if len(names) <= 2 else what


def _task_family(result: EvalResult, task_id: str) -> str:
    entry = result.per_task.get(task_id)
    family = entry.get("family") if isinstance(entry, Mapping) else None
    return str(family) if family is not None else (task_id.split("/")[2] if task_id.count("/") >= 2 else task_id)


def _plot_many_tasks(groups: Mapping[str, Sequence[EvalResult]], task_ids: Sequence[str], path: Path) -> Path:
    """Above ``MAX_TASK_BARS`` tasks: success per family (bars, mean over its tasks and the seeds) beside the
    distribution of per-task success (each label's tasks sorted from best to worst)."""
    families = sorted({_task_family(r, t) for rs in groups.values() for r in rs for t in r.per_task}, key=natural_key)
    n_fam, n_labels = len(families), len(groups)
    fam_w = min(max(3.5, 1.0 + n_fam * (0.3 + 0.12 * n_labels)), 18.0)
    fig = Figure(figsize=(fam_w + 5.5, 4.8))
    ax_fam, ax_dist = fig.subplots(1, 2, gridspec_kw={"width_ratios": [fam_w, 5.0]})
    bar_w = 0.8 / n_labels
    for i, (label, results) in enumerate(groups.items()):
        per_task = {
            tid: float(np.mean([task_success(r, tid) for r in results if tid in r.per_task]))
            for tid in task_ids
            if any(tid in r.per_task for r in results)
        }
        family_of = {t: _task_family(r, t) for r in results for t in r.per_task}
        means = [
            float(np.mean([v for t, v in per_task.items() if family_of[t] == f]))
            if any(family_of[t] == f for t in per_task)
            else np.nan
            for f in families
        ]
        color = f"C{i % 10}"
        ax_fam.bar(np.arange(n_fam) - 0.4 + bar_w * (i + 0.5), means, width=bar_w, color=color)
        ranked = sorted(per_task.values(), reverse=True)
        frac = (np.arange(len(ranked)) + 0.5) / len(ranked)
        ax_dist.step(frac, ranked, where="mid", color=color, label=f"{label} (n={len(results)}, {len(ranked)} tasks)")
    ax_fam.set_xticks(np.arange(n_fam))
    ax_fam.set_xticklabels([short_task_label(f, "") for f in families], rotation=45, ha="right", fontsize=8)
    ax_fam.set_xlim(-0.6, n_fam - 0.4)
    ax_fam.set_ylim(0, 1.05)
    ax_fam.set_ylabel("success (mean over tasks and seeds)")
    ax_fam.set_title("per family")
    ax_fam.grid(axis="y", alpha=0.3)
    ax_dist.set_xlim(0, 1)
    ax_dist.set_ylim(-0.02, 1.05)
    ax_dist.set_xlabel("fraction of tasks, best first")
    ax_dist.set_ylabel("success (mean over seeds)")
    ax_dist.set_title(f"per task, sorted ({len(task_ids)} tasks)")
    ax_dist.grid(alpha=0.3)
    ax_dist.legend(fontsize=8, loc="lower left")
    fig.suptitle(_groups_title(groups, "Success after adaptation"))
    return save_figure(fig, path)


def plot_per_task_success(groups: Mapping[str, Sequence[EvalResult]], path: Path) -> Path:
    """Grouped bars: per task (x, sorted by id), the success of each label averaged over its results (seeds).

    Above ``MAX_TASK_BARS`` tasks (point-nav's 100 goals, ML10's 5 × 50), bars per task are unreadable: the
    figure shows success per family and the sorted per-task success of each label instead."""
    check_groups(groups, "EvalResults")
    task_ids = sorted({t for rs in groups.values() for r in rs for t in r.per_task}, key=natural_key)
    if not task_ids:
        raise UserError("the EvalResults have no per_task entries to plot")
    if len(task_ids) > MAX_TASK_BARS:
        return _plot_many_tasks(groups, task_ids, path)
    n_tasks, n_labels = len(task_ids), len(groups)
    width_in = min(max(6.0, 1.5 + n_tasks * (0.22 + 0.1 * n_labels)), 40.0)
    fig = Figure(figsize=(width_in, 4.8))
    ax = fig.subplots()
    bar_w = 0.8 / n_labels
    centers = np.arange(n_tasks)
    for i, (label, results) in enumerate(groups.items()):
        means = []
        for tid in task_ids:
            values = [task_success(r, tid) for r in results if tid in r.per_task]
            means.append(float(np.mean(values)) if values else np.nan)
        offsets = centers - 0.4 + bar_w * (i + 0.5)
        ax.bar(offsets, means, width=bar_w, color=f"C{i % 10}", label=f"{label} (n={len(results)})")
    prefix = common_prefix(task_ids)
    ax.set_xticks(centers)
    ax.set_xticklabels([short_task_label(t, prefix) for t in task_ids], rotation=60, ha="right", fontsize=8)
    ax.set_xlim(-0.6, n_tasks - 0.4)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("success (mean over seeds)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    title = _groups_title(groups, "Success per task after adaptation")
    ax.set_title(title + (f" (task ids without {prefix!r})" if prefix else ""))
    return save_figure(fig, path)
