"""`metarl eval RUN_DIR`: the meta-test of a trained run, its files, and bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from _helpers import metarl_cli, tiny_rl2_config

import metarl
from metarl.agents.maml import MAMLConfig
from metarl.config import TrainConfig
from metarl.envs import make_distribution
from metarl.evaluation.runner import MAX_EVAL_SLOTS, eval_engine_layout, select_tasks
from metarl.tasks import Task


def _train(root: Path, agent: str) -> Path:
    cfg = TrainConfig(
        agent=agent, benchmark="point-nav", iterations=1, meta_batch=2, episodes_per_task=2, workers=1,
        backend="inline", slots_per_family=4, eval_every=0,
    )  # fmt: skip
    rl2 = tiny_rl2_config()
    agent_cfg = MAMLConfig(hidden=(8,)) if agent == "maml-trpo" else rl2
    return metarl.train(cfg, agent_cfg, out=root / agent, progress=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    return {agent: _train(root, agent) for agent in ("rl2", "maml-trpo")}


@pytest.mark.parametrize("agent", ["rl2", "maml-trpo"])
def test_eval_writes_the_result_report_and_figures(runs: dict[str, Path], agent: str) -> None:
    run = runs[agent]
    proc = metarl_cli("eval", str(run), "--tasks-per-family", "3", "--adaptation-episodes", "2", "--eval-episodes", "2")
    assert proc.returncode == 0, proc.stderr
    result = json.loads((run / "eval/final.json").read_text())
    assert (result["agent"], result["split"], result["distribution"]) == (agent, "test", "point-nav")
    assert len(result["per_task"]) == 3 and result["eval_episodes_per_task"] == 2
    assert result["adaptation_episodes"] == 2
    unit, x = result["curve"]["unit"], result["curve"]["x"]
    assert (unit, x) == (("episodes", [0, 1, 2]) if agent == "rl2" else ("gradient_steps", [0, 1]))
    assert result["return_mean"] == pytest.approx(result["curve"]["return"][-1])
    assert result["env_steps"] > 0  # the training env steps behind the checkpoint
    for name in ("report.md", "curve.png", "per_task.png"):
        path = run / "eval" / name
        assert path.is_file() and path.stat().st_size > 100, name
    assert (run / "eval/curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (run / "eval/report.md").read_text()
    assert all(task_id in report for task_id in result["per_task"])
    assert "success" in proc.stdout and str(run / "eval/final.json") in proc.stdout


def test_eval_is_seeded_and_json_goes_where_asked(runs: dict[str, Path], tmp_path: Path) -> None:
    a, b = tmp_path / "a/r.json", tmp_path / "b/r.json"
    args = ["eval", str(runs["maml-trpo"]), "--tasks-per-family", "2", "--adaptation-episodes", "1",
            "--eval-episodes", "1", "--seed", "5"]  # fmt: skip
    assert metarl_cli(*args, "--json", str(a)).returncode == 0
    assert metarl_cli(*args, "--json", str(b)).returncode == 0
    ra, rb = json.loads(a.read_text()), json.loads(b.read_text())
    assert ra["per_task"] == rb["per_task"]  # same seed: same tasks, same episodes
    assert (a.parent / "report.md").is_file()


def test_select_tasks_subsamples_per_family_with_the_seed() -> None:
    dist = make_distribution("point-nav")
    a = select_tasks(dist, "test", 5, seed=1)
    assert len(a) == 5 and a == select_tasks(dist, "test", 5, seed=1)
    assert [t.id for t in a] != [t.id for t in select_tasks(dist, "test", 5, seed=2)]
    assert len(select_tasks(dist, "test", None, seed=0)) == 100


def test_the_eval_engine_serves_only_the_evaluated_families() -> None:
    """An ML10 meta-test touches the 5 held-out classes only: an engine for all 15 would build the train
    classes' envs too (at MAML's 10 side-by-side episodes per goal, 1,500 Meta-World envs: 24 GB)."""
    tasks = [Task("ML10", "test", f, i, ()) for f in ("door-close-v3", "lever-pull-v3") for i in range(10)]
    layout = eval_engine_layout(tasks, slots_per_task=10)
    assert layout == {"families": ["door-close-v3", "lever-pull-v3"], "slots_per_family": 100}
    assert eval_engine_layout(tasks, slots_per_task=1)["slots_per_family"] == 10  # RL²: a trial per slot
    assert eval_engine_layout(tasks * 10, slots_per_task=13)["slots_per_family"] == MAX_EVAL_SLOTS // 2  # capped
    # all 250 held-out ML10 goals with MAML's 10 side-by-side episodes: at most MAX_EVAL_SLOTS envs in all
    ml10 = [Task("ML10", "test", f"class-{c}", i, ()) for c in range(5) for i in range(50)]
    layout = eval_engine_layout(ml10, slots_per_task=10)
    assert len(layout["families"]) * layout["slots_per_family"] <= MAX_EVAL_SLOTS == 250


def test_a_split_without_tasks_is_refused() -> None:
    class NoTest(type(make_distribution("point-nav"))):  # type: ignore[misc]
        def tasks(self, split: str = "train") -> list[Task]:
            return [] if split == "test" else super().tasks(split)  # type: ignore[arg-type]

    with pytest.raises(ValueError, match="has no 'test' tasks to evaluate on"):
        select_tasks(NoTest(), "test", None, seed=0)


def test_bad_eval_input_is_one_line_and_exit_2(runs: dict[str, Path], tmp_path: Path) -> None:
    cases = [
        (["eval", str(tmp_path / "nope")], "no run directory"),
        (["eval", str(tmp_path)], "is not a metarl run directory"),
        (["eval", str(runs["rl2"]), "--checkpoint", str(runs["maml-trpo"] / "checkpoints/latest.pt")],
         "checkpoint is of agent 'maml-trpo', but"),
        (["eval", str(runs["rl2"]), "--eval-episodes", "0"], "--eval-episodes must be positive, got 0"),
        (["eval", str(runs["rl2"]), "--checkpoint", str(tmp_path / "x.pt")], "no checkpoint file"),
    ]  # fmt: skip
    before = {p: p.read_bytes() for p in runs["rl2"].rglob("*") if p.is_file()}
    for args, message in cases:
        proc = metarl_cli(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert message in proc.stderr, (args, proc.stderr)
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    after = {p: p.read_bytes() for p in runs["rl2"].rglob("*") if p.is_file()}
    assert after == before  # nothing written or overwritten
    assert torch.load(runs["rl2"] / "checkpoints/latest.pt", weights_only=True)["agent_name"] == "rl2"


def test_seeds_then_eval_then_compare_on_two_small_real_runs(tmp_path: Path) -> None:
    root = tmp_path / "seeds"
    proc = metarl_cli(
        "train", "maml-trpo", "--seeds", "0", "1", "--jobs", "2", "--iterations", "1", "--meta-batch", "2",
        "--episodes-per-task", "2", "--hidden", "8", "--eval-every", "1", "--eval-tasks", "2",
        "--adaptation-episodes", "1", "--eval-episodes", "1", "--backend", "inline", "--slots-per-family", "4",
        "--out", str(root), "--no-progress",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    seeds = sorted(p.name for p in root.iterdir())
    assert seeds == ["seed-0", "seed-1"]
    configs = [json.loads((root / s / "config.json").read_text())["train"]["seed"] for s in seeds]
    assert configs == [0, 1]
    for s in seeds:  # one evaluated with `metarl eval` (final.json), the other left with its latest.json
        if s == "seed-1":
            ev = metarl_cli("eval", str(root / s), "--tasks-per-family", "2", "--adaptation-episodes", "1",
                            "--eval-episodes", "1")  # fmt: skip
            assert ev.returncode == 0, ev.stderr
            final = json.loads((root / s / "eval" / "final.json").read_text())
            assert final["train_seed"] == 1
            # what the run changed from its named config (maml-trpo's default), so compare can tell it apart
            assert {"meta_batch=2", "episodes_per_task=2", "hidden=(8,)"} <= set(final["overrides"])
    out = tmp_path / "cmp"
    refused = metarl_cli("compare", str(root), "--out", str(out), "--reps", "200")
    assert refused.returncode == 2 and "seed-0' has no eval/final.json" in refused.stderr
    assert "Traceback" not in refused.stderr and refused.stderr.strip().count("\n") == 0
    proc = metarl_cli("compare", str(root), "--out", str(out), "--reps", "200", "--latest")
    assert proc.returncode == 0, proc.stderr
    assert "note: 1 run(s) have no final.json" in proc.stdout and "seed-0" in proc.stdout
    md = (out / "compare.md").read_text()
    assert "maml-trpo" in md and "point-nav" in md
    assert "(training seed 1, evaluation seed 0," in md  # the runs told apart by their training seeds
    assert any(p.suffix == ".png" for p in out.iterdir())
    bad = metarl_cli("compare", str(tmp_path / "missing"), "--out", str(out))
    assert bad.returncode == 2 and "no such run directory or result file" in bad.stderr


def test_evaluation_counts_exactly_n_episodes_per_task_when_some_tasks_end_early() -> None:
    """The over-count case: tasks whose episodes end early finish more episodes in the same time."""
    from metarl.agents.maml import MAMLAgent
    from metarl.evaluation.official import official_counting
    from metarl.evaluation.result import evaluate
    from metarl.rollout import RolloutEngine
    from metarl.testing import CountingDistribution

    # one family; even task indices end after 3 steps (before the success step 6), odd ones run 10 steps
    dist = CountingDistribution(num_families=1, tasks_per_family=4, horizon=10, lengths=(3, 0), success_step=6)
    tasks = list(dist.tasks("train"))
    agent = MAMLAgent(3, 2, MAMLConfig(hidden=(4,)), episodes_per_task=1)
    with RolloutEngine(dist, num_workers=1, slots_per_family=4, seed=0, backend="inline") as engine:
        result = evaluate(agent, engine, tasks, adaptation_episodes=1, eval_episodes=3)
    assert result.eval_episodes_per_task == 3
    assert [result.per_task[t.id]["success"] for t in tasks] == [0.0, 1.0, 0.0, 1.0]
    assert result.success_mean == 0.5 and result.per_family["count-0"]["success"] == 0.5
    # counting the first 3 ended episodes of the family, as Meta-World's evaluator does, sees only short ones
    ended = [(0, False), (2, False), (0, False), (2, False), (1, True), (3, True)]
    assert official_counting(ended, 3) == 0.0


def test_no_feedback_control_is_written_beside_the_normal_evaluation(runs: dict[str, Path], tmp_path: Path) -> None:
    common = ["--tasks-per-family", "3", "--adaptation-episodes", "2", "--eval-episodes", "1", "--deterministic"]
    normal, blind = tmp_path / "normal.json", tmp_path / "blind.json"
    for path, extra in ((normal, []), (blind, ["--no-feedback"])):
        proc = metarl_cli("eval", str(runs["rl2"]), *common, *extra, "--json", str(path))
        assert proc.returncode == 0, proc.stderr
    a, b = json.loads(normal.read_text()), json.loads(blind.read_text())
    assert (a["feedback"], b["feedback"]) == (True, False)
    assert a["per_task"].keys() == b["per_task"].keys()
    # same seed, same tasks, same noise: only the reward input differs, and the agent's returns with it
    assert a["curve"]["return"] != b["curve"]["return"]
    # MAML has no reward input: its control is the curve's point 0, and --no-feedback is refused clearly
    proc = metarl_cli("eval", str(runs["maml-trpo"]), *common, "--no-feedback", "--json", str(tmp_path / "m.json"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "curve's point 0" in proc.stderr


def test_no_feedback_without_json_writes_its_own_file_and_leaves_final_json_alone(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    run = tmp_path / "rl2"
    shutil.copytree(runs["rl2"], run)
    common = ["--tasks-per-family", "2", "--adaptation-episodes", "1", "--eval-episodes", "1"]
    proc = metarl_cli("eval", str(run), *common)
    assert proc.returncode == 0, proc.stderr
    final = (run / "eval/final.json").read_bytes()
    proc = metarl_cli("eval", str(run), *common, "--no-feedback")
    assert proc.returncode == 0, proc.stderr
    assert (run / "eval/final.json").read_bytes() == final
    control = json.loads((run / "eval/no-feedback.json").read_text())
    assert control["feedback"] is False and json.loads(final)["feedback"] is True
    assert "no-feedback.json" in proc.stdout
