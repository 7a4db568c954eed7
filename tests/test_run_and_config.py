"""Run directories, checkpoints and configs: the parts of training that need no env."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import pytest
import torch

from metarl.agents.configs import NAMED_CONFIGS, get_config
from metarl.agents.rl2 import RL2Config, RL2PolicyConfig, RL2PPOConfig
from metarl.config import TrainConfig, add_dataclass_flags, field_docs, from_dict, overrides_from_args, to_dict
from metarl.errors import UserError
from metarl.run import (
    ProgressLog,
    RunDirError,
    atomic_write_json,
    load_checkpoint,
    prepare_run_dir,
    save_checkpoint,
)


def test_every_config_field_has_a_docstring() -> None:
    for cls in (TrainConfig, RL2Config, RL2PolicyConfig, RL2PPOConfig):
        docs = field_docs(cls)
        for f in dataclasses.fields(cls):
            if not dataclasses.is_dataclass(f.default):
                assert docs.get(f.name), f"{cls.__name__}.{f.name} has no docstring"


@pytest.mark.parametrize("name", sorted(NAMED_CONFIGS))
def test_named_configs_round_trip_through_json(name: str) -> None:
    cfg = get_config(name)
    assert cfg.name.startswith(cfg.train.agent + "-")
    train = from_dict(TrainConfig, json.loads(json.dumps(to_dict(cfg.train))))
    agent = from_dict(type(cfg.agent), json.loads(json.dumps(to_dict(cfg.agent))))
    assert train == cfg.train and agent == cfg.agent


def test_unknown_config_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown config 'rl2-ml11'; choose one of \[.*'rl2-ml1', .*'rl2-ml10'"):
        get_config("rl2-ml11")


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"meta_batch": 0}, "meta_batch must be a positive integer, got 0"),
        ({"total_env_steps": -5}, "total_env_steps must be a positive integer"),
        ({"workers": 1.5}, "workers must be a positive integer"),
        ({"backend": "threads"}, r"unknown backend 'threads'; choose one of \['inline', 'process', 'ray'\]"),
        ({"device": "tpu"}, "unknown device 'tpu'"),
        ({"max_minutes": float("nan")}, "max_minutes must be a positive number"),
        ({"env_success_reward": -0.5}, r"env_success_reward must be a number in \[0, 1e6\], got -0.5"),
        ({"env_success_reward": "10"}, r"env_success_reward must be a number in \[0, 1e6\], got '10'"),
    ],
)
def test_train_config_rejects_bad_values(changes: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(TrainConfig(), **changes)


@pytest.mark.parametrize(
    ("cls", "changes", "match"),
    [
        (RL2PPOConfig, {"gamma": 1.5}, r"gamma must be in \[0, 1\]"),
        (RL2PPOConfig, {"bptt_chunk": 0}, "bptt_chunk must be a positive integer"),
        (RL2PPOConfig, {"lr": 0.0}, "lr must be positive"),
        (RL2PolicyConfig, {"mlp_hidden": ()}, "mlp_hidden must be a non-empty tuple"),
        (RL2Config, {"episodes_per_trial": 0}, "episodes_per_trial must be a positive integer"),
    ],
)
def test_agent_configs_reject_bad_values(cls: type, changes: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        cls(**changes)


def test_success_reward_reaches_the_run_distribution_or_is_refused_by_name() -> None:
    from metarl.envs.metaworld import MetaWorldDistribution
    from metarl.run import make_run_distribution

    plain = make_run_distribution(TrainConfig(benchmark="ML1-reach-v3"))
    shaped = make_run_distribution(TrainConfig(benchmark="ML1-reach-v3", env_success_reward=10.0))
    assert isinstance(plain, MetaWorldDistribution) and isinstance(shaped, MetaWorldDistribution)
    assert (plain.success_reward, shaped.success_reward) == (0.0, 10.0)
    with pytest.raises(UserError, match=r"unknown option\(s\) \['success_reward'\] for distribution 'point-nav'"):
        make_run_distribution(TrainConfig(benchmark="point-nav", env_success_reward=1.0))


def test_flags_are_generated_from_fields() -> None:
    parser = argparse.ArgumentParser()
    add_dataclass_flags(parser, TrainConfig, title="t")
    add_dataclass_flags(parser, RL2PolicyConfig, title="p")
    args = parser.parse_args(["--meta-batch", "7", "--max-minutes", "1.5", "--mlp-hidden", "32", "16"])
    assert overrides_from_args(args, TrainConfig) == {"meta_batch": 7, "max_minutes": 1.5}
    assert overrides_from_args(args, RL2PolicyConfig) == {"mlp_hidden": (32, 16)}


# -- run directories ------------------------------------------------------------------------------


def _fake_run(path: Path) -> Path:
    path.mkdir(parents=True)
    atomic_write_json(path / "config.json", {"train": {}})
    atomic_write_json(path / "meta.json", {})
    return path


def test_existing_run_is_not_overwritten_without_a_flag(tmp_path: Path) -> None:
    run = _fake_run(tmp_path / "run")
    with pytest.raises(RunDirError, match=r"already holds a run; pass --resume .* or --overwrite"):
        prepare_run_dir(run, resume=False, overwrite=False)
    assert (run / "config.json").read_text().strip().startswith("{")
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "iter-000099.pt").write_bytes(b"stale")
    assert prepare_run_dir(run, resume=False, overwrite=True) == run
    assert list(run.iterdir()) == []  # --overwrite replaces the old run whole: nothing stale survives


def test_non_empty_non_run_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="exists and is not empty"):
        prepare_run_dir(tmp_path, resume=False, overwrite=False)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_resume_of_something_that_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="no such directory"):
        prepare_run_dir(tmp_path / "missing", resume=True, overwrite=False)
    with pytest.raises(RunDirError, match="not a metarl run directory"):
        prepare_run_dir(tmp_path, resume=True, overwrite=False)
    run = _fake_run(tmp_path / "run")
    with pytest.raises(RunDirError, match="has no checkpoint yet"):
        prepare_run_dir(run, resume=True, overwrite=False)


def test_checkpoint_round_trip_and_damage(tmp_path: Path) -> None:
    state = {"weights": torch.arange(6.0).reshape(2, 3), "run": {"iteration": 3}, "rng": torch.get_rng_state()}
    latest = save_checkpoint(tmp_path, state, iteration=3)
    assert (tmp_path / "checkpoints" / "iter-000003.pt").is_file()
    again = load_checkpoint(latest)
    assert torch.equal(again["weights"], state["weights"]) and again["run"] == {"iteration": 3}
    assert not list((tmp_path / "checkpoints").glob(".*.tmp"))  # no temp files left behind
    data = latest.read_bytes()
    latest.write_bytes(data[: len(data) // 2])
    with pytest.raises(RunDirError, match="is damaged or not a metarl checkpoint"):
        load_checkpoint(latest)
    latest.write_bytes(b"garbage")
    with pytest.raises(RunDirError, match="is damaged"):
        load_checkpoint(latest)
    torch.save({"weights": 1}, latest)
    with pytest.raises(RunDirError, match="not a metarl checkpoint of format"):
        load_checkpoint(latest)


def test_checkpoints_refuse_arbitrary_pickles(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"format": 1, "obj": argparse.Namespace(a=1)}, path)
    with pytest.raises(RunDirError, match="is damaged or not a metarl checkpoint"):
        load_checkpoint(path)


def test_progress_log_truncates_rows_after_the_checkpoint_on_resume(tmp_path: Path) -> None:
    log = ProgressLog(tmp_path, tensorboard=False)
    for i in range(1, 6):
        log.log(i, {"charts/x": float(i)}, step=i)
    log.close()
    log = ProgressLog(tmp_path, keep_until_iteration=3, purge_step=3, tensorboard=False)
    log.log(4, {"charts/x": 40.0}, step=4)
    log.close()
    lines = (tmp_path / "progress.csv").read_text().splitlines()
    assert lines[0] == "iteration,charts/x"
    assert [line.split(",")[0] for line in lines[1:]] == ["1", "2", "3", "4"]
    assert lines[-1] == "4,40.0"


def test_rl2_ml1_tuned_is_rl2_ml1_with_the_measured_overrides() -> None:
    """The named config is exactly the setting of the README's three 2.5M-step seeds (IQM 0.673 with the mean
    action): ``rl2-ml1`` with ``--set ppo.target_kl=0.02 --set policy.action_input=False`` and 2.5M steps."""
    base, named = get_config("rl2-ml1"), get_config("rl2-ml1-tuned")
    measured = dataclasses.replace(
        base.agent,
        ppo=dataclasses.replace(base.agent.ppo, target_kl=0.02),
        policy=dataclasses.replace(base.agent.policy, action_input=False),
    )
    assert named.agent == measured
    assert named.train == dataclasses.replace(base.train, total_env_steps=2_500_000)


def test_rl2_ml1_shaped_is_rl2_ml1_tuned_with_the_success_reward() -> None:
    """The setting of the README's three 5M-step seeds: ``--config rl2-ml1-tuned --success-reward 10`` to 5M."""
    tuned, shaped = get_config("rl2-ml1-tuned"), get_config("rl2-ml1-shaped")
    assert shaped.agent == tuned.agent
    assert shaped.train == dataclasses.replace(tuned.train, total_env_steps=5_000_000, env_success_reward=10.0)


