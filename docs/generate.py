"""Write the results pages in docs/results/ and the generated blocks of README.md and docs/scaling.md from the
results committed under benchmarks/results/.

    python docs/generate.py            # (re)write the pages, the blocks and the figures
    python docs/generate.py --check    # exit 1 when committed Markdown differs from what the script writes

Every result schema the repository commits under ``benchmarks/results/<benchmark>/`` is read:

- run directories ``<config>-s<seed>/``: ``config.json``, ``meta.json`` (the command), ``progress.csv`` (meta-train
  success, wall-clock), ``eval/iter-*.json`` (the periodic held-out meta-tests: the curve and the maximum over
  training), ``eval/final.json`` (``metarl eval`` on every held-out goal) and ``eval/no-feedback.json`` (RL²'s
  adaptation control; MAML's is its curve's point 0);
- the learning benchmark's JSONs (``benchmarks/learning/metaworld.py --json``: held-out, sampled, control);
- the MAML return benchmarks' JSONs (``final_sampled``/``final_mean_action``, e.g. cheetah-dir);
- the official evaluator's cross-checks (``official_success``) and ``metarl compare`` reports (``*.md``, linked);
- ``speed/``: the training-iteration, GPU-iteration and sampler benchmarks.

The published figures the pages stand beside are in :data:`PUBLISHED`, with their sources (docs/reference.md).
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

from metarl.evaluation.benchmark_json import is_benchmark_result  # noqa: E402
from metarl.evaluation.report import md_table, natural_key  # noqa: E402
from metarl.evaluation.result import EvalResult, load_eval_result, success_ci  # noqa: E402
from metarl.evaluation.stats import aggregate  # noqa: E402
from metarl.overrides import recorded_overrides  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
PAGES = ROOT / "docs" / "results"
README = ROOT / "README.md"
SCALING = ROOT / "docs" / "scaling.md"
NOT_BENCHMARKS = ("ablations", "dev", "speed")
"""Folders of ``benchmarks/results/`` that are not a benchmark's results (the ablations are in docs/experiments.md)."""
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
    "cheetah-dir": {
        "maml-trpo": [
            Published("learn2learn MAML-TRPO example, mean of 3 seeds", 260.0, "return after one step, 300 its")
        ]
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
    median_steps_per_s: float | None  # the median iteration's rate: a machine's speed, robust to contention
    peak_rss_mib: float | None  # progress.csv's memory/peak_rss_mib (driver and workers), where recorded
    resumes: list[str] = field(default_factory=list)  # meta.json's recorded `metarl train --resume` commands
    curve: list[tuple[int, float]] = field(default_factory=list)  # periodic held-out success by env steps
    final: EvalResult | None = None
    control: EvalResult | None = None
    overrides: list[str] = field(default_factory=list)  # what the run changed from its named config

    @property
    def config_label(self) -> str:
        """The config and what the run changed from it: `rl2-ml10` + `ppo.target_kl=0.02`."""
        return f"`{self.config}`" + "".join(f" + `{o}`" for o in self.overrides)

    @property
    def label(self) -> str:
        """:attr:`config_label` and the seed."""
        return f"{self.config_label} s{self.seed}"


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


def _command(argv: list[str]) -> str:
    if argv and Path(argv[0]).name == "metarl":
        argv = ["metarl", *argv[1:]]
    return " ".join(argv)


def read_run(path: Path) -> Run:
    config = json.loads((path / "config.json").read_text())
    meta = json.loads((path / "meta.json").read_text()) if (path / "meta.json").is_file() else {}
    rows = _read_csv(path / "progress.csv")
    steps = [_float(r, "charts/env_steps") for r in rows]
    # RL² logs its training episodes' success; a MAML-family agent its success after the inner step
    key = "charts/success_rate" if rows and "charts/success_rate" in rows[0] else "charts/post_adaptation_success"
    success = [v for v in (_float(r, key) for r in rows[-TRAIN_SUCCESS_ITERATIONS:]) if v is not None]
    wall = sum(v for v in (_float(r, "time/iteration_s") for r in rows) if v is not None)
    rates = [
        (b - a) / t
        for a, b, t in zip([0.0, *steps], steps, (_float(r, "time/iteration_s") for r in rows), strict=False)
        if a is not None and b is not None and t
    ]
    command = _command(meta.get("command") or [])
    resumes = [_command(r.get("command") or []) for r in meta.get("resumes") or []]
    run = Run(
        path=path,
        agent=config["train"]["agent"],
        config=config.get("config_name") or config["train"]["agent"],
        seed=int(config["train"].get("seed", 0)),
        command=command,
        resumes=resumes,
        env_steps=int(steps[-1] or 0) if steps else 0,
        budget=config["train"].get("total_env_steps"),
        wall_s=wall,
        train_success=float(np.mean(success)) if success else None,
        median_steps_per_s=float(np.median(rates)) if rates else None,
        peak_rss_mib=max((v for v in (_float(r, "memory/peak_rss_mib") for r in rows) if v is not None), default=None),
        overrides=recorded_overrides(path) or [],
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
        "Wall-clock is the sum of the training iterations on this 2-core machine (periodic meta-tests not counted); "
        "peak memory is the summed peak resident memory of the driver and its rollout workers (`progress.csv`'s "
        "`memory/peak_rss_mib`, an upper bound: shared pages count once per process).",
        "",
        f"![held-out success during training]({benchmark}-training.png)",
        "",
    ]
    rows = []
    for run in runs:
        final = run.final
        best = max((s for _, s in run.curve), default=None)
        rows.append((
            run.label,
            f"{run.env_steps:,}" + ("" if run.budget in (None, run.env_steps) else f" of {run.budget:,}"),
            success_ci(final).format(2) if final else "not run",
            control_text(run),
            f"{best:.2f}" if best is not None else "n/a",
            f"{run.train_success:.2f}" if run.train_success is not None else "n/a",
            _hours(run.wall_s),
            "not recorded" if run.peak_rss_mib is None else f"{run.peak_rss_mib / 1024:.1f} GiB",
        ))  # fmt: skip
    header = ["run", "env steps", "final [95% CI]", "control", "max over training", "meta-train", "wall-clock"]
    lines += md_table([*header, "peak memory"], rows)
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
            ["class", *[r.label for r in evaluated]],
            [(f, *[success_ci(r.final, f).format(2) for r in evaluated]) for f in families],  # type: ignore[arg-type]
        )
    lines += ["", "Commands (each run directory holds its config, checkpoint and evaluations):", ""]
    for run in runs:
        where = f"benchmarks/results/{benchmark}/{run.path.name}"
        control = "" if run.control is None else f" and `metarl eval {where} --no-feedback`"
        resumed = f", resumed {len(run.resumes)} time(s), the last with `{run.resumes[-1]}`" if run.resumes else ""
        lines.append(f"- {run.label}: `{run.command}`{resumed}; then `metarl eval {where}`{control}")
    return "\n".join(lines) + "\n"


