"""Write the results pages in docs/results/ from the run directories committed under benchmarks/results/.

    python docs/generate.py            # (re)write the pages and their figures
    python docs/generate.py --check    # exit 1 when a committed page differs from what the script writes

A benchmark's page is generated from ``benchmarks/results/<BENCHMARK>/<config>-s<seed>/``: its ``config.json``,
``meta.json`` (the command), ``progress.csv`` (meta-train success, wall-clock), ``eval/iter-*.json`` (the periodic
held-out meta-tests: the curve and the maximum over training), ``eval/final.json`` (``metarl eval`` on every
held-out goal) and ``eval/no-feedback.json`` (RL²'s adaptation control; MAML's is its curve's point 0).  The
published figures the pages stand beside are in :data:`PUBLISHED`, with their sources (docs/reference.md).
Markdown is compared by ``--check``; PNGs are rewritten, never compared (their bytes vary across matplotlib builds).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from metarl.evaluation.report import md_table, natural_key  # noqa: E402
from metarl.evaluation.result import EvalResult, load_eval_result, success_ci  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
PAGES = ROOT / "docs" / "results"
BENCHMARKS = ("ML10", "ML45")
TRAIN_SUCCESS_ITERATIONS = 10
"""Meta-train success is the mean of ``charts/success_rate`` over a run's last this many iterations."""


@dataclass(frozen=True)
class Published:
    source: str
    figure: float  # held-out success, a fraction
    metric: str
    meta_train: float | None = None


PUBLISHED: dict[str, dict[str, list[Published]]] = {
    "ML10": {
        "rl2": [
            Published("Meta-World (arXiv 1910.10897 v2, Table 1)", 0.358, "maximum over training, 10 seeds", 0.869),
            Published("Meta-World+ (arXiv 2505.11289, ML10 plots)", 0.35, "about, read from its plots"),
        ],
        "maml-trpo": [
            Published("Meta-World (arXiv 1910.10897 v2, Table 1)", 0.316, "maximum over training, 10 seeds", 0.444),
            Published("Meta-World+ (arXiv 2505.11289, ML10 plots)", 0.35, "about, read from its plots"),
        ],
    },
    "ML45": {
        "rl2": [Published("Meta-World (arXiv 1910.10897 v2, Table 1)", 0.333, "maximum over training, 10 seeds", 0.70)],
        "maml-trpo": [
            Published("Meta-World (arXiv 1910.10897 v2, Table 1)", 0.399, "maximum over training, 10 seeds", 0.407)
        ],
    },
}


@dataclass
class Run:
    """One committed run directory and what its page shows."""

    path: Path
    agent: str
    config: str
    seed: int
    command: str
    env_steps: int
    budget: int | None
    wall_s: float
    train_success: float | None
    curve: list[tuple[int, float]] = field(default_factory=list)  # periodic held-out success by env steps
    final: EvalResult | None = None
    control: EvalResult | None = None


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _float(row: dict[str, str], key: str) -> float | None:
    try:
        value = float(row.get(key) or "nan")
    except ValueError:
        return None
    return value if np.isfinite(value) else None


def read_run(path: Path) -> Run:
    config = json.loads((path / "config.json").read_text())
    meta = json.loads((path / "meta.json").read_text()) if (path / "meta.json").is_file() else {}
    rows = _read_csv(path / "progress.csv")
    steps = [_float(r, "charts/env_steps") for r in rows]
    success = [v for v in (_float(r, "charts/success_rate") for r in rows[-TRAIN_SUCCESS_ITERATIONS:]) if v is not None]
    wall = sum(v for v in (_float(r, "time/iteration_s") for r in rows) if v is not None)
    command = meta.get("command") or []
    if command and Path(command[0]).name == "metarl":
        command = ["metarl", *command[1:]]
    run = Run(
        path=path,
        agent=config["train"]["agent"],
        config=config.get("config_name") or config["train"]["agent"],
        seed=int(config["train"].get("seed", 0)),
        command=" ".join(command),
        env_steps=int(steps[-1] or 0) if steps else 0,
        budget=config["train"].get("total_env_steps"),
        wall_s=wall,
        train_success=float(np.mean(success)) if success else None,
    )
    for file in sorted((path / "eval").glob("iter-*.json"), key=lambda p: natural_key(p.name)):
        result = load_eval_result(file)
        run.curve.append((result.env_steps, result.success_mean))
    if (path / "eval" / "final.json").is_file():
        run.final = load_eval_result(path / "eval" / "final.json")
    if (path / "eval" / "no-feedback.json").is_file():
        run.control = load_eval_result(path / "eval" / "no-feedback.json")
    return run