@pytest.mark.parametrize(
    ("benchmark", "meta_batch", "train_classes", "test_classes", "every_steps"),
    [("ml10", 20, 10, 5, 2_000_000), ("ml25", 50, 25, 4, 2_000_000), ("ml45", 45, 45, 5, 4_500_000)],
)
def test_multi_class_configs_run_the_reference_budget_on_the_fast_paths(
    benchmark: str, meta_batch: int, train_classes: int, test_classes: int, every_steps: int
) -> None:
    """rl2-mlN and maml-trpo-mlN: 2M env steps per train class, the reference meta-batch, 10 episodes of 500 steps
    per task, a held-out meta-test of 10 goals per test class every 2M env steps (ML45: 4.5M), on the fast learner
    paths (RL²'s bf16 update, MAML-TRPO's quarter-task curvature); both validate."""
    from metarl.agents.maml import MAMLConfig

    rl2, maml = get_config(f"rl2-{benchmark}"), get_config(f"maml-trpo-{benchmark}")
    for named, steps_per_iteration in ((rl2, meta_batch * 10 * 500), (maml, 2 * meta_batch * 10 * 500)):
        train = from_dict(TrainConfig, to_dict(named.train))  # validated again, as a run's config.json is read
        assert from_dict(type(named.agent), to_dict(named.agent)) == named.agent
        assert train.benchmark == benchmark.upper() and train.meta_batch == meta_batch
        assert train.episodes_per_task == 10 and train.total_env_steps == 2_000_000 * train_classes
        assert train.eval_every * steps_per_iteration == every_steps, named.name
        assert train.eval_tasks == 10 * test_classes
        assert (train.adaptation_episodes, train.eval_episodes) == (10, 3)
    assert isinstance(rl2.agent, RL2Config) and rl2.agent.episodes_per_trial == 10
    assert rl2.agent.ppo.autocast_bf16 is True
    assert isinstance(maml.agent, MAMLConfig) and maml.agent.hvp_subsample == 0.25
    assert maml.agent.hidden == (512, 512) and maml.agent.inner_lr == 0.1 and maml.agent.max_kl == 0.01
    # the only departures from the single-class settings are the fast paths
    assert dataclasses.replace(rl2.agent.ppo, autocast_bf16=False) == RL2PPOConfig()
    assert dataclasses.replace(maml.agent, hvp_subsample=1.0) == get_config("maml-trpo-ml1").agent


