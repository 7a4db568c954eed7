"""One meta-test as Markdown: the protocol in words, the headline, the adaptation curve, per-family and per-task
tables."""

from __future__ import annotations

from collections.abc import Mapping

from metarl.evaluation.report.format import curve, md_table, natural_key, num, unit_words, x_text
from metarl.evaluation.result import EvalResult


def _protocol_sentence(result: EvalResult) -> str:
    n_tasks = len(result.per_task)
    budget = x_text(max(curve(result)[0]))
    unit = str(result.curve.get("unit", "episodes"))
    evals = result.eval_episodes_per_task
    if unit == "gradient_steps":
        adapt = (
            f"was adapted with up to {budget} gradient steps (each step on {max(result.adaptation_episodes, 1)} "
            f"fresh episodes of the task), and at every point of the curve {evals} evaluation episodes were run"
        )
    else:
        adapt = (
            f"was given up to {budget} {unit_words(unit)}, followed by {evals} evaluation episodes "
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
    xs, succ, ret = curve(result)
    lines = [
        f"# Meta-test: {result.distribution} ({result.split} split), agent `{result.agent}`",
        "",
        _protocol_sentence(result),
        _training_sentence(result),
        "",
        f"**Success {num(result.success_mean)}**, **return {num(result.return_mean)}** "
        f"(mean over {len(result.per_task)} tasks after the full adaptation budget).",
    ]
    lines.append(f"Before any adaptation: success {num(succ[0])}, return {num(ret[0])}.")
    lines += ["", "## Adaptation curve", "", f"Point x = after x {unit_words(unit)}; x = 0 is before adaptation.", ""]
    lines += md_table(
        [unit_words(unit), "success", "return"],
        [(x_text(x), num(s), num(r)) for x, s, r in zip(xs, succ, ret, strict=True)],
    )
    tasks_per_family: dict[str, int] = {}
    for entry in result.per_task.values():
        if isinstance(entry, Mapping) and "family" in entry:
            tasks_per_family[str(entry["family"])] = tasks_per_family.get(str(entry["family"]), 0) + 1
    lines += ["", "## Per family", ""]
    lines += md_table(
        ["family", "tasks", "success", "return"],
        [
            (fam, tasks_per_family.get(fam, ""), num(v.get("success")), num(v.get("return")))
            for fam, v in sorted(result.per_family.items(), key=lambda kv: natural_key(kv[0]))
        ],
    )
    lines += ["", "## Per task", ""]
    lines += md_table(
        ["task", "family", "success", "return"],
        [
            (tid, v.get("family", ""), num(v.get("success")), num(v.get("return")))
            for tid, v in sorted(result.per_task.items(), key=lambda kv: natural_key(kv[0]))
        ],
    )
    return "\n".join(lines) + "\n"
