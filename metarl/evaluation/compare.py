"""`metarl compare`: evaluated runs side by side, seeds pooled only where they are seeds of one thing.

A row pools the results that share agent, named config, the settings the run changed from that config (read from a
run directory's ``config.json``: a ``--target-kl 0.02`` run is not another seed of the config), protocol
(mean-action or sampled evaluation episodes), reward feedback (the no-feedback control is its own, labelled row),
env-step budget and episode counts; every other result gets its own row. Besides EvalResult files and run
directories, compare reads the learning benchmark's result JSONs (:mod:`metarl.evaluation.benchmark_json`); results
it would pool must then also agree on the run settings those record (overrides, success reward, meta-batch, ...)
and be of distinct training seeds, or compare refuses them, naming the setting that differs. Where a row and its
control row hold the same training seeds, the gap between them (success with feedback minus without, per seed) gets
its own interval. Each row's success IQM and mean over the ``[runs, families]`` score matrix carry 95%
stratified-bootstrap intervals (rliable's method, :mod:`metarl.evaluation.stats`). Whatever compare did that a
reader could not guess (a result read from the last periodic evaluation, an agent split over several rows, families
left out) is said in ``compare.md`` and handed to ``say``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from metarl.errors import UserError
from metarl.evaluation.benchmark_json import UNKNOWN_BEFORE, benchmark_results, is_benchmark_result
from metarl.evaluation.report import (
    md_table,
    natural_key,
    plot_adaptation_curve,
    plot_per_task_success,
    plot_training_data,
    slug,
    training_data,
    write_text,
)
from metarl.evaluation.result import EvalResult, load_eval_result, protocol_name
from metarl.evaluation.stats import Interval, aggregate, stratified_bootstrap_ci
from metarl.overrides import recorded_overrides
from metarl.run import CONFIG_FILE, EVAL_DIR, FINAL_EVAL, LATEST_EVAL

UNRECORDED = "not recorded"


@dataclass(frozen=True)
class RowKey:
    """What results must share to be pooled as seeds of one row."""

    agent: str
    config: str
    protocol: str
    feedback: bool
    env_steps: int
    adaptation_episodes: int
    eval_episodes: int
    overrides: str
    """The settings the run changed from its named config (``FIELD=VALUE``, comma-separated), or ``none``."""

    @property
    def label(self) -> str:
        return self.agent if self.feedback else f"{self.agent} (control: no reward feedback)"

    @property
    def config_text(self) -> str:
        """The named config and the settings the run changed from it."""
        return self.config if self.overrides in ("none", UNRECORDED) else f"{self.config} + {self.overrides}"

    def differences(self, other: RowKey) -> list[str]:
        names = {"config": "config", "overrides": "settings changed from the config", "protocol": "protocol",
                 "feedback": "reward feedback", "env_steps": "env steps",
                 "adaptation_episodes": "adaptation episodes", "eval_episodes": "evaluation episodes"}  # fmt: skip
        return [words for field, words in names.items() if getattr(self, field) != getattr(other, field)]


def result_protocol(result: EvalResult) -> str:
    """The protocol a result records; results written before it was recorded fall back on ``deterministic``."""
    if isinstance(result.extra.get("protocol"), str):
        return str(result.extra["protocol"])
    if isinstance(result.extra.get("deterministic"), bool):
        return protocol_name(result.extra["deterministic"])
    return UNRECORDED


def _overrides_text(result: EvalResult) -> str:
    overrides = result.extra.get("overrides")
    if isinstance(overrides, list):
        return ", ".join(map(str, overrides)) or "none"
    return UNRECORDED


def row_key(result: EvalResult) -> RowKey:
    config = result.extra.get("config_name")
    return RowKey(
        agent=result.agent,
        config=str(config) if config else UNRECORDED,
        protocol=result_protocol(result),
        feedback=bool(result.extra.get("feedback", True)),
        env_steps=int(result.env_steps),
        adaptation_episodes=int(result.adaptation_episodes),
        eval_episodes=int(result.eval_episodes_per_task),
        overrides=_overrides_text(result),
    )


@dataclass(frozen=True)
class _Run:
    """One evaluated run: the EvalResult file read, its result, and its run directory (None for a bare JSON file)."""

    source: Path
    result: EvalResult
    run_dir: Path | None


def _eval_file(run_dir: Path, latest: bool) -> Path:
    final, last = run_dir / EVAL_DIR / FINAL_EVAL, run_dir / EVAL_DIR / LATEST_EVAL
    if final.is_file():
        return final
    if latest and last.is_file():
        return last
    if last.is_file():
        raise UserError(
            f"{str(run_dir)!r} has no {EVAL_DIR}/{FINAL_EVAL} (a full `metarl eval`), only the last periodic "
            f"evaluation {EVAL_DIR}/{LATEST_EVAL}; run `metarl eval {run_dir}` first, or pass --latest to compare "
            "the periodic one"
        )
    raise UserError(
        f"{str(run_dir)!r} has no eval results ({EVAL_DIR}/{FINAL_EVAL} or {EVAL_DIR}/{LATEST_EVAL}); "
        f"run `metarl eval {run_dir}` first"
    )


def _results_in_file(path: Path) -> list[_Run]:
    """An EvalResult file, or a learning-benchmark result JSON (one result per evaluation it holds)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read eval result {str(path)!r}: {exc}") from None
    if is_benchmark_result(data):
        return [_Run(path, result, None) for result in benchmark_results(path, data)]
    return [_Run(path, load_eval_result(path), None)]