def test_run_overrides_name_what_changes_learning_and_nothing_else() -> None:
    """What a run changed from its named config: agent fields (nested ones dotted) and the training fields that
    change what is learned; budget, layout, device and seed are not settings of the thing a seed samples."""
    from metarl.overrides import run_overrides

    named = get_config("rl2-ml10")
    assert run_overrides(named.train, named.agent, named.name) == []
    not_learning = dataclasses.replace(
        named.train, seed=3, total_env_steps=4_000_000, max_minutes=30.0, workers=1, device="cpu", eval_every=5
    )
    assert run_overrides(not_learning, named.agent, named.name) == []
    agent = dataclasses.replace(
        named.agent,
        ppo=dataclasses.replace(named.agent.ppo, target_kl=0.02),
        policy=dataclasses.replace(named.agent.policy, action_input=False),
    )
    train = dataclasses.replace(named.train, meta_batch=10, env_success_reward=10.0)
    assert run_overrides(train, agent, named.name) == [
        "env_success_reward=10.0", "meta_batch=10", "policy.action_input=False", "ppo.target_kl=0.02"
    ]  # fmt: skip
    # a run whose named config no longer exists, or is another agent's, cannot say what it changed
    assert run_overrides(named.train, named.agent, "rl2-ml10-removed") is None
    assert run_overrides(named.train, named.agent, "maml-trpo-ml10") is None
