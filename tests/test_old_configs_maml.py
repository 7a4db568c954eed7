"""MAML-family runs written before the split into one config per outer loop (commit bce0993, when one ``MAMLConfig``
held the TRPO and the PPO fields whatever the agent) still load, resume and evaluate.

Fixtures: the committed ML10 MAML-TRPO run (``benchmarks/results/ML10/maml-trpo-ml10-s0``), and under
``tests/fixtures/old_configs/`` that run's ``config.json`` as bce0993 wrote it (``maml-trpo-ml10.json``), a
MAML-PPO and a Reptile run directory (``config.json`` and the iteration-2 checkpoint of a 3-iteration point-nav
run, both as the bce0993 code wrote them) and a FOMAML ``config.json``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from _helpers import metarl_cli

import metarl
from metarl.agents.configs import get_config
from metarl.agents.maml import (
    FOMAMLConfig,
    MAMLAgent,
    MAMLConfig,
    MAMLPPOConfig,
    ReptileConfig,
)
from metarl.config import from_dict, removed_field, to_dict
from metarl.errors import UserError
from metarl.run import load_checkpoint, read_run_config

ROOT = Path(__file__).resolve().parent.parent
ML10_RUN = ROOT / "benchmarks/results/ML10/maml-trpo-ml10-s0"
OLD = Path(__file__).resolve().parent / "fixtures/old_configs"
TRPO_FIELDS = ("max_kl", "cg_iters", "cg_damping", "ls_backtrack", "ls_steps", "hvp_subsample")
PPO_FIELDS = ("ppo_clip", "ppo_epochs")


def _copy_run(src: Path, tmp_path: Path) -> Path:
    run = tmp_path / src.name
    shutil.copytree(src, run)
    return run


def _old_agent_dict(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())["agent"]
    return data


# -- what each config carries ---------------------------------------------------------------------


def test_each_config_carries_only_its_outer_loops_fields() -> None:
    fields = {cls: {f.name for f in dataclasses.fields(cls)} for cls in (MAMLConfig, MAMLPPOConfig, ReptileConfig)}
    assert set(TRPO_FIELDS) | {"first_order"} <= fields[MAMLConfig]
    assert not fields[MAMLConfig] & {*PPO_FIELDS, "outer_lr"}
    assert {*PPO_FIELDS, "outer_lr", "first_order"} <= fields[MAMLPPOConfig]
    assert not fields[MAMLPPOConfig] & set(TRPO_FIELDS)
    assert "outer_lr" in fields[ReptileConfig]
    assert not fields[ReptileConfig] & {*TRPO_FIELDS, *PPO_FIELDS, "first_order"}
    # what a new run writes: no field of another outer loop
    assert set(to_dict(MAMLPPOConfig())) == fields[MAMLPPOConfig]
    # each field that left a config is recorded with the commit that still has it
    for cls, gone in ((MAMLConfig, PPO_FIELDS), (MAMLPPOConfig, TRPO_FIELDS), (ReptileConfig, TRPO_FIELDS)):
        for name in gone:
            record = removed_field(cls, name)
            assert record is not None and record.commit == "bce0993" and record.ignored, (cls.__name__, name)


# -- the committed ML10 MAML-TRPO run -------------------------------------------------------------


@pytest.mark.parametrize("source", ["fixture", "committed"])
def test_the_ml10_run_config_loads_as_the_named_config(source: str, tmp_path: Path) -> None:
    """The ML10 run's ``config.json`` as the bce0993 code wrote it (with the PPO fields; kept as a fixture,
    since resuming the run with newer code rewrites the file) and as the committed run holds it now."""
    if source == "fixture":
        run = tmp_path / "run"
        run.mkdir()
        shutil.copy(OLD / "maml-trpo-ml10.json", run / "config.json")
    else:
        run = ML10_RUN
    old = _old_agent_dict(run / "config.json")
    if source == "fixture":
        assert {"ppo_clip", "ppo_epochs", "outer_lr"} <= set(old)  # written with the PPO fields
    train, agent, name = read_run_config(run)
    assert name == "maml-trpo-ml10" and train.agent == "maml-trpo" and train.benchmark == "ML10"
    assert type(agent) is MAMLConfig and agent == get_config("maml-trpo-ml10").agent
    for key, value in to_dict(agent).items():  # every field it kept means what it meant
        assert old[key] == value, key


def test_the_committed_ml10_run_restores_through_the_resume_path(tmp_path: Path) -> None:
    """What ``metarl train --resume`` does before its first iteration (read the config, build the trainer,
    restore the checkpoint) gives the checkpoint's weights, step count and task stream; ``metarl.load`` (the
    path of ``metarl eval``) gives the same weights."""
    from metarl.training import Trainer

    run = _copy_run(ML10_RUN, tmp_path)
    state = load_checkpoint(run / "checkpoints/latest.pt")
    train, agent_cfg, name = read_run_config(run)
    threads = torch.get_num_threads()
    try:
        trainer = Trainer(run, train, agent_cfg, name)
        trainer.restore(state)
    finally:
        torch.set_num_threads(threads)
    assert isinstance(trainer.agent, MAMLAgent)
    restored = trainer.agent.state_dict()
    assert set(restored) == set(state["agent"]) == {"policy", "env_steps"}
    for key, tensor in state["agent"]["policy"].items():
        assert torch.equal(restored["policy"][key], tensor), key
    assert trainer.state.iteration == state["run"]["iteration"] > 0  # the committed run grows across sessions
    assert trainer.agent.env_steps == state["run"]["env_steps"]
    assert trainer.task_rng.bit_generator.state == state["task_rng"]
    loaded = metarl.load(run)
    assert isinstance(loaded, MAMLAgent) and loaded.config == agent_cfg
    for key, tensor in loaded.policy.state_dict().items():
        assert torch.equal(tensor, state["agent"]["policy"][key]), key


def test_the_committed_ml10_run_resumes_and_evaluates_from_the_cli(tmp_path: Path) -> None:
    """``metarl train --resume`` at the run's own budget point (no iteration to run, so no ML10 iteration's cost)
    and ``metarl eval`` on one held-out task per class."""
    run = _copy_run(ML10_RUN, tmp_path)
    before = (run / "checkpoints/latest.pt").read_bytes()
    saved = load_checkpoint(run / "checkpoints/latest.pt")["run"]  # the committed run grows across sessions
    proc = metarl_cli("train", "--resume", str(run), "--iterations", str(saved["iteration"]), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "run continued" in proc.stdout
    assert (run / "checkpoints/latest.pt").read_bytes() == before  # nothing ran, nothing rewritten
    out = tmp_path / "eval.json"
    proc = metarl_cli(
        "eval", str(run), "--tasks-per-family", "1", "--adaptation-episodes", "1", "--eval-episodes", "1",
        "--workers", "1", "--json", str(out), timeout=900,  # 5 ML10 envs built in one worker: slow on a busy host
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["agent"] == "maml-trpo" and result["distribution"] == "ML10"
    assert result["env_steps"] == saved["env_steps"]
    assert len(result["per_task"]) == 5 and result["curve"]["x"] == [0, 1]
    assert 0.0 <= result["success_mean"] <= 1.0


# -- old MAML-PPO, Reptile and FOMAML configs ------------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "cls", "dropped"),
    [
        ("maml-ppo-bce0993/config.json", MAMLPPOConfig, TRPO_FIELDS),
        ("reptile-bce0993/config.json", ReptileConfig, (*TRPO_FIELDS, *PPO_FIELDS, "first_order")),
        ("fomaml-bce0993.json", FOMAMLConfig, (*PPO_FIELDS, "outer_lr")),
    ],
)
def test_old_configs_load_keeping_the_fields_they_have(fixture: str, cls: type, dropped: tuple[str, ...]) -> None:
    old = _old_agent_dict(OLD / fixture)
    assert set(dropped) <= set(old)  # the fixture was written by the one-config code
    agent = from_dict(cls, old, where=fixture)
    assert type(agent) is cls
    kept = to_dict(agent)
    assert set(kept) == set(old) - set(dropped)
    for key, value in kept.items():
        assert old[key] == value, key


@pytest.mark.parametrize(
    ("cls", "field", "value"),
    [(ReptileConfig, "max_kl", 0.05), (ReptileConfig, "first_order", False), (MAMLPPOConfig, "hvp_subsample", 0.25),
     (MAMLConfig, "ppo_clip", 0.2), (FOMAMLConfig, "outer_lr", 0.01)],
)  # fmt: skip
def test_a_field_that_never_affected_the_algorithm_loads_with_any_value(cls: type, field: str, value: Any) -> None:
    """An old run may have set another outer loop's field (say ``--max-kl`` on Reptile): it changed nothing then,
    so it loads now."""
    data = {**to_dict(cls()), field: value}
    assert from_dict(cls, data) == cls()


def test_an_unknown_field_is_still_refused_by_name() -> None:
    data = {**_old_agent_dict(OLD / "reptile-bce0993/config.json"), "max_kll": 0.01}
    with pytest.raises(UserError, match=r"unknown config field\(s\) \['max_kll'\] for ReptileConfig"):
        from_dict(ReptileConfig, data)


def test_maml_ppo_no_longer_takes_trpo_flags(tmp_path: Path) -> None:
    proc = metarl_cli("train", "maml-ppo", "--max-kl", "0.02", "--iterations", "1", "--out", str(tmp_path / "run"))
    assert proc.returncode == 2 and "--max-kl" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("fixture", ["maml-ppo-bce0993", "reptile-bce0993"])
def test_an_old_run_resumes_where_a_new_run_of_its_config_goes(tmp_path: Path, fixture: str) -> None:
    """The old run's iteration-2 checkpoint (MAML-PPO: with its Adam state), resumed for its third iteration,
    ends bitwise where this code's uninterrupted 3-iteration run of the same config ends (both on the CPU with
    one torch thread, as the fixture's config says)."""
    run = _copy_run(OLD / fixture, tmp_path)
    train, agent_cfg, name = read_run_config(run)
    assert train.iterations == 3 and train.torch_threads == 1 and train.backend == "inline"
    old_state = load_checkpoint(run / "checkpoints/latest.pt")
    assert old_state["run"]["iteration"] == 2
    threads = torch.get_num_threads()
    try:
        metarl.resume(run, progress=False)
        straight = metarl.train(train, agent_cfg, out=tmp_path / "straight", config_name=name, progress=False)
    finally:
        torch.set_num_threads(threads)
    resumed = load_checkpoint(run / "checkpoints/latest.pt")
    fresh = load_checkpoint(straight / "checkpoints/latest.pt")
    assert resumed["run"]["iteration"] == fresh["run"]["iteration"] == 3
    assert resumed["run"]["env_steps"] == fresh["run"]["env_steps"]
    assert set(resumed["agent"]) == set(fresh["agent"]) == set(old_state["agent"])
    for key, tensor in fresh["agent"]["policy"].items():
        assert torch.equal(resumed["agent"]["policy"][key], tensor), key
    assert any(not torch.equal(old_state["agent"]["policy"][k], v) for k, v in fresh["agent"]["policy"].items())
    if isinstance(agent_cfg, MAMLPPOConfig):  # Adam carried on from the old state: ppo_epochs more steps
        old_steps = [float(s["step"]) for s in old_state["agent"]["optimizer"]["state"].values()]
        new_steps = [float(s["step"]) for s in resumed["agent"]["optimizer"]["state"].values()]
        assert new_steps == [s + agent_cfg.ppo_epochs for s in old_steps]
        for slot, moments in fresh["agent"]["optimizer"]["state"].items():
            for key, tensor in moments.items():
                assert torch.equal(resumed["agent"]["optimizer"]["state"][slot][key], tensor), (slot, key)