def _runs_at(path: Path, latest: bool) -> list[_Run]:
    """The runs a path stands for: a JSON file, a run directory, or a directory of run directories."""
    if path.is_file():
        return _results_in_file(path)
    if not path.is_dir():
        raise UserError(f"{str(path)!r} does not exist; give run directories, their parents, or result JSON files")
    if (path / CONFIG_FILE).is_file():
        dirs = [path]
    else:
        dirs = sorted((p for p in path.iterdir() if (p / CONFIG_FILE).is_file()), key=lambda p: natural_key(p.name))
    if not dirs:
        raise UserError(
            f"{str(path)!r} is not a run directory (no {CONFIG_FILE}) and has no run directories one level down; "
            "give run directories, their parents, or EvalResult JSON files"
        )
    runs = []
    for run_dir in dirs:
        source = _eval_file(run_dir, latest)
        result = load_eval_result(source)
        # what the run changed from its named config, read from its config.json (results before it was recorded);
        # what the result recorded where that file cannot be read
        overrides = recorded_overrides(run_dir)
        if overrides is not None:
            result.extra["overrides"] = overrides
        runs.append(_Run(source, result, run_dir))
    return runs


def _collect_runs(paths: Sequence[Path], latest: bool) -> list[_Run]:
    if not paths:
        raise UserError("nothing to compare: give at least one run directory or EvalResult JSON file")
    runs: list[_Run] = []
    seen: set[tuple[Path, int]] = set()
    for path in paths:
        for i, run in enumerate(_runs_at(Path(path), latest)):
            key = (run.source.resolve(), i)  # a benchmark JSON holds several results
            if key not in seen:  # the same run named twice (a dir and its parent) counts once
                seen.add(key)
                runs.append(run)
    return runs


@dataclass(frozen=True)
class _Row:
    key: RowKey
    runs: int
    success: dict[str, Interval]
    ret: Interval


def _ci_text(interval: Interval, runs: int, digits: int = 3) -> str:
    if runs < 2:
        return f"{interval.point:.{digits}f} (1 run: no CI)"
    return interval.format(digits)


def _matrix_mean(scores: NDArray[np.float64]) -> float:
    return float(np.mean(scores))


def _rows(groups: Mapping[RowKey, Sequence[EvalResult]], families: Sequence[str], reps: int, seed: int) -> list[_Row]:
    """Per row: the [runs, families] score matrices, bootstrapped over runs within each family (rliable)."""
    rows = []
    for key, results in groups.items():
        success_RF = np.asarray([[r.per_family[f]["success"] for f in families] for r in results])
        return_RF = np.asarray([[r.per_family[f]["return"] for f in families] for r in results])
        ret = stratified_bootstrap_ci(return_RF, _matrix_mean, reps=reps, seed=seed)
        rows.append(_Row(key, len(results), aggregate(success_RF, reps=reps, seed=seed), ret))
    return sorted(rows, key=lambda row: (-row.success["iqm"].point, row.key.label, row.key.env_steps))


