"""Markdown and PNG reports of EvalResults, and `compare` across run directories and JSON files."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from metarl.evaluation.compare import compare
from metarl.evaluation.report import (
    MAX_TASK_BARS,
    plot_adaptation_curve,
    plot_per_task_success,
    plot_training_curves,
    render_markdown,
    write_eval_report,
)
from metarl.evaluation.result import EvalResult, protocol_name
from metarl.evaluation.stats import aggregate, iqm

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_result(
    agent: str = "rl2",
    seed: int = 0,
    success: dict[str, float] | None = None,
    *,
    distribution: str = "ML10",
    unit: str = "episodes",
    env_steps: int = 1_000_000,
) -> EvalResult:
    """An EvalResult built by hand: curve x = [0, 1, 2]; task returns = 10 * success + 2."""
    if success is None:
        ids = [f"{distribution}/test/reach-v3/{i}" for i in (2, 10, 3, 1)]
        success = dict(zip(ids, (0.5, 1.0, 0.0, 1.0), strict=True))
    per_task: dict[str, dict[str, float]] = {
        tid: {"success": s, "return": 10 * s + 2, "family": tid.split("/")[2]}  # type: ignore[dict-item]
        for tid, s in success.items()
    }
    s_mean = float(np.mean(list(success.values())))
    fams: dict[str, list[float]] = {}
    for v in per_task.values():
        fams.setdefault(str(v["family"]), []).append(v["success"])
    return EvalResult(
        distribution=distribution,
        split="test",
        agent=agent,
        env_steps=env_steps,
        success_mean=s_mean,
        return_mean=10 * s_mean + 2,
        curve={
            "x": [0, 1, 2],
            "unit": unit,
            "success": [0.1 + 0.01 * seed, 0.4, s_mean],
            "return": [3.0, 6.0, 10 * s_mean + 2],
        },
        per_family={f: {"success": float(np.mean(v)), "return": 10 * float(np.mean(v)) + 2} for f, v in fams.items()},
        per_task=per_task,
        eval_episodes_per_task=3,
        adaptation_episodes=2,
        seed=seed,
    )


def assert_png(path: Path, min_bytes: int = 5_000) -> tuple[int, int]:
    """The file is a PNG of a real figure; returns its (width, height) in pixels."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > min_bytes, (path, len(data))
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
    import matplotlib.image

    pixels = matplotlib.image.imread(path)  # decodes the whole file: a truncated or corrupt PNG raises
    assert pixels.shape[:2] == (height, width) and pixels.shape[2] in (3, 4), pixels.shape
    rgb = pixels[..., :3].reshape(-1, 3)
    # a drawn figure, not a blank canvas: ink on a few percent of it, in several colours
    assert float((rgb.min(axis=1) < 0.9).mean()) > 0.01, path
    assert len(np.unique(np.round(rgb * 255).astype(np.uint8), axis=0)) >= 8, path
    return width, height


def make_run_dir(path: Path, result: EvalResult, steps: tuple[int, ...] = (1000, 2000, 3000)) -> Path:
    """A minimal run directory: config.json, eval/final.json and TensorBoard events with eval/success."""
    import torch
    from torch.utils.tensorboard import SummaryWriter

    torch.set_num_threads(1)
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"train": {"agent": result.agent, "seed": result.seed}}))
    result.save(path / "eval" / "final.json")
    writer = SummaryWriter(log_dir=str(path))
    for i, step in enumerate(steps):
        writer.add_scalar("eval/success", (i + 1) / len(steps) * result.success_mean, step)
    writer.close()
    return path


# ----------------------------------------------------------------------------------------------- Markdown


def test_markdown_has_title_protocol_headline_curve_and_every_task() -> None:
    result = make_result()
    md = render_markdown(result)
    assert md.startswith("# Meta-test: ML10 (test split), agent `rl2`")
    assert "up to 2 adaptation episodes" in md and "3 evaluation episodes" in md and "any step" in md
    assert "**Success 0.625**" in md and "**return 8.250**" in md  # headline: mean success and return
    assert "1,000,000 environment steps" in md
    assert "| adaptation episodes | success | return |" in md
    assert "| 0 | 0.100 | 3.000 |" in md and "| 2 | 0.625 | 8.250 |" in md
    assert "| reach-v3 | 4 | 0.625 | 8.250 |" in md  # per family, with its task count
    for tid, entry in result.per_task.items():
        assert f"| {tid} | reach-v3 | {entry['success']:.3f} | {entry['return']:.3f} |" in md
    order = [md.index(f"ML10/test/reach-v3/{i} ") for i in (1, 2, 3, 10)]
    assert order == sorted(order)  # per-task table sorted by task id (numbers in order)


