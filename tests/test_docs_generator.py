"""docs/generate.py: the results pages come from the committed run directories, and the committed pages are
what the generator writes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs"))

import generate  # noqa: E402

from metarl.evaluation.result import EvalResult, protocol_name  # noqa: E402


def _result(env_steps: int, successes: dict[str, list[float]], *, feedback: bool = True) -> EvalResult:
    per_task = {
        f"ML10/test/{fam}/{i}": {"success": s, "return": 100 * s, "family": fam}
        for fam, values in successes.items()
        for i, s in enumerate(values)
    }
    per_family = {f: {"success": float(np.mean(v)), "return": 100 * float(np.mean(v))} for f, v in successes.items()}
    mean = float(np.mean([v["success"] for v in per_task.values()]))
    return EvalResult(
        distribution="ML10", split="test", agent="rl2", env_steps=env_steps, success_mean=mean,
        return_mean=100 * mean, curve={"x": [0, 1], "unit": "episodes", "success": [0.1, mean], "return": [1, 2]},
        per_family=per_family, per_task=per_task, eval_episodes_per_task=3, adaptation_episodes=10, seed=0,
        extra={"feedback": feedback, "deterministic": True, "protocol": protocol_name(True), "config_name": "rl2-ml10"},
    )  # fmt: skip


def test_a_run_directory_becomes_a_page_with_its_figures(tmp_path: Path) -> None:
    run = tmp_path / "rl2-ml10-s0"
    (run / "eval").mkdir(parents=True)
    (run / "config.json").write_text(
        json.dumps({"config_name": "rl2-ml10", "train": {"agent": "rl2", "seed": 0, "total_env_steps": 4_000_000}})
    )
    (run / "meta.json").write_text(
        json.dumps({"command": [".venv/bin/metarl", "train", "rl2", "--config", "rl2-ml10"]})
    )
    rows = ["iteration,charts/env_steps,charts/success_rate,time/iteration_s"]
    rows += [f"{i},{i * 100_000},{0.1 * (i % 2)},36" for i in range(1, 41)]
    (run / "progress.csv").write_text("\n".join(rows) + "\n")
    for it, level in ((20, 0.2), (40, 0.1)):
        _result(it * 100_000, {"a-v3": [level] * 4, "b-v3": [level] * 4}).save(run / "eval" / f"iter-{it:06d}.json")
    _result(4_000_000, {"a-v3": [1.0, 1.0, 0.0, 1.0], "b-v3": [0.0] * 4}).save(run / "eval" / "final.json")
    _result(4_000_000, {"a-v3": [0.0] * 4, "b-v3": [0.0] * 4}, feedback=False).save(run / "eval" / "no-feedback.json")

    read = generate.read_run(run)
    assert read.curve == [(2_000_000, 0.2), (4_000_000, 0.1)]
    assert read.train_success == pytest.approx(0.05)  # the last 10 iterations alternate 0.1 and 0
    assert read.wall_s == 40 * 36 and read.command == "metarl train rl2 --config rl2-ml10"
    page = generate.benchmark_page("ML10", [read])
    row = next(line for line in page.splitlines() if line.startswith("| `rl2-ml10` s0"))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[1] == "4,000,000"
    assert cells[2].startswith("0.38 [") and cells[3] == "0.00 (no reward input)"
    assert cells[4] == "0.20" and cells[5] == "0.05" and cells[6] == "24 min"
    assert "| a-v3 | 0.75 [" in page and "| b-v3 | 0.00 [0.00, 0.00] |" in page
    assert "35.8%" in page and "31.6%" in page  # the published figures beside them
    assert "--no-feedback`" in page
    with pytest.raises(ValueError, match=r"no tasks of family 'c-v3'; it has \['a-v3', 'b-v3'\]"):
        generate.success_ci(read.final, "c-v3")  # type: ignore[arg-type]


def test_the_committed_pages_are_what_the_generator_writes() -> None:
    assert generate.main(["--check"]) == 0


def test_the_check_catches_a_page_edited_by_hand(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(generate, "PAGES", tmp_path)
    for name in ("README", "SCALING"):  # the generated blocks are checked in copies of the committed files
        copy = tmp_path / getattr(generate, name).name
        copy.write_text(getattr(generate, name).read_text())
        monkeypatch.setattr(generate, name, copy)
    assert generate.main([]) == 0  # writes the pages (and figures) into tmp_path
    assert generate.main(["--check"]) == 0
    assert (tmp_path / "ML10-training.png").is_file() and (tmp_path / "speed.md").is_file()
    page = tmp_path / "ML10.md"
    page.write_text(page.read_text() + "edited by hand\n")
    assert generate.main(["--check"]) == 1
    generate.main([])
    table = generate.README.read_text().replace("| ML10 | RL² |", "| ML10 | RL2 |")
    generate.README.write_text(table)  # a figure edited inside a generated block of the README
    assert generate.main(["--check"]) == 1


def test_every_committed_result_schema_has_a_page() -> None:
    """Each benchmark folder under benchmarks/results/ with results gets a page; each speed JSON a table."""
    pages = generate.pages()
    names = {p.name for p in pages}
    assert {"ML1-reach.md", "ML1-push.md", "ML10.md", "cheetah-dir.md", "speed.md"} <= names
    reach = pages[generate.PAGES / "ML1-reach.md"].text
    assert "rl2-tuned-sr10-s0-5M.json" in reach and "Meta-World's evaluator" in reach
    cheetah = pages[generate.PAGES / "cheetah-dir.md"].text
    data = json.loads((generate.RESULTS / "cheetah-dir" / "maml-trpo-s0-300it.json").read_text())
    assert f"**{data['final_sampled']['return_after_one_step']:.1f}**" in cheetah
    speed = pages[generate.PAGES / "speed.md"].text
    for path in sorted((generate.RESULTS / "speed").glob("*.json")):
        assert path.name in speed


def test_generated_blocks_are_filled_and_unknown_ones_refused() -> None:
    text = "a\n<!-- generated:x -->\nold\n<!-- /generated:x -->\nb\n"
    assert generate.fill_blocks(text, {"x": ["new"]}) == "a\n<!-- generated:x -->\nnew\n<!-- /generated:x -->\nb\n"
    with pytest.raises(SystemExit, match="no generated block of that name"):
        generate.fill_blocks(text, {})
    with pytest.raises(SystemExit, match="has no closing"):
        generate.fill_blocks("<!-- generated:x -->\n", {"x": []})
    readme, scaling = generate.README.read_text(), generate.SCALING.read_text()
    assert "<!-- generated:headline -->" in readme
    assert "<!-- generated:benchmarks/results/speed/training-ml10-2cores.json -->" in scaling