def _grouping_notes(groups: Mapping[RowKey, Sequence[EvalResult]]) -> list[str]:
    """Which agents were split over several rows, and why."""
    notes = []
    by_agent: dict[str, list[RowKey]] = {}
    for key in groups:
        by_agent.setdefault(key.agent, []).append(key)
    for agent, keys in sorted(by_agent.items()):
        if len(keys) < 2:
            continue
        differ = sorted({d for a in keys for b in keys if a != b for d in a.differences(b)})
        notes.append(f"`{agent}` has {len(keys)} rows, not pooled as seeds: its results differ in {', '.join(differ)}")
    return notes


def _family_notes(runs: Sequence[_Run], families: Sequence[str]) -> list[str]:
    notes = []
    all_families = {f for run in runs for f in run.result.per_family}
    if len(all_families) > len(families):
        notes.append(
            f"the runs were evaluated on different task families; the table uses the {len(families)} families all "
            f"runs share ({len(all_families) - len(families)} others left out)"
        )
    if len({frozenset(run.result.per_task) for run in runs}) > 1:
        notes.append(
            "the runs were evaluated on different tasks (each seed draws its own task lists); scores are compared "
            "per task family"
        )
    return notes


def _section(
    name: str, runs: Sequence[_Run], out_dir: Path, reps: int, seed: int
) -> tuple[list[str], list[Path], list[str]]:
    """Markdown lines, written figures and notes of one benchmark (distribution, split)."""
    groups: dict[RowKey, list[EvalResult]] = {}
    sources: dict[RowKey, list[Path]] = {}
    for run in runs:
        groups.setdefault(row_key(run.result), []).append(run.result)
        sources.setdefault(row_key(run.result), []).append(run.source)
    for key, results in groups.items():
        _check_one_setting(results, sources[key])
    shared = set.intersection(*(set(run.result.per_family) for run in runs))
    if not shared:
        counts = ", ".join(f"{run.source} ({sorted(run.result.per_family)})" for run in runs)
        raise UserError(f"the runs on {name} share no task family, so they cannot be compared: {counts}")
    families = sorted(shared, key=natural_key)
    rows = _rows(groups, families, reps, seed)
    # labels of the figures: the agent, plus what tells its rows apart when it has several
    labels = {row.key: _figure_label(row.key, [k for k in groups if k.agent == row.key.agent]) for row in rows}
    lines = [
        f"## {name}",
        "",
        f"{len(runs)} runs in {len(rows)} rows, {len(families)} task families; intervals resample runs within each "
        "family (stratified bootstrap, as rliable); sorted by success IQM.",
        "",
    ]
    lines += md_table(
        ["agent", "runs", "success IQM [95% CI]", "success mean [95% CI]", "return mean [95% CI]", "env steps",
         "config", "protocol", "episodes (adapt + eval)"],
        [(f"`{r.key.agent}`" + ("" if r.key.feedback else " control: no reward feedback"), r.runs,
          _ci_text(r.success["iqm"], r.runs), _ci_text(r.success["mean"], r.runs), _ci_text(r.ret, r.runs, 2),
          f"{r.key.env_steps:,}", r.key.config_text, r.key.protocol,
          f"{r.key.adaptation_episodes} + {r.key.eval_episodes}") for r in rows],
    )  # fmt: skip
    lines += _gap_table(groups, families, reps, seed) + _settings_lines(rows, groups)
    notes = _grouping_notes(groups) + _family_notes(runs, families)
    by_label = {labels[r.key]: groups[r.key] for r in rows}
    stem = slug(name)
    written = [plot_adaptation_curve(by_label, out_dir / f"{stem}-curve.png", reps=reps, seed=seed)]
    if any(r.per_task for results in by_label.values() for r in results):  # benchmark JSONs keep families only
        written.append(plot_per_task_success(by_label, out_dir / f"{stem}-per_task.png"))
    run_dirs: dict[str, list[Path]] = {}
    for run in runs:
        if run.run_dir is not None:
            run_dirs.setdefault(labels[row_key(run.result)], []).append(run.run_dir)
    if run_dirs:
        data, train_notes = training_data(run_dirs, ("eval/success", "eval/return"))
        if data:
            written.append(plot_training_data(data, out_dir / f"{stem}-training.png", train_notes, list(by_label)))
        notes += train_notes
    if notes:
        lines += ["", "Notes:", ""] + [f"- {note}" for note in notes]
    lines += [""] + [f"![{p.stem}]({p.name})" for p in written]
    return lines, written, notes


