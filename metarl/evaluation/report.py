"""Reports of meta-test results: Markdown for one EvalResult, PNG figures, and comparisons across runs.

* :func:`render_markdown` / :func:`write_eval_report`: one evaluation (``report.md``, ``curve.png``, ``per_task.png``).
* :func:`plot_adaptation_curve`, :func:`plot_per_task_success`, :func:`plot_training_curves`: figures of groups of
  results (one group per label, e.g. agent; one result per seed).

`metarl compare` (:mod:`metarl.evaluation.compare`) builds its tables on these figures and helpers.

Figures are drawn with matplotlib's object API (``matplotlib.figure.Figure``, rendered by Agg): no display is
needed and the pyplot backend of the caller (a notebook, say) is left untouched.  Files are written atomically.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter, MaxNLocator
from numpy.typing import NDArray

from metarl.errors import UserError
from metarl.evaluation.result import EvalResult
from metarl.evaluation.stats import columnwise_mean_ci
from metarl.run import PROGRESS_FILE, atomic_write_bytes

ENV_STEPS_COLUMN = "charts/env_steps"
"""progress.csv column with the env steps of a row (the TensorBoard step)."""

_UNIT_WORDS = {"episodes": "adaptation episodes", "gradient_steps": "gradient steps"}
_DPI = 110
MAX_TASK_BARS = 24
"""Up to this many tasks the per-task figure draws one group of bars per task."""
_MAX_LABEL_CHARS = 28


# ----------------------------------------------------------------------------------------------- small helpers


def _num(value: Any) -> str:
    """A number for a table: 3 decimals below 100, one decimal with thousands separators above."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(v):
        return "n/a"
    return f"{v:,.1f}" if abs(v) >= 100 else f"{v:.3f}"