# --- the learning benchmark's JSONs (benchmarks/learning/metaworld.py --json) -------------------------------------


@dataclass
class BenchJSON:
    """One learning-benchmark result: a training run and the evaluations of its final checkpoint."""

    path: Path
    data: dict

    @property
    def label(self) -> str:
        """The named config and what the run changed (short: the JSON records every setting)."""
        d = self.data
        extra = list(d.get("overrides") or [])
        reward = d.get("env_success_reward", d.get("success_reward")) or 0
        if reward:
            extra.append(f"success reward {reward:g}")
        return f"`{d['config']}`" + (f" ({', '.join(extra)})" if extra else "")

    @property
    def env_steps(self) -> int:
        return int(self.data["heldout"].get("env_steps") or self.data["training"]["env_steps"][-1])

    def evaluation(self, key: str) -> str:
        value = (self.data.get(key) or {}).get("success")
        if isinstance(value, dict):
            return f"{value['mean']:.2f} [{value['low']:.2f}, {value['high']:.2f}]"
        return "n/a" if value is None else f"{value:.2f}"

    def control(self) -> str:
        control = self.data.get("control") or {}
        if isinstance(control.get("success"), dict):
            return self.evaluation("control")
        curve = (self.data.get("heldout") or {}).get("curve") or {}
        return f"{curve['success'][0]:.2f} (before)" if curve.get("success") else "n/a"

    def train_success(self) -> str:
        values = [v for v in self.data["training"].get("train_success") or [] if v is not None][-5:]
        return f"{np.mean(values):.2f}" if values else "n/a"

    def curve(self) -> list[tuple[int, float]]:
        return [(int(r["env_steps"]), float(r["success"])) for r in self.data["training"].get("periodic_heldout") or []]


def _json_files(folder: Path) -> list[tuple[Path, dict]]:
    return [(f, json.loads(f.read_text())) for f in sorted(folder.glob("*.json"), key=lambda p: natural_key(p.name))]


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def bench_section(jsons: list[BenchJSON]) -> list[str]:
    lines = [
        "## Runs of the learning benchmark",
        "",
        "`benchmarks/learning/metaworld.py` trains with a named config, then scores the final checkpoint on every "
        "held-out goal: *held-out* with the mean action in the evaluation episodes (Meta-World's protocol), *sampled* "
        "with sampled ones, each with a 95% bootstrap interval over goals; *control* is RL² with its reward input "
        "zeroed, or MAML's success before the inner step; *meta-train* is training success over the last 5 "
        "iterations; *training* is wall-clock minutes on the machine the JSON names.",
        "",
    ]
    rows = [
        (f"[{j.path.name}](../../{_rel(j.path)})", j.label, j.data["seed"], f"{j.env_steps:,}",
         f"{j.data.get('train_wall_minutes', 0):.0f} min", j.evaluation("heldout"), j.evaluation("heldout_sampled"),
         j.control(), j.train_success())
        for j in jsons
    ]  # fmt: skip
    header = ["JSON", "config", "seed", "env steps", "training", "held-out", "sampled", "control", "meta-train"]
    return lines + md_table(header, rows) + [""]