def test_markdown_for_gradient_steps_and_baselines() -> None:
    md = render_markdown(make_result("maml-trpo", unit="gradient_steps", env_steps=0))
    assert "up to 2 gradient steps (each step on 2 fresh episodes" in md
    assert "| gradient steps | success | return |" in md
    assert "env_steps = 0" in md


def test_markdown_rejects_a_bad_curve() -> None:
    result = make_result()
    result.curve["success"] = [0.1, 0.2]
    with pytest.raises(ValueError, match=r"bad adaptation curve.*one length"):
        render_markdown(result)


# ----------------------------------------------------------------------------------------------- figures


def test_write_eval_report_writes_markdown_and_two_pngs(tmp_path: Path) -> None:
    result = make_result()
    paths = write_eval_report(result, tmp_path / "report")
    assert [p.name for p in paths] == ["report.md", "curve.png", "per_task.png"]
    assert paths[0].read_text() == render_markdown(result)
    for png in paths[1:]:
        assert_png(png)
    assert not [p for p in (tmp_path / "report").iterdir() if p.name.endswith(".tmp")]  # no temp files left


def test_adaptation_curve_with_seeds_and_mixed_units(tmp_path: Path) -> None:
    groups = {
        "rl2": [make_result("rl2", seed=s) for s in range(3)],
        "maml-trpo": [make_result("maml-trpo", seed=s, unit="gradient_steps") for s in range(2)],
        "untrained": [make_result("untrained", env_steps=0)],
    }
    assert_png(plot_adaptation_curve(groups, tmp_path / "curve.png"))


def test_adaptation_curve_rejects_seeds_with_different_curves(tmp_path: Path) -> None:
    other = make_result(seed=1)
    other.curve = {"x": [0, 1], "unit": "episodes", "success": [0.0, 1.0], "return": [0.0, 1.0]}
    with pytest.raises(ValueError, match="results of 'rl2' have different adaptation curves"):
        plot_adaptation_curve({"rl2": [make_result(), other]}, tmp_path / "curve.png")
    with pytest.raises(ValueError, match="labels \\['x'\\] have no EvalResults"):
        plot_adaptation_curve({"x": []}, tmp_path / "curve.png")


@pytest.mark.parametrize(("families", "per_family"), [(1, 100), (5, 50), (45, 5)])
def test_many_tasks_give_family_bars_and_a_sorted_distribution_of_readable_size(
    tmp_path: Path, families: int, per_family: int
) -> None:
    rng = np.random.default_rng(0)
    tasks = [f"ML45/test/some-very-long-family-name-{f}-v3/{i}" for f in range(families) for i in range(per_family)]
    groups = {
        agent: [make_result(agent, seed=s, success={t: float(rng.random()) for t in tasks}) for s in range(2)]
        for agent in ("rl2", "maml-trpo")
    }
    width, height = assert_png(plot_per_task_success(groups, tmp_path / "per_task.png"))
    # one bar group per family plus a fixed-width panel, not one bar group per task (3,705 px for 100 tasks)
    assert 600 < width < (1400 if families <= 5 else 2800) and 400 < height < 900


def test_a_few_tasks_keep_one_bar_group_per_task(tmp_path: Path) -> None:
    tasks = [f"ML10/test/reach-v3/{i}" for i in range(MAX_TASK_BARS)]
    groups = {"rl2": [make_result("rl2", success={t: 0.5 for t in tasks})]}
    few, _ = assert_png(plot_per_task_success(groups, tmp_path / "few.png"))
    more = [f"ML10/test/reach-v3/{i}" for i in range(MAX_TASK_BARS + 1)]
    many, _ = assert_png(plot_per_task_success({"rl2": [make_result("rl2", success={t: 0.5 for t in more})]},
                                               tmp_path / "many.png"))  # fmt: skip
    assert few > 900 and many < few  # the bars widen the figure with the task count; the summary does not