def _cell(text: Any) -> str:
    """Text safe inside a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def natural_key(text: str) -> list[Any]:
    """Sort key that orders ``.../7`` before ``.../10``."""
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", text)]


def _unit_words(unit: Any) -> str:
    return _UNIT_WORDS.get(str(unit), str(unit).replace("_", " "))


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "benchmark"


def write_text(path: Path, text: str) -> Path:
    atomic_write_bytes(Path(path), text.encode())
    return Path(path)


def _save_figure(fig: Figure, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, bbox_inches="tight")
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)


def _short_task_label(task_id: str, prefix: str) -> str:
    """``task_id`` without ``prefix``, shortened in the middle so that its ``/index`` end stays readable."""
    label = task_id[len(prefix) :] if prefix and task_id.startswith(prefix) else task_id
    if len(label) <= _MAX_LABEL_CHARS:
        return label
    tail = label[label.rfind("/") :] if "/" in label else ""
    if len(tail) > _MAX_LABEL_CHARS // 2:
        tail = label[-(_MAX_LABEL_CHARS // 2) :]
    return label[: _MAX_LABEL_CHARS - 1 - len(tail)] + "…" + tail


def _common_prefix(task_ids: Sequence[str]) -> str:
    """The ``distribution/split/`` start all task ids share (``""`` if they do not), dropped from plot labels."""
    heads = {"/".join(t.split("/")[:2]) + "/" for t in task_ids if t.count("/") >= 2}
    return heads.pop() if len(heads) == 1 and all(t.count("/") >= 2 for t in task_ids) else ""


def _numbers(values: Any) -> list[float] | None:
    """``values`` as a list of floats, or None when it is not a list of numbers."""
    if not isinstance(values, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return None
    return [float(v) for v in values]


def _curve(result: EvalResult) -> tuple[list[float], list[float], list[float]]:
    """``(x, success, return)`` of the adaptation curve, checked to be lists of numbers of one length."""
    xs, succ, ret = (_numbers(result.curve.get(key)) for key in ("x", "success", "return"))
    if not xs or succ is None or ret is None or not len(xs) == len(succ) == len(ret):
        given = {key: result.curve.get(key) for key in ("x", "success", "return")}
        raise UserError(
            f"EvalResult of {result.agent!r} on {result.distribution!r} has a bad adaptation curve {given}; "
            "valid curves have non-empty lists of numbers x, success and return of one length"
        )
    return xs, succ, ret


def _x_text(x: float) -> str:
    return str(int(x)) if x.is_integer() else f"{x:g}"


def _task_success(result: EvalResult, task_id: str, key: str = "success") -> float:
    entry = result.per_task.get(task_id)
    value = entry.get(key) if isinstance(entry, Mapping) else None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise UserError(
            f"EvalResult of {result.agent!r} on {result.distribution!r}: per_task[{task_id!r}][{key!r}] is "
            f"{value!r}; it must be a finite number"
        )
    return float(value)


# ----------------------------------------------------------------------------------------------- one result


def _protocol_sentence(result: EvalResult) -> str:
    n_tasks = len(result.per_task)
    budget = _x_text(max(_curve(result)[0]))
    unit = str(result.curve.get("unit", "episodes"))
    evals = result.eval_episodes_per_task
    if unit == "gradient_steps":
        adapt = (
            f"was adapted with up to {budget} gradient steps (each step on {max(result.adaptation_episodes, 1)} "
            f"fresh episodes of the task), and at every point of the curve {evals} evaluation episodes were run"
        )
    else:
        adapt = (
            f"was given up to {budget} {_unit_words(unit)}, followed by {evals} evaluation episodes "
            "(point k of the curve is measured after k adaptation episodes; its last point on the evaluation episodes)"
        )
    return (
        f"Each of the {n_tasks} {result.split}-split tasks {adapt}. "
        "Success means the task was solved at any step of an episode; success and return are averaged over "
        "the evaluation episodes of each task, then over tasks (success is a fraction in [0, 1])."
    )


def _training_sentence(result: EvalResult) -> str:
    if result.env_steps == 0:
        return (
            "No meta-training behind this result (env_steps = 0: an untrained agent, or a baseline that trains only "
            f"on the test tasks); evaluation seed {result.seed}."
        )
    return f"The agent was meta-trained for {result.env_steps:,} environment steps; evaluation seed {result.seed}."


def render_markdown(result: EvalResult) -> str:
    """A Markdown report of one meta-test: protocol, headline, adaptation curve, per-family and per-task tables."""
    unit = str(result.curve.get("unit", "episodes"))
    xs, succ, ret = _curve(result)
    lines = [
        f"# Meta-test: {result.distribution} ({result.split} split), agent `{result.agent}`",
        "",
        _protocol_sentence(result),
        _training_sentence(result),
        "",
        f"**Success {_num(result.success_mean)}**, **return {_num(result.return_mean)}** "
        f"(mean over {len(result.per_task)} tasks after the full adaptation budget).",
    ]
    lines.append(f"Before any adaptation: success {_num(succ[0])}, return {_num(ret[0])}.")
    lines += ["", "## Adaptation curve", "", f"Point x = after x {_unit_words(unit)}; x = 0 is before adaptation.", ""]
    lines += md_table(
        [_unit_words(unit), "success", "return"],
        [(_x_text(x), _num(s), _num(r)) for x, s, r in zip(xs, succ, ret, strict=True)],
    )
    tasks_per_family: dict[str, int] = {}
    for entry in result.per_task.values():
        if isinstance(entry, Mapping) and "family" in entry:
            tasks_per_family[str(entry["family"])] = tasks_per_family.get(str(entry["family"]), 0) + 1
    lines += ["", "## Per family", ""]
    lines += md_table(
        ["family", "tasks", "success", "return"],
        [
            (fam, tasks_per_family.get(fam, ""), _num(v.get("success")), _num(v.get("return")))
            for fam, v in sorted(result.per_family.items(), key=lambda kv: natural_key(kv[0]))
        ],
    )
    lines += ["", "## Per task", ""]
    lines += md_table(
        ["task", "family", "success", "return"],
        [
            (tid, v.get("family", ""), _num(v.get("success")), _num(v.get("return")))
            for tid, v in sorted(result.per_task.items(), key=lambda kv: natural_key(kv[0]))
        ],
    )
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------- figures


def _check_groups(groups: Mapping[str, Sequence[Any]], what: str) -> None:
    if not groups:
        raise UserError(f"no {what} to plot: give a mapping label -> non-empty list")
    empty = [label for label, items in groups.items() if not items]
    if empty:
        raise UserError(f"labels {empty} have no {what}; every label needs at least one")


def _curve_matrix(label: str, results: Sequence[EvalResult]) -> tuple[list[float], dict[str, NDArray[np.float64]]]:
    """``(x, {"success": [num_seeds, num_points], "return": ...})``; all seeds of a label must share ``x``."""
    curves = [_curve(r) for r in results]
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
    _check_groups(groups, "EvalResults")
    units = {str(r.curve.get("unit", "episodes")) for rs in groups.values() for r in rs}
    fig = Figure(figsize=(11, 4.2))
    axes = fig.subplots(1, 2)
    for color_i, (label, results) in enumerate(groups.items()):
        unit = str(results[0].curve.get("unit", "episodes"))
        legend = f"{label} (n={len(results)})" + (f", x in {_unit_words(unit)}" if len(units) > 1 else "")
        xs, values = _curve_matrix(label, results)
        for ax, key in zip(axes, ("success", "return"), strict=True):
            values_SP = values[key]
            color = f"C{color_i % 10}"
            ax.plot(xs, values_SP.mean(axis=0), marker="o", markersize=3, color=color, label=legend)
            if len(results) >= 2:
                band = columnwise_mean_ci(values_SP, reps=reps, seed=seed)
                ax.fill_between(xs, [b.low for b in band], [b.high for b in band], color=color, alpha=0.2, lw=0)
    xlabel = _unit_words(units.pop()) if len(units) == 1 else "adaptation (episodes or gradient steps, see legend)"
    for ax, key in zip(axes, ("success", "return"), strict=True):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"{key} (mean over seeds)")
        ax.grid(alpha=0.3)
    axes[0].set_ylim(-0.02, 1.02)
    axes[0].legend(fontsize=8, loc="best")
    bands = any(len(results) >= 2 for results in groups.values())
    fig.suptitle(_groups_title(groups, "Adaptation curve") + (" (bands: 95% bootstrap CI over seeds)" if bands else ""))
    return _save_figure(fig, path)


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
            tid: float(np.mean([_task_success(r, tid) for r in results if tid in r.per_task]))
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
    ax_fam.set_xticklabels([_short_task_label(f, "") for f in families], rotation=45, ha="right", fontsize=8)
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
    return _save_figure(fig, path)


def plot_per_task_success(groups: Mapping[str, Sequence[EvalResult]], path: Path) -> Path:
    """Grouped bars: per task (x, sorted by id), the success of each label averaged over its results (seeds).

    Above ``MAX_TASK_BARS`` tasks (point-nav's 100 goals, ML10's 5 × 50), bars per task are unreadable: the
    figure shows success per family and the sorted per-task success of each label instead."""
    _check_groups(groups, "EvalResults")
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
            values = [_task_success(r, tid) for r in results if tid in r.per_task]
            means.append(float(np.mean(values)) if values else np.nan)
        offsets = centers - 0.4 + bar_w * (i + 0.5)
        ax.bar(offsets, means, width=bar_w, color=f"C{i % 10}", label=f"{label} (n={len(results)})")
    prefix = _common_prefix(task_ids)
    ax.set_xticks(centers)
    ax.set_xticklabels([_short_task_label(t, prefix) for t in task_ids], rotation=60, ha="right", fontsize=8)
    ax.set_xlim(-0.6, n_tasks - 0.4)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("success (mean over seeds)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    title = _groups_title(groups, "Success per task after adaptation")
    ax.set_title(title + (f" (task ids without {prefix!r})" if prefix else ""))
    return _save_figure(fig, path)


# ----------------------------------------------------------------------------------------------- training curves


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
    _check_groups(run_dirs, "run directories")
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
    return _save_figure(fig, path)


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


# ----------------------------------------------------------------------------------------------- one result, files


def write_eval_report(result: EvalResult, out_dir: Path) -> list[Path]:
    """Write ``report.md``, ``curve.png`` and ``per_task.png`` into ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    groups = {result.agent: [result]}
    return [
        write_text(out_dir / "report.md", render_markdown(result)),
        plot_adaptation_curve(groups, out_dir / "curve.png"),
        plot_per_task_success(groups, out_dir / "per_task.png"),
    ]