def _crosscheck_mode(d: dict) -> str:
    if not d.get("exact"):
        return "sampled adaptation"
    return "exact" if d.get("bit_equal_inputs") else "exact (float64 actions)"


def crosscheck_section(files: list[tuple[Path, dict]]) -> list[str]:
    lines = [
        "## Cross-check against Meta-World's own evaluator",
        "",
        "`benchmarks/learning/official_eval.py` scores one checkpoint with `metaworld.evaluation` and with metarl's "
        "meta-test on the same goals (*exact*: mean action in adaptation episodes too; otherwise adaptation is "
        "sampled, as in the protocol, and always for a gradient-based agent). In exact mode an RL² agent's two "
        "sides agree goal by goal: both run the adaptation episodes to their limit, start every evaluation "
        "episode from the adapted memory state, and give the policy the same bits (float32 actions; the reward "
        "itself in the observation tail, not reward / 10 stored in float32). A trained agent turns an ulp of "
        "difference into another trajectory within tens of steps, so rows written before the adapter did so "
        "(marked *float64 actions*) agree only in distribution: that is the whole of the first ML10 RL² "
        "cross-check's gap, 0.14 against 0.26 ([experiments.md](../experiments.md)). The evaluator ends an "
        "evaluation episode on success, which cannot change whether it succeeded but shortens its return.",
        "",
    ]
    rows = [
        (f"[{f.name}](../../{_rel(f)})", _crosscheck_mode(d), len(d.get("rounds", [])),
         f"{d['official_success']:.2f}", f"{d['metarl_success']:.2f}")
        for f, d in files
    ]  # fmt: skip
    return lines + md_table(["JSON", "mode", "rounds", "Meta-World's evaluator", "metarl"], rows) + [""]


def return_section(files: list[tuple[Path, dict]]) -> list[str]:
    lines = ["## Return before and after one inner step", ""]
    for f, d in files:
        minutes = d["train_wall_s"] / 60
        lines += [f"[{f.name}](../../{_rel(f)}): `{d['config']}` s{d['seed']}, {d['env_steps']:,} env steps "
                  f"({d['iterations']} iterations), {minutes:.0f} min of training. Target: {d['target']}.",
                  ""]  # fmt: skip
        rows = []
        for key, name in (("final_sampled", "sampled actions"), ("final_mean_action", "mean action")):
            r = d[key]
            per_task = " / ".join(f"{v:.1f}" for v in r["per_task_after"].values())
            rows.append((name, f"{r['return_before']:.1f}", f"**{r['return_after_one_step']:.1f}**", per_task))
        lines += md_table(["evaluation", "before the inner step", "after one inner step", "per task after"], rows)
        meta_train = d.get("meta_train_last10_post_adaptation_return")
        if meta_train is not None:
            lines += ["", f"Meta-train return after the inner step, last 10 iterations: {meta_train:.0f}."]
        lines += ["", "Commands:", "", *[f"- `{c}`" for c in d.get("commands", [])], ""]
    return lines