def test_training_curves_from_events_and_from_progress_csv(tmp_path: Path) -> None:
    a = make_run_dir(tmp_path / "a", make_result("rl2", seed=0))
    b = make_run_dir(tmp_path / "b", make_result("rl2", seed=1), steps=(1000, 2500, 3000))
    c = tmp_path / "c"  # no events: progress.csv columns of the same names
    c.mkdir()
    (c / "progress.csv").write_text(
        "iteration,charts/env_steps,eval/return,eval/success\n1,500,,\n2,1000,4.0,0.25\n3,1500,,\n4,2000,6.0,0.5\n"
    )
    notes = plot_training_curves({"rl2": [a, b], "maml": [c]}, tmp_path / "train.png")
    assert_png(tmp_path / "train.png")
    assert notes == ["'eval/return': 2 of 2 runs of 'rl2' do not have it"]

    notes = plot_training_curves({"rl2": [a]}, tmp_path / "none.png", tags=("losses/nope",))
    assert not (tmp_path / "none.png").exists()
    assert "no run has training scalar 'losses/nope'" in notes[0] and "no training curves written" in notes[1]


# ----------------------------------------------------------------------------------------------- compare


def test_compare_two_agents_from_run_dirs_and_a_json_file(tmp_path: Path) -> None:
    tasks = [f"ML10/test/reach-v3/{i}" for i in range(5)]
    rl2 = [make_result("rl2", seed=s, success={t: (i + s) / 6 for i, t in enumerate(tasks)}) for s in range(2)]
    for s, result in enumerate(rl2):
        result.extra["train_seed"] = 10 + s  # as `metarl eval` records it
        make_run_dir(tmp_path / "rl2-runs" / f"seed-{s}", result)
    baseline = make_result("sb3-ppo-scratch", env_steps=0, success={t: 0.2 for t in tasks})
    baseline.save(tmp_path / "baseline.json")

    out = tmp_path / "cmp"
    paths = compare([tmp_path / "rl2-runs", tmp_path / "baseline.json"], out, reps=300)

    assert [p.name for p in paths] == [
        "compare.md",
        "ML10-test-split-curve.png",
        "ML10-test-split-per_task.png",
        "ML10-test-split-training.png",
    ]
    for png in paths[1:]:
        assert_png(png)
    md = (out / "compare.md").read_text()
    families = sorted(rl2[0].per_family)
    assert "## ML10 (test split)" in md and f"3 runs in 2 rows, {len(families)} task families" in md
    rows = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| `")}
    assert set(rows) == {"`rl2`", "`sb3-ppo-scratch`"}
    cells = [c.strip() for c in rows["`rl2`"].split("|")[1:-1]]
    scores = np.array([[r.per_family[f]["success"] for f in families] for r in rl2])
    expected = aggregate(scores, reps=300)
    assert cells[1] == "2"  # runs (seeds)
    assert cells[2] == expected["iqm"].format() and cells[2].startswith(f"{iqm(scores):.3f} [")
    assert cells[3] == expected["mean"].format()
    assert cells[5] == "1,000,000"
    baseline_cells = [c.strip() for c in rows["`sb3-ppo-scratch`"].split("|")[1:-1]]
    assert baseline_cells[1] == "1" and baseline_cells[2] == "0.200 (1 run: no CI)" and baseline_cells[5] == "0"
    assert md.index("`rl2`") < md.index("`sb3-ppo-scratch`")  # sorted by success IQM
    for p in paths[1:]:
        assert f"]({p.name})" in md  # figures embedded by relative path
    assert "'eval/return'" in md  # the missing training scalar is noted
    inputs = md[md.index("## Inputs") :]
    assert "(training seed 10, evaluation seed 0, 1,000,000 env steps)" in inputs
    assert "(training seed 11, evaluation seed 1, 1,000,000 env steps)" in inputs
    assert "`sb3-ppo-scratch` (evaluation seed 0, 0 env steps)" in inputs  # a result that does not record it


def test_compare_scores_per_family_and_says_when_families_or_tasks_differ(tmp_path: Path) -> None:
    a = make_result("rl2", success={"T/test/f/0": 1.0, "T/test/f/1": 0.0, "T/test/g/2": 1.0}, distribution="T")
    b = make_result("maml", success={"T/test/f/0": 0.5, "T/test/f/3": 0.5}, distribution="T")
    a.save(tmp_path / "a.json")
    b.save(tmp_path / "b.json")
    compare([tmp_path / "a.json", tmp_path / "b.json"], tmp_path / "out", reps=100)
    md = (tmp_path / "out" / "compare.md").read_text()
    assert "2 runs in 2 rows, 1 task families" in md
    assert "the table uses the 1 families all runs share (1 others left out)" in md
    assert "evaluated on different tasks" in md
    # rl2's score on family f is the mean over its f tasks: (1.0 + 0.0) / 2
    assert "| `rl2` | 1 | 0.500 (1 run: no CI)" in md and "| `maml` | 1 | 0.500 (1 run: no CI)" in md


def test_compare_refuses_a_run_without_final_json_unless_asked_and_then_says_so(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "run", make_result("rl2"))
    (run / "eval" / "final.json").rename(run / "eval" / "latest.json")
    with pytest.raises(ValueError, match=r"'.*run' has no eval/final.json .*only the last periodic .*--latest"):
        compare([run], tmp_path / "out", reps=100)
    said: list[str] = []
    paths = compare([run], tmp_path / "out", reps=100, latest=True, say=said.append)
    md = paths[0].read_text()
    assert "`rl2`" in md
    assert len(said) >= 1 and "read from their last periodic evaluation (eval/latest.json, --latest)" in said[0]
    assert str(run) in said[0] and said[0] in md
    # a run that has final.json is read from it even with --latest
    make_result("rl2", seed=7).save(run / "eval" / "final.json")
    compare([run], tmp_path / "out2", reps=100, latest=True)
    assert "evaluation seed 7" in (tmp_path / "out2" / "compare.md").read_text()


def test_compare_pools_only_seeds_of_one_agent_config_protocol_feedback_and_budget(tmp_path: Path) -> None:
    tasks = [f"ML10/test/reach-v3/{i}" for i in range(4)]

    def result(seed: int, level: float, **extra: object) -> EvalResult:
        r = make_result("rl2", seed=seed, success={t: level for t in tasks}, env_steps=int(extra.pop("steps", 20e6)))
        r.extra.update({"config_name": "rl2-ml10", "feedback": True, "deterministic": True,
                        "protocol": protocol_name(True), **extra})  # fmt: skip
        return r

    files = {
        "s0": result(0, 0.5),
        "s1": result(1, 0.25),  # pooled with s0
        "control": result(0, 0.0, feedback=False),
        "sampled": result(0, 0.75, deterministic=False, protocol=protocol_name(False)),
        "other-config": result(0, 1.0, config_name="rl2-ml10-targetkl"),
        "short": result(0, 0.125, steps=4_000_000),
    }
    for name, r in files.items():
        r.save(tmp_path / f"{name}.json")
    said: list[str] = []
    compare([tmp_path / f"{n}.json" for n in files], tmp_path / "out", reps=200, say=said.append)
    md = (tmp_path / "out" / "compare.md").read_text()
    assert "6 runs in 5 rows" in md
    table = [line for line in md.splitlines() if line.startswith("| `")]
    assert len(table) == 5
    by_first = {}
    for line in table:
        cells = [c.strip() for c in line.split("|")[1:-1]]
        by_first.setdefault(cells[0], []).append(cells)
    assert set(by_first) == {"`rl2`", "`rl2` control: no reward feedback"}
    (control,) = by_first["`rl2` control: no reward feedback"]
    assert control[1] == "1" and control[2] == "0.000 (1 run: no CI)"
    pooled = [c for c in by_first["`rl2`"] if c[1] == "2"]
    assert len(pooled) == 1 and pooled[0][2].startswith("0.375 [") and pooled[0][5] == "20,000,000"
    assert pooled[0][6] == "rl2-ml10" and pooled[0][7] == protocol_name(True) and pooled[0][8] == "2 + 3"
    singles = {(c[6], c[7], c[5]): c[2] for c in by_first["`rl2`"] if c[1] == "1"}
    assert singles == {
        ("rl2-ml10", protocol_name(False), "20,000,000"): "0.750 (1 run: no CI)",
        ("rl2-ml10-targetkl", protocol_name(True), "20,000,000"): "1.000 (1 run: no CI)",
        ("rl2-ml10", protocol_name(True), "4,000,000"): "0.125 (1 run: no CI)",
    }
    note = "`rl2` has 5 rows, not pooled as seeds: its results differ in config, env steps, protocol, reward feedback"
    assert note in md and any(note in s for s in said)


