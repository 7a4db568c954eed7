"""Seeds of one learning-benchmark setting, aggregated: IQM and mean with 95% intervals, as ``metarl compare``.

    python benchmarks/learning/seeds.py benchmarks/results/rl2-ml1-reach-s{0,1,2}-...-5M.json \\
        --out benchmarks/results/rl2-ml1-reach-3seeds-5M.md

Reads the JSONs ``benchmarks/learning/metaworld.py`` writes (committed under ``benchmarks/results/``, so runs
from different sessions and machines can be put together after their run directories are gone) and gives,
for each evaluation they hold (the held-out meta-test with the mean action, with sampled actions, the
adaptation control, and the gap between the first and the control), the IQM and mean over the
``[seeds, task families]`` matrix of per-family success with 95% stratified-bootstrap intervals over seeds:
the statistics and code ``metarl compare`` uses (:func:`metarl.evaluation.stats.aggregate`).  The results
must be of one setting: the same agent, benchmark, config, overrides, evaluated env steps and goals, and
distinct training seeds; anything else is refused with the field that differs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]  # this folder holds metaworld.py

import numpy as np  # noqa: E402

from metarl.errors import UserError  # noqa: E402
from metarl.evaluation.stats import aggregate  # noqa: E402

SAME = (
    "agent", "benchmark", "config", "overrides", "overlap", "goals_per_family", "meta_batch", "episodes_per_task",
    "success_reward",
)  # fmt: skip
DEFAULTS = {"overlap": False, "goals_per_family": None, "success_reward": 0.0}  # results written before these
# results written before these fields existed do not say: such a field is compared only where both results give it
UNKNOWN_BEFORE = {"meta_batch": None, "episodes_per_task": None}
EVALUATIONS = (
    ("heldout", "held-out, mean action (`metarl eval --deterministic`)"),
    ("heldout_sampled", "held-out, sampled actions"),
    ("control", "adaptation control"),
)


def load(path: Path) -> dict[str, Any]:
    """One learning-benchmark JSON, checked for the fields this script reads."""
    try:
        figures = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{str(path)!r} does not exist; give JSONs benchmarks/learning/metaworld.py wrote") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{str(path)!r} is not readable JSON ({exc})") from None
    required = [k for k in (*SAME, "seed", "heldout") if k not in DEFAULTS and k not in UNKNOWN_BEFORE]
    missing = [k for k in required if not isinstance(figures, dict) or k not in figures]
    if missing:
        raise UserError(f"{str(path)!r} is not a learning-benchmark result (no {', '.join(missing)})")
    return {**DEFAULTS, **UNKNOWN_BEFORE, **figures}


def _family_scores(figures: dict[str, Any], key: str) -> dict[str, float] | None:
    """Per-family success of one evaluation; MAML's control (the curve's point 0) has one figure, no families."""
    evaluation = figures.get(key)
    if evaluation is None:
        return None
    if "per_family" in evaluation:
        return {family: float(v["success"]) for family, v in evaluation["per_family"].items()}
    return {"(all)": float(evaluation["success"])}


def check_one_setting(results: list[tuple[Path, dict[str, Any]]]) -> None:
    """Refuse results of different settings, or two of one seed."""
    first_path, first = results[0]
    for path, figures in results[1:]:
        for key in SAME:
            if key in UNKNOWN_BEFORE and (figures[key] is None or first[key] is None):
                continue
            if figures[key] != first[key]:
                raise UserError(
                    f"{str(path)!r} differs from {str(first_path)!r} in {key}: {figures[key]!r} against "
                    f"{first[key]!r}; aggregate seeds of one setting only"
                )
        if figures["heldout"]["env_steps"] != first["heldout"]["env_steps"]:
            raise UserError(
                f"{str(path)!r} was evaluated at {figures['heldout']['env_steps']:,} env steps, {str(first_path)!r} "
                f"at {first['heldout']['env_steps']:,}; aggregate results at equal env steps"
            )
    seeds = [figures["seed"] for _, figures in results]
    if len(set(seeds)) != len(seeds):
        raise UserError(f"training seeds repeat ({seeds}); give each seed's result once")


def matrix(results: list[dict[str, Any]], key: str) -> np.ndarray | None:
    """[seeds, families] success of one evaluation over the families every result holds (None if one lacks it)."""
    found = [_family_scores(figures, key) for figures in results]
    scores = [s for s in found if s is not None]
    if len(scores) < len(found):
        return None
    families = sorted(set.intersection(*(set(s) for s in scores)))
    if not families:
        raise UserError(f"the results share no task family in {key!r}")
    return np.asarray([[s[f] for f in families] for s in scores], dtype=np.float64)


def report(paths: list[Path], reps: int = 2000, seed: int = 0) -> str:
    """The Markdown table of the aggregated seeds."""
    if len(paths) < 2:
        raise UserError(f"give at least two results to aggregate, got {len(paths)}")
    loaded = [(p, load(p)) for p in paths]
    check_one_setting(loaded)
    results = [figures for _, figures in loaded]
    first = results[0]
    rows = []
    per_seed = {}
    for key, label in EVALUATIONS:
        m = matrix(results, key)
        if m is None:
            continue
        per_seed[key] = m.mean(1)
        agg = aggregate(m, reps=reps, seed=seed)
        rows.append(f"| {label} | {agg['iqm'].format()} | {agg['mean'].format()} | "
                    + ", ".join(f"{v:.2f}" for v in m.mean(1)) + " |")  # fmt: skip
    if "heldout" in per_seed and "control" in per_seed:
        gap = (per_seed["heldout"] - per_seed["control"])[:, None]
        agg = aggregate(gap, reps=reps, seed=seed)
        rows.append(f"| gap: mean action − control | {agg['iqm'].format()} | {agg['mean'].format()} | "
                    + ", ".join(f"{v:+.2f}" for v in gap[:, 0]) + " |")  # fmt: skip
    seeds = [figures["seed"] for figures in results]
    minutes = [figures.get("train_wall_minutes", float("nan")) for figures in results]
    steps = first["heldout"]["env_steps"]
    lines = [
        f"# {first['agent']} on {first['benchmark']}: {len(results)} seeds at {steps:,} env steps",
        "",
        f"Config `{first['config']}`, overrides {' '.join(f'`{o}`' for o in first['overrides']) or 'none'}"
        + (f", `--success-reward {first['success_reward']:g}`" if first["success_reward"] else "")
        + f"; training seeds {seeds}; training wall-clock "
        + ", ".join(f"{m:.1f}" for m in minutes)
        + " min. Success is per task family, then IQM and mean over the [seeds, families] matrix with 95% "
        f"stratified-bootstrap intervals over seeds ({reps} replicates, `metarl.evaluation.stats.aggregate`, "
        "as `metarl compare`). With 3 seeds the IQM trims nothing and equals the mean.",
        "",
        "| evaluation | success IQM [95% CI] | success mean [95% CI] | per seed |",
        "|---|---|---|---|",
        *rows,
        "",
        "## Inputs",
        "",
        *(f"- seed {figures['seed']}: `{path}`" for path, figures in loaded),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", type=Path, help="learning-benchmark JSONs, one per seed")
    parser.add_argument("--out", type=Path, default=None, help="also write the Markdown here")
    parser.add_argument("--reps", type=int, default=2000, help="bootstrap replicates")
    args = parser.parse_args(argv)
    try:
        text = report(args.results, reps=args.reps)
    except UserError as exc:
        print(f"seeds.py: error: {exc}", file=sys.stderr)
        return 2
    print(text, end="")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