def _plot(
    title: str,
    ylabel: str,
    curves: list[tuple[str, str, list[tuple[int, float]]]],
    refs: dict[str, list[Published]],
    path: Path,
    ylim: tuple[float, float] | None = (-0.02, 1.0),
) -> None:
    """One figure: each curve is ``(label, agent, [(env steps, value)])``; published figures as horizontal lines."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import EngFormatter

    fig = Figure(figsize=(7.5, 4.2))
    ax = fig.subplots()
    agents = sorted({agent for _, agent, _ in curves} | set(refs))
    drawn: dict[str, int] = {}  # an agent's further runs (variants, seeds) in its colour, told apart by the marker
    for label, agent, points in curves:
        if points:
            x, y = zip(*points, strict=True)
            k = drawn[agent] = drawn.get(agent, -1) + 1
            ax.plot(x, y, marker="os^Dv"[k % 5], ms=3, ls=("-", "-.", ":")[k % 3], color=f"C{agents.index(agent)}",
                    label=label)  # fmt: skip
    for agent, published in refs.items():
        for j, ref in enumerate(published):
            ax.axhline(ref.figure, color=f"C{agents.index(agent)}", ls=("--", ":")[j % 2], lw=1,
                       label=f"{agent}: {ref.source.split(' (')[0]} {ref.figure:g}")  # fmt: skip
    ax.set_xlim(left=0)  # training starts at 0 steps (one early point alone would set a narrow range)
    ax.set_xlabel("env steps")
    ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    ax.set_ylabel(ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title(title)
    fig.savefig(path, dpi=110, bbox_inches="tight")


@dataclass
class Page:
    text: str
    figures: list = field(default_factory=list)  # (callable, path) pairs, drawn by main() unless --check


def benchmark_folder_page(benchmark: str, folder: Path) -> Page | None:
    """The page of one ``benchmarks/results/<benchmark>/`` folder: every schema found in it."""
    dirs = sorted((p for p in folder.glob("*") if (p / "config.json").is_file()), key=lambda p: natural_key(p.name))
    runs = [read_run(d) for d in dirs]
    files = _json_files(folder)
    jsons = [BenchJSON(f, d) for f, d in files if is_benchmark_result(d)]
    checks = [(f, d) for f, d in files if "official_success" in d]
    returns = [(f, d) for f, d in files if "final_sampled" in d]
    compares = sorted(folder.glob("*.md"), key=lambda p: natural_key(p.name))
    if not (runs or jsons or returns):
        return None
    figures = []
    if runs:
        lines = [*benchmark_page(benchmark, runs).rstrip("\n").splitlines(), ""]
        curves = [(r.label.replace("`", ""), r.agent, r.curve) for r in runs]
        curves += [(j.path.stem, j.data["agent"], j.curve()) for j in jsons]
        figures.append((lambda c=curves: _plot(f"{benchmark}: held-out success during training",
                        "held-out success (periodic meta-test)", c, PUBLISHED.get(benchmark, {}),
                        PAGES / f"{benchmark}-training.png"), PAGES / f"{benchmark}-training.png"))  # fmt: skip
    else:
        lines = [f"# {benchmark}", "", GENERATED, ""]
        if jsons:
            lines += [f"![held-out success during training]({benchmark}-training.png)", ""]
            curves = [(j.path.stem, j.data["agent"], j.curve()) for j in jsons]
            figures.append((lambda c=curves: _plot(f"{benchmark}: periodic held-out success (sampled, 10 goals)",
                            "held-out success (periodic meta-test)", c, {}, PAGES / f"{benchmark}-training.png"),
                            PAGES / f"{benchmark}-training.png"))  # fmt: skip
        if returns:
            lines += [f"![return after one inner step during training]({benchmark}-training.png)", ""]
            curves = [(f"{d['config']} s{d['seed']}", d["agent"],
                       [(int(m["env_steps"]), float(m["return_after_one_step"])) for m in d["periodic_meta_tests"]])
                      for _, d in returns]  # fmt: skip
            figures.append((lambda c=curves: _plot(f"{benchmark}: return after one inner step (periodic meta-test)",
                            "return", c, PUBLISHED.get(benchmark, {}), PAGES / f"{benchmark}-training.png", None),
                            PAGES / f"{benchmark}-training.png"))  # fmt: skip
            lines += return_section(returns)
    if jsons:
        lines += bench_section(jsons)
    if checks:
        lines += crosscheck_section(checks)
    if compares:
        lines += ["## Seeds pooled by `metarl compare`", ""]
        lines += [f"- [{c.name}](../../{_rel(c)})" for c in compares] + [""]
    return Page("\n".join(lines).rstrip("\n") + "\n", figures)


GENERATED = "<!-- generated by docs/generate.py from benchmarks/results/; do not edit -->"


def benchmarks() -> list[str]:
    return sorted((p.name for p in RESULTS.iterdir() if p.is_dir() and p.name not in NOT_BENCHMARKS), key=natural_key)


# --- speed --------------------------------------------------------------------------------------------------------

TRAINING_PATHS = (
    ("rl2_sync_1t", "RL² ML10, old path"),
    ("rl2_best", "RL² ML10, best path"),
    ("rl2_overlap", "RL² ML10, best path + `--overlap`"),
    ("maml_sync_1t", "MAML-TRPO ML10, old path"),
    ("maml_best", "MAML-TRPO ML10, best path"),
)


def training_table(data: dict) -> list[str]:
    """A ``benchmarks/speed/training.py`` JSON: one row per measured path, and each agent's learning speed-up."""
    rows = []
    for key, name in TRAINING_PATHS:
        if key not in data:
            continue
        flags = ", ".join(data.get(f"{key}_flags") or []) or "defaults"
        rows.append((name, f"{data.get(f'{key}_threads', '?')} threads, {flags}", f"{data[f'{key}_env_steps']:,}",
                     f"{data[f'{key}_sampling_s']:.1f} s", f"{data[f'{key}_learning_s']:.1f} s",
                     f"{data[f'{key}_learning_s_per_100k']:.1f} s", f"{data[key]:,.0f}",
                     f"{data[key] / data['limit']:.2f}", f"{data[f'{key}_peak_rss_mib']:,.0f} MiB"))  # fmt: skip
    header = ["path", "learner", "env steps", "sampling", "learning", "per 100k", "steps/s", "/ limit", "peak memory"]
    lines = md_table(header, rows)
    lines += ["", f"`limit` (2 bare processes stepping the same envs, random actions): {data['limit']:,.0f} steps/s."]
    for agent in ("rl2", "maml"):
        if f"{agent}_sync_1t" in data and f"{agent}_best" in data:
            ratio = data[f"{agent}_sync_1t_learning_s_per_100k"] / data[f"{agent}_best_learning_s_per_100k"]
            lines.append(f"Learning per 100k samples, old path / best path, {agent}: **{ratio:.2f}x**.")
    return lines