def control_text(run: Run) -> str:
    """RL²'s no-feedback evaluation, or the curve's point 0 of a gradient-based agent (before adapting)."""
    if run.control is not None:
        return f"{run.control.success_mean:.2f} (no reward input)"
    if run.final is not None and run.final.curve.get("unit") == "gradient_steps":
        return f"{run.final.curve['success'][0]:.2f} (before the inner step)"
    return "not run"


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def _plot(benchmark: str, runs: list[Run], path: Path) -> None:
    from matplotlib.figure import Figure
    from matplotlib.ticker import EngFormatter

    fig = Figure(figsize=(7.5, 4.2))
    ax = fig.subplots()
    agents = sorted({r.agent for r in runs})
    for run in runs:
        if run.curve:
            x, y = zip(*run.curve, strict=True)
            ax.plot(x, y, marker="o", ms=3, color=f"C{agents.index(run.agent)}", label=f"{run.config} s{run.seed}")
    for agent, refs in PUBLISHED.get(benchmark, {}).items():
        color = f"C{agents.index(agent)}" if agent in agents else "grey"
        for j, ref in enumerate(refs):
            ax.axhline(ref.figure, color=color, ls=("--", ":")[j % 2], lw=1,
                       label=f"{agent}: {ref.source.split(' (')[0]} {ref.figure:.1%}")  # fmt: skip
    ax.set_xlabel("env steps")
    ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    ax.set_ylabel("held-out success (periodic meta-test)")
    ax.set_ylim(-0.02, 1.0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title(f"{benchmark}: held-out success during training (seed 0, Meta-World protocol)")
    fig.savefig(path, dpi=110, bbox_inches="tight")


def benchmark_page(benchmark: str, runs: list[Run]) -> str:
    lines = [
        f"# {benchmark}",
        "",
        "<!-- generated by docs/generate.py from benchmarks/results/; do not edit -->",
        "",
        f"Held-out success on {benchmark}'s test classes (Meta-World's protocol: 10 sampled adaptation episodes, then "
        "3 evaluation episodes on the mean action; success at any step of an episode). *Final* is `metarl eval` on "
        "every held-out goal of the final checkpoint, with a 95% bootstrap interval over goals; *max over training* "
        "is the best periodic meta-test (10 goals per class), the metric of the Meta-World paper's Table 1; "
        f"*meta-train* is the training episodes' success over the last {TRAIN_SUCCESS_ITERATIONS} iterations. "
        "Wall-clock is the sum of the training iterations on this 2-core machine (periodic meta-tests not counted).",
        "",
        f"![held-out success during training]({benchmark}-training.png)",
        "",
    ]
    rows = []
    for run in runs:
        final = run.final
        best = max((s for _, s in run.curve), default=None)
        rows.append((
            f"`{run.config}` s{run.seed}",
            f"{run.env_steps:,}" + ("" if run.budget in (None, run.env_steps) else f" of {run.budget:,}"),
            success_ci(final).format(2) if final else "not run",
            control_text(run),
            f"{best:.2f}" if best is not None else "n/a",
            f"{run.train_success:.2f}" if run.train_success is not None else "n/a",
            _hours(run.wall_s),
        ))  # fmt: skip
    lines += md_table(
        ["run", "env steps", "final [95% CI]", "control", "max over training", "meta-train", "wall-clock"], rows
    )
    refs = PUBLISHED.get(benchmark, {})
    if refs:
        lines += ["", "Published figures (held-out success; sources in [the reference page](../reference.md)):", ""]
        lines += md_table(
            ["agent", "source", "held-out success", "metric", "meta-train"],
            [
                (a, r.source, f"{r.figure:.1%}", r.metric, "" if r.meta_train is None else f"{r.meta_train:.1%}")
                for a, rs in refs.items()
                for r in rs
            ],
        )
    evaluated = [r for r in runs if r.final is not None]
    if evaluated:
        families = sorted({f for r in evaluated for f in r.final.per_family}, key=natural_key)  # type: ignore[union-attr]
        lines += ["", "Final held-out success by class (95% bootstrap interval over the class's goals):", ""]
        lines += md_table(
            ["class", *[f"`{r.config}` s{r.seed}" for r in evaluated]],
            [(f, *[success_ci(r.final, f).format(2) for r in evaluated]) for f in families],  # type: ignore[arg-type]
        )
    lines += ["", "Commands (each run directory holds its config, checkpoint and evaluations):", ""]
    for run in runs:
        where = f"benchmarks/results/{benchmark}/{run.path.name}"
        control = "" if run.control is None else f" and `metarl eval {where} --no-feedback`"
        lines.append(f"- `{run.config}` s{run.seed}: `{run.command}`; then `metarl eval {where}`{control}")
    return "\n".join(lines) + "\n"


def pages() -> dict[Path, tuple[str, list[Run], str]]:
    """``{page path: (benchmark, runs, markdown)}`` for every benchmark with committed run directories."""
    out = {}
    for benchmark in BENCHMARKS:
        root = RESULTS / benchmark
        dirs = sorted((p for p in root.glob("*") if (p / "config.json").is_file()), key=lambda p: natural_key(p.name))
        if dirs:
            runs = [read_run(d) for d in dirs]
            out[PAGES / f"{benchmark}.md"] = (benchmark, runs, benchmark_page(benchmark, runs))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare the committed Markdown; write nothing")
    args = parser.parse_args(argv)
    stale = []
    for path, (benchmark, runs, text) in pages().items():
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(path)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        _plot(benchmark, runs, path.with_name(f"{benchmark}-training.png"))
        print(f"wrote {path}")
    if stale:
        print(f"out of date (run python docs/generate.py): {', '.join(map(str, stale))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