def _check_one_setting(results: Sequence[EvalResult], sources: Sequence[Path]) -> None:
    """Refuse to pool results whose recorded run settings differ, or two of one training seed."""
    given = [(r.extra.get("benchmark_settings"), path) for r, path in zip(results, sources, strict=True)]
    recorded = [(settings, path) for settings, path in given if isinstance(settings, dict)]
    if recorded:
        (first, first_path), *others = recorded
        for settings, path in others:
            for name, value in settings.items():
                if name in UNKNOWN_BEFORE and (value is None or first.get(name) is None):
                    continue
                if value != first.get(name):
                    raise UserError(
                        f"{str(path)!r} differs from {str(first_path)!r} in {name}: {value!r} against "
                        f"{first.get(name)!r}; compare pools seeds of one setting only"
                    )
    seeds = [r.extra["train_seed"] for r in results if r.extra.get("train_seed") is not None]
    if len(set(seeds)) != len(seeds):
        raise UserError(
            f"training seeds repeat ({seeds}) among results of one row; give each seed's result once: "
            + ", ".join(map(str, sources))
        )


def _gap_table(
    groups: Mapping[RowKey, Sequence[EvalResult]], families: Sequence[str], reps: int, seed: int
) -> list[str]:
    """Success with reward feedback minus the control's, per training seed, where both rows hold the same seeds."""
    rows = []
    for key, control in groups.items():
        twin = groups.get(replace(key, feedback=True)) if not key.feedback else None
        if twin is None:
            continue
        by_seed = [{r.extra.get("train_seed"): r for r in rs} for rs in (twin, control)]
        if None in by_seed[0] or set(by_seed[0]) != set(by_seed[1]) or len(by_seed[0]) != len(twin):
            continue  # seeds not recorded, or not the same ones
        seeds = sorted(s for s in by_seed[0] if s is not None)

        def mean_success(result: EvalResult) -> float:
            return float(np.mean([result.per_family[f]["success"] for f in families]))

        gap = np.asarray([[mean_success(by_seed[0][s]) - mean_success(by_seed[1][s])] for s in seeds])
        agg = aggregate(gap, reps=reps, seed=seed)
        rows.append((f"`{key.agent}` ({key.config_text}, {key.env_steps:,} env steps)", len(seeds),
                     _ci_text(agg["iqm"], len(seeds)), _ci_text(agg["mean"], len(seeds)),
                     ", ".join(f"{v:+.2f}" for v in gap[:, 0])))  # fmt: skip
    if not rows:
        return []
    head = ["agent", "seeds", "gap IQM [95% CI]", "gap mean [95% CI]", "per seed"]
    intro = "Adaptation gap: success with reward feedback minus the control's, per training seed."
    return ["", intro, "", *md_table(head, rows)]


def _settings_lines(rows: Sequence[_Row], groups: Mapping[RowKey, Sequence[EvalResult]]) -> list[str]:
    """The run settings the learning benchmark's JSONs record, per row that has them."""
    lines = []
    for row in rows:
        settings: Any = groups[row.key][0].extra.get("benchmark_settings")
        if not isinstance(settings, dict):
            continue
        said = [f"overrides {' '.join(f'`{o}`' for o in settings['overrides']) or 'none'}"]
        if settings.get("env_success_reward"):
            said.append(f"`--env-success-reward {settings['env_success_reward']:g}`")
        for name in ("meta_batch", "episodes_per_task", "goals_per_family"):
            if settings.get(name) is not None:
                said.append(f"{name} {settings[name]}")
        if settings.get("overlap"):
            said.append("`--overlap true`")
        seeds = sorted(r.extra["train_seed"] for r in groups[row.key])
        label = f"`{row.key.agent}`" + ("" if row.key.feedback else " control")
        lines.append(f"- {label} ({row.key.config_text}, {row.key.env_steps:,} env steps): {', '.join(said)}; "
                     f"training seeds {seeds}")  # fmt: skip
    return ["", "Run settings (learning-benchmark results):", "", *lines] if lines else []