def iteration_table(data: dict) -> list[str]:
    """``speed/iteration-*.json``: one training iteration per row on a lent GPU machine."""
    rows = [
        (f"`{r['key']}`", f"{r['env_steps']:,}", f"{r['sampling_s']:.1f} s", f"{r['learning_s']:.2f} s",
         f"{r['iteration_s']:.1f} s", f"{r['steps_per_s']:,}", f"{r['peak_gpu_mib']:,} MiB",
         f"{r['peak_host_used_mib'] / 1024:.1f} GiB")
        for r in data["rows"]
    ]  # fmt: skip
    header = ["row", "env steps", "sampling", "learning", "iteration", "steps/s", "peak GPU", "peak host"]
    return [data["what"][:1].upper() + data["what"][1:] + ".", "", *md_table(header, rows)]


SAMPLER_METHODS = ("limit", "limit_strict", "gym_sync", "gym_async", "sb3_subproc", "metarl_mlp", "metarl_gru",
                   "metarl_ray")  # fmt: skip


def sampler_table(data: dict) -> list[str]:
    """``benchmarks/speed/sampler.py`` JSON: steps/s with 10 and 20 envs, against ``limit``."""
    rows = []
    for m in SAMPLER_METHODS:
        if data.get(m) is not None:
            twenty = data.get(f"{m}_20")
            rows.append((f"`{m}`", f"{data[m]:,.0f}", f"{data[m] / data['limit']:.2f}",
                         "n/a" if twenty is None else f"{twenty:,.0f}",
                         "n/a" if twenty is None else f"{twenty / data['limit_20']:.2f}"))  # fmt: skip
    machine = data["meta"]["machine"]
    workers = data["meta"]["settings"]["workers"]
    note = f"{machine['cpu_count']} cores ({machine['cpu']}), {workers} workers."
    lines = [note, "", *md_table(["method", "steps/s, 10 envs", "/ limit", "steps/s, 20 envs", "/ limit"], rows)]
    ray = [data[k] / data[lim] for k, lim in (("metarl_ray", "limit"), ("metarl_ray_20", "limit_20")) if data.get(k)]
    lines += ["", f"Per-core simulator rate r = `limit` / {workers} = **{data['limit'] / workers:,.0f} steps/s**."]
    if ray:
        lines.append(f"Engine efficiency η = **{min(ray):.2f}**, the Ray actor's lower fraction of the limit.")
    if data.get("metarl_ray") and data.get("metarl_mlp"):
        both = (("", 10), ("_20", 20))
        sizes = [(x, n) for x, n in both if data.get("metarl_ray" + x) and data.get("metarl_mlp" + x)]
        pairs = [f"{data[f'metarl_ray{x}'] / data[f'metarl_mlp{x}']:.2f} with {n} envs" for x, n in sizes]
        lines.append(f"Ray actor / process backend (the same engine, policy and envs): {', '.join(pairs)}.")
    return lines


def speed_tables() -> dict[str, list[str]]:
    """``{JSON path under benchmarks/results/: its table}`` for every speed JSON."""
    out = {}
    for f, d in _json_files(RESULTS / "speed"):
        key = _rel(f)
        if "rows" in d:
            out[key] = iteration_table(d)
        elif "limit" in d and "meta" in d and "settings" in d["meta"]:
            out[key] = sampler_table(d)
        elif "limit" in d:
            out[key] = training_table(d)
    return out


def speed_page() -> Page:
    lines = ["# Speed", "", GENERATED, "",
             "What a training iteration and the rollout engine cost, from the JSONs under `benchmarks/results/speed/` "
             "(each JSON records its command, machine and package versions). What the figures mean, and the "
             "projections to larger machines: [docs/scaling.md](../scaling.md).", ""]  # fmt: skip
    for key, table in speed_tables().items():
        lines += [f"## [{Path(key).name}](../../{key})", "", *table, ""]
    return Page("\n".join(lines).rstrip("\n") + "\n")


# --- README's headline table and the generated blocks -------------------------------------------------------------


@dataclass(frozen=True)
class Headline:
    """One row of the README's table: the committed results it pools (seeds of one setting) and its references."""

    benchmark: str
    agent: str
    files: tuple[str, ...]  # globs under benchmarks/results/<benchmark>/ (JSONs or run directories)
    published: str
    config: str | None = None  # the named config that reproduces the row, where the runs recorded another


HEADLINES = (
    Headline("ML1-reach", "RL²", ("rl2-tuned-sr10-s*-5M.json", "rl2-shaped-s*-5M.json"), "none", "`rl2-ml1-shaped`"),
    Headline("ML1-reach", "MAML-TRPO", ("maml-trpo-s*-1M.json",), "none"),
    Headline("ML1-push", "RL²", ("rl2-s*-60min.json",), "none"),
    Headline("ML10", "RL²", ("rl2-ml10-s*",), "0.358 (max over training)"),
    Headline("ML10", "RL²", ("rl2-ml10-kl02-s*",), "0.358 (max over training)"),
    Headline("ML10", "MAML-TRPO", ("maml-trpo-ml10-s*",), "0.316 (max over training)"),
)


