"""Reports of meta-test results: Markdown for one EvalResult, PNG figures, and the figures of comparisons across runs.

* :mod:`~metarl.evaluation.report.markdown`: :func:`render_markdown`, one evaluation as Markdown.
* :mod:`~metarl.evaluation.report.figures`: :func:`plot_adaptation_curve`, :func:`plot_per_task_success`, figures of
  groups of results (one group per label, e.g. agent; one result per seed).
* :mod:`~metarl.evaluation.report.training_curves`: :func:`plot_training_curves`, scalars vs env steps from run
  directories.
* :mod:`~metarl.evaluation.report.format`: numbers, tables, labels and atomic file writes they share.
* :func:`write_eval_report` (here): the files of one evaluation (``report.md``, ``curve.png``, ``per_task.png``).

`metarl compare` (:mod:`metarl.evaluation.compare`) builds its tables on these figures and helpers.  Files are
written atomically.
"""

from __future__ import annotations

from pathlib import Path

from metarl.evaluation.report.figures import MAX_TASK_BARS, plot_adaptation_curve, plot_per_task_success
from metarl.evaluation.report.format import md_table, natural_key, slug, write_text
from metarl.evaluation.report.markdown import render_markdown
from metarl.evaluation.report.training_curves import (
    ENV_STEPS_COLUMN,
    plot_training_curves,
    plot_training_data,
    training_data,
)
from metarl.evaluation.result import EvalResult

__all__ = [
    "ENV_STEPS_COLUMN",
    "MAX_TASK_BARS",
    "md_table",
    "natural_key",
    "plot_adaptation_curve",
    "plot_per_task_success",
    "plot_training_curves",
    "plot_training_data",
    "render_markdown",
    "slug",
    "training_data",
    "write_eval_report",
    "write_text",
]


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