def test_compare_reads_the_protocol_of_results_that_predate_its_key(tmp_path: Path) -> None:
    tasks = [f"ML10/test/reach-v3/{i}" for i in range(3)]
    old_mean = make_result("rl2", seed=0, success={t: 0.5 for t in tasks})
    old_mean.extra["deterministic"] = True  # recorded before `protocol` was
    old_unknown = make_result("rl2", seed=1, success={t: 0.5 for t in tasks})  # records neither
    old_mean.save(tmp_path / "a.json")
    old_unknown.save(tmp_path / "b.json")
    compare([tmp_path / "a.json", tmp_path / "b.json"], tmp_path / "out", reps=100)
    md = (tmp_path / "out" / "compare.md").read_text()
    protocols = sorted(cells[7] for cells in _rows_all(md))
    assert protocols == sorted([protocol_name(True), "not recorded"])


def _rows_all(md: str) -> list[list[str]]:
    return [[c.strip() for c in line.split("|")[1:-1]] for line in md.splitlines() if line.startswith("| `")]


def test_compare_refuses_runs_without_eval_results(tmp_path: Path) -> None:
    run = tmp_path / "run-without-eval"
    run.mkdir()
    (run / "config.json").write_text("{}")
    with pytest.raises(ValueError, match=r"'.*run-without-eval' has no eval results .*run `metarl eval .*` first"):
        compare([run], tmp_path / "out")
    parent = tmp_path / "parent"
    (parent / "seed-0").mkdir(parents=True)
    (parent / "seed-0" / "config.json").write_text("{}")
    with pytest.raises(ValueError, match=r"seed-0' has no eval results"):
        compare([parent], tmp_path / "out")
    with pytest.raises(ValueError, match=r"'.*empty' is not a run directory \(no config.json\)"):
        (tmp_path / "empty").mkdir()
        compare([tmp_path / "empty"], tmp_path / "out")
    with pytest.raises(ValueError, match=r"'.*missing' does not exist"):
        compare([tmp_path / "missing"], tmp_path / "out")
    with pytest.raises(ValueError, match="nothing to compare"):
        compare([], tmp_path / "out")
    assert not (tmp_path / "out" / "compare.md").exists()