def _control_mean(j: BenchJSON) -> float:
    """RL²'s control (no reward input), or MAML's curve point 0 (before the inner step)."""
    control = (j.data.get("control") or {}).get("success")
    return float(control["mean"]) if isinstance(control, dict) else float(j.data["heldout"]["curve"]["success"][0])


def _headline_row(h: Headline) -> tuple[str, ...]:
    folder = RESULTS / h.benchmark
    paths = sorted({p for g in h.files for p in folder.glob(g)}, key=lambda p: natural_key(p.name))
    page = f"[{h.benchmark}](docs/results/{h.benchmark}.md)"
    if paths and paths[0].is_dir():
        runs = [read_run(p) for p in paths]
        run = runs[0]
        if run.final is not None:
            figure = success_ci(run.final).format(2) + f", {len(runs)} seed"
        else:
            figure = f"{run.curve[-1][1]:.2f} (periodic test, training)" if run.curve else "n/a"
        steps = f"{run.env_steps / 1e6:g}M" + (
            "" if run.budget in (None, run.env_steps) else f" of {run.budget / 1e6:g}M"
        )
        return (
            h.benchmark,
            h.agent,
            run.config_label,
            steps,
            figure,
            control_text(run).split(" (")[0],
            h.published,
            page,
        )
    jsons = [BenchJSON(p, json.loads(p.read_text())) for p in paths]
    if len(jsons) == 1:
        figure = jsons[0].evaluation("heldout") + ", 1 seed"
        control = jsons[0].control().split(" ")[0]
    else:
        scores = [[v["success"] for v in j.data["heldout"]["per_family"].values()] for j in jsons]
        figure = f"{aggregate(scores)['iqm'].format(2)} IQM, {len(jsons)} seeds"
        controls = [_control_mean(j) for j in jsons]
        control = f"{np.mean(controls):.2f}"
    config = h.config or sorted({j.label for j in jsons})[-1]
    steps = f"{jsons[0].env_steps / 1e6:g}M"
    return (h.benchmark, h.agent, config, steps, figure, control, h.published, page)


def headline_table() -> list[str]:
    header = ["benchmark", "agent", "config", "env steps", "held-out success [95% CI]", "control", "published", "page"]
    return md_table(header, [_headline_row(h) for h in HEADLINES])


# --- README's run-time table ----------------------------------------------------------------------------------------

ITERATION_JSON = RESULTS / "speed" / "iteration-ml10-h200-16cores.json"
TRAINING_JSON = RESULTS / "speed" / "training-ml10-2cores.json"


@dataclass(frozen=True)
class RunTime:
    """One row of README's table: a whole run's training time on 2 cores, 16 cores and 16 cores with one GPU."""

    label: str
    agent: str  # the speed JSONs' prefix: "rl2" or "maml"
    benchmark: str
    budget: int
    runs: str = ""  # glob of run directories under benchmarks/results/<benchmark>/ (their summed iteration times)
    jsons: str = ""  # glob of learning-benchmark JSONs (their ``train_wall_minutes``)


RUN_TIMES = (
    RunTime("RL² ML1-reach, 5M steps", "rl2", "ML1-reach", 5_000_000, jsons="rl2-tuned-sr10-s*-5M.json"),
    RunTime("MAML-TRPO ML1-reach, 1M steps", "maml", "ML1-reach", 1_000_000, jsons="maml-trpo-s*-1M.json"),
    RunTime("RL² ML10, 20M steps", "rl2", "ML10", 20_000_000, runs="rl2-ml10-s*"),
    RunTime("MAML-TRPO ML10, 20M steps", "maml", "ML10", 20_000_000, runs="maml-trpo-ml10-s*"),
    RunTime("RL² ML45, 90M steps", "rl2", "ML45", 90_000_000, runs="rl2-ml45-s*"),
    RunTime("MAML-TRPO ML45, 90M steps", "maml", "ML45", 90_000_000, runs="maml-trpo-ml45-s*"),
)


def _span(hours: list[float]) -> str:
    lo, hi = _hours(min(hours) * 3600), _hours(max(hours) * 3600)
    return lo if lo == hi else f"{lo.split()[0]}–{hi}"


def _two_cores(row: RunTime) -> str:
    """Committed whole runs' wall-clock (*runs*), a committed run's median iteration rate times the budget (*run*;
    the median leaves out iterations slowed by other work on the machine), or ML10's 2-core training benchmark
    times the budget (*ML10 rate*, for a benchmark without a committed run)."""
    folder = RESULTS / row.benchmark
    if row.jsons:
        minutes = [json.loads(p.read_text())["train_wall_minutes"] for p in folder.glob(row.jsons)]
        if minutes:
            return f"{_span([m / 60 for m in minutes])} (runs)"
    rates = _run_rates(row)
    if rates:
        return f"{_span([row.budget / rate / 3600 for rate in rates])} (run)"
    if TRAINING_JSON.is_file():
        data = json.loads(TRAINING_JSON.read_text())
        if f"{row.agent}_best" in data:
            return f"{_hours(row.budget / data[f'{row.agent}_best'])} (ML10 rate)"
    return "not measured"