def _figure_label(key: RowKey, siblings: Sequence[RowKey]) -> str:
    if len(siblings) < 2:
        return key.label
    differ = sorted({d for other in siblings if other != key for d in key.differences(other)})
    parts = {
        "config": key.config,
        "settings changed from the config": key.overrides,
        "protocol": key.protocol,
        "env steps": f"{key.env_steps:,} steps",
        "adaptation episodes": f"K={key.adaptation_episodes}",
        "evaluation episodes": f"N={key.eval_episodes}",
    }
    extra = [parts[d] for d in differ if d in parts]
    return key.label + (f" [{', '.join(extra)}]" if extra else "")


def _seeds(result: EvalResult) -> str:
    """The seeds that tell runs apart: training (from `metarl eval` results that record it) and evaluation."""
    train = result.extra.get("train_seed")
    evaluation = f"evaluation seed {result.seed}"
    return evaluation if train is None else f"training seed {train}, {evaluation}"


def compare(
    paths: Sequence[Path],
    out_dir: Path,
    reps: int = 2000,
    seed: int = 0,
    *,
    latest: bool = False,
    say: Callable[[str], None] | None = None,
) -> list[Path]:
    """Compare evaluated runs: ``compare.md`` plus figures per benchmark in ``out_dir``; returns written paths.

    Each path is a run directory (with ``config.json`` and ``eval/final.json``; with ``latest`` a run without it
    is read from its last periodic evaluation ``eval/latest.json``, and compare says so), a directory of run
    directories (one level down, e.g. ``OUT/seed-0``), an EvalResult JSON file, or a learning-benchmark result
    JSON (:mod:`metarl.evaluation.benchmark_json`: one result per evaluation it holds).  Results are grouped by
    benchmark (distribution and split), then into rows by :class:`RowKey`.  ``say`` receives each note.
    """
    runs = _collect_runs(paths, latest)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    periodic = [run for run in runs if run.source.name == LATEST_EVAL and run.run_dir is not None]
    if periodic:
        notes.append(
            f"{len(periodic)} run(s) have no {FINAL_EVAL} and were read from their last periodic evaluation "
            f"({EVAL_DIR}/{LATEST_EVAL}, --latest): " + ", ".join(str(run.run_dir) for run in periodic)
        )
    by_benchmark: dict[str, list[_Run]] = {}
    for run in runs:
        by_benchmark.setdefault(f"{run.result.distribution} ({run.result.split} split)", []).append(run)
    lines = [
        "# Comparison of meta-test results",
        "",
        f"{len(runs)} runs. A row pools as seeds only the results of one agent, config, protocol, reward feedback "
        "(a no-feedback control is its own row), env-step budget and episode counts. A run's score on a task family "
        "is its mean success over that family's evaluated tasks (success at any step of an episode, a fraction in "
        "[0, 1], after the full adaptation budget); seeds draw their own task lists, so families are the unit that "
        "runs share. IQM = mean of the middle 50% of all run×family scores; mean = mean of all of them. Intervals: "
        f"95% stratified bootstrap over runs (seeds) within each family, {reps} replicates (as in rliable); with one "
        "run there is no interval.",
        "",
    ]
    if notes:
        lines += [f"- {note}" for note in notes] + [""]
    written: list[Path] = []
    for name in sorted(by_benchmark, key=natural_key):
        section, figures, section_notes = _section(name, by_benchmark[name], out_dir, reps, seed)
        lines += [*section, ""]
        written += figures
        notes += [f"{name}: {note}" for note in section_notes]
    lines += ["## Inputs", ""]
    lines += [
        f"- `{row_key(r.result).label}` ({_seeds(r.result)}, {r.result.env_steps:,} env steps): {r.source}"
        for r in runs
    ]
    if say is not None:
        for note in notes:
            say(note)
    return [write_text(out_dir / "compare.md", "\n".join(lines) + "\n"), *written]