def test_compare_refuses_runs_that_share_no_task(tmp_path: Path) -> None:
    make_result("rl2", success={"T/test/f/0": 1.0}, distribution="T").save(tmp_path / "a.json")
    make_result("maml", success={"T/test/g/1": 0.5}, distribution="T").save(tmp_path / "b.json")
    with pytest.raises(ValueError, match=r"runs on T \(test split\) share no task family.*a\.json \(\['f'\]\)"):
        compare([tmp_path / "a.json", tmp_path / "b.json"], tmp_path / "out", reps=100)


def test_compare_keeps_a_run_that_changed_a_setting_of_its_config_out_of_the_configs_row(tmp_path: Path) -> None:
    """Two seeds of `rl2-ml10` pool; a seed-0 run with `--target-kl 0.02` is its own row, labelled with the change
    read from its config.json (its eval/final.json, like those written before results recorded it, does not say)."""
    from metarl.agents.configs import get_config
    from metarl.config import to_dict

    named = get_config("rl2-ml10")
    tasks = [f"ML10/test/reach-v3/{i}" for i in range(4)]

    def run(name: str, seed: int, level: float, target_kl: float | None) -> Path:
        result = make_result("rl2", seed=seed, success={t: level for t in tasks}, env_steps=20_000_000)
        result.extra.update({"config_name": named.name, "train_seed": seed, "protocol": protocol_name(True)})
        path = make_run_dir(tmp_path / name, result)
        config = {
            "config_name": named.name,
            "train": to_dict(named.train) | {"seed": seed},
            "agent": to_dict(named.agent),
        }
        config["agent"]["ppo"]["target_kl"] = target_kl
        (path / "config.json").write_text(json.dumps(config))
        return path

    reference_kl = named.agent.ppo.target_kl
    dirs = [run("s0", 0, 0.5, reference_kl), run("s1", 1, 0.25, reference_kl), run("kl02", 0, 1.0, 0.02)]
    said: list[str] = []
    compare(dirs, tmp_path / "out", reps=200, say=said.append)
    md = (tmp_path / "out" / "compare.md").read_text()
    assert "3 runs in 2 rows" in md
    rows = {cells[6]: cells for cells in _rows_all(md)}
    assert set(rows) == {"rl2-ml10", "rl2-ml10 + ppo.target_kl=0.02"}
    assert rows["rl2-ml10"][1] == "2" and rows["rl2-ml10"][2].startswith("0.375 [")
    assert rows["rl2-ml10 + ppo.target_kl=0.02"][1] == "1"
    assert any("differ in settings changed from the config" in s for s in said)