def _iteration_rate(row: RunTime, device: str) -> str:
    """16 cores (``cpu_16t``) or 16 cores and the GPU (``cuda``): the lent machine's ML10 iteration at the
    reference settings times the budget (*rate*); for ML45, ML10's rate (*ML10 rate*)."""
    if not ITERATION_JSON.is_file() or row.benchmark not in ("ML10", "ML45"):
        return "not measured"
    by_key = {r["key"]: r for r in json.loads(ITERATION_JSON.read_text())["rows"]}
    measured = by_key.get(f"{row.agent}_ml10_{device}")
    if measured is None:
        return "not measured"
    if row.benchmark == "ML10":
        return f"{_hours(row.budget / measured['steps_per_s'])} (rate)"
    scale = _two_core_ratio(row)
    if scale is None:
        return f"{_hours(row.budget / measured['steps_per_s'])} (ML10 rate)"
    return f"{_hours(row.budget / (measured['steps_per_s'] * scale))} (scaled ML10 rate)"


def _run_rates(row: RunTime) -> list[float]:
    """The median iteration rates (env steps/s) of ``row``'s committed run directories."""
    folder = RESULTS / row.benchmark
    dirs = sorted(p for p in folder.glob(row.runs) if (p / "config.json").is_file()) if row.runs else []
    return [r.median_steps_per_s for r in map(read_run, dirs) if r.median_steps_per_s]


def _two_core_ratio(row: RunTime) -> float | None:
    """A benchmark's median 2-core rate over ML10's for the same agent's committed runs (None without both)."""
    ml10 = next(r for r in RUN_TIMES if r.agent == row.agent and r.benchmark == "ML10")
    ours, theirs = _run_rates(row), _run_rates(ml10)
    return float(np.median(ours) / np.median(theirs)) if ours and theirs else None


def run_time_table() -> list[str]:
    """How long a whole training run takes, from the committed runs and speed JSONs (evaluation not counted)."""
    rows = [(r.label, _two_cores(r), _iteration_rate(r, "cpu_16t"), _iteration_rate(r, "cuda")) for r in RUN_TIMES]
    what = json.loads(ITERATION_JSON.read_text())["what"] if ITERATION_JSON.is_file() else "no JSON"
    commit = what.split("metarl at commit ")[-1].split(",")[0] if "metarl at commit " in what else "?"
    return [
        *md_table(["run", "2 cores", "16 cores", "16 cores + one GPU"], rows),
        "",
        "*runs*: committed runs' wall-clock (the range over seeds). *run*: a committed run's median iteration",
        "rate times the budget. *rate*: an iteration benchmark's rate times the budget. *ML10 rate*: projected",
        "from ML10's rate, for a benchmark without its own measurement; *scaled ML10 rate*: ML10's rate times",
        "the benchmark's 2-core rate over ML10's (committed runs of the agent). The 16-core figures were measured at",
        f"commit {commit}, before the compiled GRU and `--hvp-subsample`, so they are upper bounds.",
    ]


# --- docs/scaling.md's projections ------------------------------------------------------------------------------

COMPILED_JSON = RESULTS / "speed" / "training-rl2-ml10-2cores-compiled.json"
SAMPLER_16_JSON = RESULTS / "speed" / "sampler-16workers-h200.json"
RL2_TRIAL_STEPS = 5_000  # one RL² trial on ML10: 10 episodes of 500 steps, stepped one after another in a slot
ACTOR_CORES = 16  # the assumed Ray layout: one actor (one engine) per 16 cores
MAML_ENVS = 200  # MAML-TRPO ML10 runs at most 20 tasks x 10 episodes side by side


def _projection_row(machine: str, sampling: float, learning: float, iterations: int, note: str = "") -> tuple:
    return (machine, f"{sampling:.1f} s{note}", f"{learning:.2f} s" if learning < 1 else f"{learning:.1f} s",
            f"{sampling + learning:.1f} s", _hours((sampling + learning) * iterations))  # fmt: skip


def projection_tables() -> dict[str, list[str]]:
    """RL² and MAML-TRPO ML10 per iteration on 2, 16, 64 and 256 cores and one GPU: the measured rows from the
    speed JSONs, the larger machines from them under the assumptions each row names."""
    if not all(f.is_file() for f in (ITERATION_JSON, TRAINING_JSON, COMPILED_JSON, SAMPLER_16_JSON)):
        return {}
    gpu = {r["key"]: r for r in json.loads(ITERATION_JSON.read_text())["rows"]}
    two = json.loads(TRAINING_JSON.read_text())
    compiled = json.loads(COMPILED_JSON.read_text())
    per_core_16 = json.loads(SAMPLER_16_JSON.read_text())["limit_20"] / ACTOR_CORES
    header = ["machine", "sampling per iteration", "learning per iteration", "iteration", "20M steps"]

    rl2_its = int(20_000_000 // compiled["rl2_best_env_steps"])
    trial = RL2_TRIAL_STEPS / per_core_16
    cpu, cuda = gpu["rl2_ml10_cpu_16t"], gpu["rl2_ml10_cuda"]
    rl2 = [
        _projection_row(f"2 cores, best path, compiled GRU loop (measured, `{_rel(COMPILED_JSON)}`)",
                        compiled["rl2_best_sampling_s"], compiled["rl2_best_learning_s"], rl2_its),
        _projection_row("2 cores, old path (the same run)", compiled["rl2_sync_1t_sampling_s"],
                        compiled["rl2_sync_1t_learning_s"], rl2_its),
        _projection_row("16 cores, 16 learner threads (measured; float32, `nn.GRU`: before the fused GRU)",
                        cpu["sampling_s"], cpu["learning_s"], rl2_its),
        _projection_row("16 cores + one GPU (measured)", cuda["sampling_s"], cuda["learning_s"], rl2_its),
        _projection_row("64 or 256 cores, CPU learner (assumed)", trial, cpu["learning_s"], rl2_its,
                        f" (one trial's {RL2_TRIAL_STEPS:,} steps at {per_core_16:,.0f} steps/s, a core of the "
                        "16-worker machine: RL² steps at most one env per task)"),
        _projection_row("64 or 256 cores + one GPU (assumed)", trial, cuda["learning_s"], rl2_its),
    ]  # fmt: skip

    steps = two["maml_best_env_steps"]
    maml_its = int(20_000_000 // steps)
    cpu, cuda = gpu["maml_ml10_cpu_16t"], gpu["maml_ml10_cuda"]
    engine = cuda["env_steps"] / cuda["sampling_s"]  # one 16-core engine's measured sampling rate
    wide = min(1.0, MAML_ENVS / 256)
    maml = [
        _projection_row(f"2 cores, best path (measured, `{_rel(TRAINING_JSON)}`)", two["maml_best_sampling_s"],
                        two["maml_best_learning_s"], maml_its),
        _projection_row("2 cores, old path (the same run)", two["maml_sync_1t_sampling_s"],
                        two["maml_sync_1t_learning_s"], maml_its),
        _projection_row("16 cores, 16 learner threads, `hvp_subsample` 1 (measured)", cpu["sampling_s"],
                        cpu["learning_s"], maml_its),
        _projection_row("16 cores + one GPU (measured)", cuda["sampling_s"], cuda["learning_s"], maml_its),
        _projection_row(f"64 cores, CPU learner (assumed: 4 actors x {engine:,.0f} steps/s)", steps / (4 * engine),
                        cpu["learning_s"], maml_its),
        _projection_row("64 cores + one GPU (assumed)", steps / (4 * engine), cuda["learning_s"], maml_its),
        _projection_row(f"256 cores, CPU learner (assumed: 16 actors, but {MAML_ENVS} envs at most)",
                        steps / (16 * engine * wide), cpu["learning_s"], maml_its),
        _projection_row("256 cores + one GPU (assumed)", steps / (16 * engine * wide), cuda["learning_s"], maml_its),
    ]  # fmt: skip
    return {"projections-rl2-ml10": md_table(header, rl2), "projections-maml-ml10": md_table(header, maml)}


def blocks() -> dict[str, list[str]]:
    """The generated blocks, by name: ``<!-- generated:NAME -->`` ... ``<!-- /generated:NAME -->`` in a file."""
    return {"headline": headline_table(), "run-times": run_time_table(), **projection_tables(), **speed_tables()}


def fill_blocks(text: str, generated: dict[str, list[str]]) -> str:
    """``text`` with every marked block replaced by what the generator writes for its name."""
    out, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        out.append(lines[i])
        line = lines[i].strip()
        if line.startswith("<!-- generated:") and line.endswith("-->"):
            name = line[len("<!-- generated:") : -len("-->")].strip()
            if name not in generated:
                raise SystemExit(f"{lines[i]!r}: no generated block of that name; known: {sorted(generated)}")
            end = f"<!-- /generated:{name} -->"
            j = next((k for k in range(i + 1, len(lines)) if lines[k].strip() == end), None)
            if j is None:
                raise SystemExit(f"{lines[i]!r} has no closing {end!r}")
            out += generated[name] + [lines[j]]
            i = j
        i += 1
    return "\n".join(out) + "\n"


def pages() -> dict[Path, Page]:
    """``{page path: Page}`` for every benchmark folder with results, and the speed page."""
    out = {}
    for benchmark in benchmarks():
        page = benchmark_folder_page(benchmark, RESULTS / benchmark)
        if page is not None:
            out[PAGES / f"{benchmark}.md"] = page
    if (RESULTS / "speed").is_dir():
        out[PAGES / "speed.md"] = speed_page()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare the committed Markdown; write nothing")
    args = parser.parse_args(argv)
    written = {path: page.text for path, page in pages().items()}
    generated = blocks()
    for doc in (README, SCALING):
        if doc.is_file():
            written[doc] = fill_blocks(doc.read_text(), generated)
    stale = []
    for path, text in written.items():
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(path)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
            print(f"wrote {path}")
    if not args.check:
        for page in pages().values():
            for draw, _ in page.figures:
                draw()
    if stale:
        print(f"out of date (run python docs/generate.py): {', '.join(map(str, stale))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
