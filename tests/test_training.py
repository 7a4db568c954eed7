"""The shared training loop through RL²: CLI smoke run and resume, exact resume, bad input, Ctrl-C."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _helpers import metarl_cli
from _helpers import progress_rows as _rows

import metarl
from metarl.agents.gru import gru_loop
from metarl.agents.rl2 import RL2Config, RL2PolicyConfig, RL2PPOConfig
from metarl.config import TrainConfig
from metarl.run import checkpoint_bytes, load_checkpoint

TINY = [
    "--meta-batch", "4", "--episodes-per-task", "2", "--episodes-per-trial", "2",
    "--mlp-hidden", "16", "--gru-hidden", "16", "--epochs", "2", "--bptt-chunk", "50",
    "--eval-every", "1", "--eval-tasks", "2", "--adaptation-episodes", "1", "--eval-episodes", "1",
    "--checkpoint-every", "1", "--no-progress",
]  # fmt: skip


def test_cli_train_two_iterations_then_resume_one_more(tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = metarl_cli("train", "rl2", "--config", "rl2-point-nav", "--iterations", "2", "--out", str(run), *TINY)
    assert proc.returncode == 0, proc.stderr
    for name in ("config.json", "meta.json", "progress.csv", "checkpoints/latest.pt", "eval/latest.json"):
        assert (run / name).is_file(), name
    assert list(run.glob("events.out.tfevents.*"))
    meta = json.loads((run / "meta.json").read_text())
    assert meta["versions"]["torch"] and meta["command"][1:3] == ["train", "rl2"]
    if shutil.which("metarl"):  # the entry point by name: no path of this machine in a committed run
        assert meta["command"][0] == "metarl"
    config = json.loads((run / "config.json").read_text())
    assert config["config_name"] == "rl2-point-nav" and config["train"]["meta_batch"] == 4
    assert config["agent"]["policy"]["gru_hidden"] == 16
    rows = _rows(run)
    assert [r["iteration"] for r in rows] == ["1", "2"]
    for row in rows:
        for key in ("charts/episode_return", "losses/policy_loss", "losses/value_loss", "time/sampling_s"):
            assert math.isfinite(float(row[key])), key
    if sys.platform.startswith("linux"):  # the summed peak memory of the driver and its workers, never falling
        peaks = [float(r["memory/peak_rss_mib"]) for r in rows]
        assert peaks[0] > 100 and peaks == sorted(peaks), peaks  # each process holds torch (well over 100 MiB)
    # 4 tasks x 2 episodes of at most 100 steps (point-nav may terminate early)
    assert 0 < float(rows[0]["charts/env_steps"]) <= 800
    result = json.loads((run / "eval/latest.json").read_text())
    for key in ("distribution", "split", "agent", "env_steps", "success_mean", "return_mean", "curve", "per_family",
                "per_task", "eval_episodes_per_task", "adaptation_episodes", "seed"):  # fmt: skip
        assert key in result, key
    assert (result["distribution"], result["split"], result["agent"]) == ("point-nav", "test", "rl2")
    assert result["curve"]["x"] == [0, 1] and result["curve"]["unit"] == "episodes"
    assert result["return_mean"] == pytest.approx(result["curve"]["return"][-1])
    assert 0.0 <= result["success_mean"] <= 1.0 and len(result["per_task"]) == 2
    assert result["env_steps"] == int(float(rows[-1]["charts/env_steps"]))

    proc = metarl_cli("train", "--resume", str(run), "--iterations", "3", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert [r["iteration"] for r in _rows(run)] == ["1", "2", "3"]
    assert load_checkpoint(run / "checkpoints/latest.pt")["run"]["iteration"] == 3
    assert (run / "eval/iter-000003.json").is_file()
    after = json.loads((run / "meta.json").read_text())  # the first command stays; the resume is added
    assert after["command"] == meta["command"]
    (resumed,) = after["resumes"]
    assert resumed["command"][1:4] == ["train", "--resume", str(run)] and resumed["from_iteration"] == 2
    assert resumed["from_env_steps"] == int(float(rows[-1]["charts/env_steps"]))


def _tiny_configs(iterations: int) -> tuple[TrainConfig, RL2Config]:
    train = TrainConfig(
        agent="rl2", benchmark="point-nav", seed=3, iterations=iterations, meta_batch=3, episodes_per_task=2,
        workers=1, backend="inline", eval_every=0, checkpoint_every=1,
    )  # fmt: skip
    agent = RL2Config(
        episodes_per_trial=2,
        policy=RL2PolicyConfig(mlp_hidden=(16,), gru_hidden=8),
        ppo=RL2PPOConfig(epochs=2, minibatches=2, bptt_chunk=40, bptt_overlap=10),
    )
    return train, agent


def test_two_plus_two_iterations_after_resume_equal_four_uninterrupted(tmp_path: Path) -> None:
    train4, agent = _tiny_configs(4)
    metarl.train(train4, agent, out=tmp_path / "straight", progress=False)
    train2, _ = _tiny_configs(2)
    metarl.train(train2, agent, out=tmp_path / "split", progress=False)
    metarl.resume(tmp_path / "split", iterations=4, progress=False)
    a = load_checkpoint(tmp_path / "straight/checkpoints/latest.pt")
    b = load_checkpoint(tmp_path / "split/checkpoints/latest.pt")
    assert a["run"]["iteration"] == b["run"]["iteration"] == 4
    assert a["run"]["env_steps"] == b["run"]["env_steps"]
    for name, tensor in a["agent"]["policy"].items():
        assert torch.equal(tensor, b["agent"]["policy"][name]), name
    # and the parameters did change from initialisation
    first = load_checkpoint(tmp_path / "straight/checkpoints/iter-000001.pt")["agent"]["policy"]
    assert any(not torch.equal(first[k], v) for k, v in a["agent"]["policy"].items())
    assert [r["iteration"] for r in _rows(tmp_path / "split")] == ["1", "2", "3", "4"]


def test_load_returns_the_trained_agent(tmp_path: Path) -> None:
    train, agent_cfg = _tiny_configs(1)
    run = metarl.train(train, agent_cfg, out=tmp_path / "run", progress=False)
    agent = metarl.load(run)
    saved = load_checkpoint(run / "checkpoints/latest.pt")["agent"]["policy"]
    for name, tensor in agent.policy.state_dict().items():  # type: ignore[attr-defined]
        assert torch.equal(tensor, saved[name])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "rl2", "--config", "rl2-nope"], "unknown config 'rl2-nope'; choose one of"),
        (["train", "rl2", "--benchmark", "ML11", "--iterations", "1"], "unknown distribution 'ML11'"),
        (["train", "rl2", "--iterations", "0"], "iterations must be a positive integer, got 0"),
        (["train", "rl2", "--total-env-steps", "-3"], "total_env_steps must be a positive integer"),
        (["train", "rl2", "--meta-batch", "0"], "meta_batch must be a positive integer"),
        (["train", "rl2", "--benchmark", "cheetah-dir", "--meta-batch", "3", "--iterations", "1"],
         "meta_batch 3 is larger than the 2 train tasks of 'cheetah-dir'"),
        (["train", "rl2", "--episodes-per-task", "3", "--iterations", "1"],
         r"episodes_per_task \(3\) must be a multiple of episodes_per_trial \(4\)"),
        (["train", "--resume", "/nonexistent/run"], "cannot resume '/nonexistent/run': no such directory"),
        (["train"], "name an agent"),
    ],
)  # fmt: skip
def test_bad_training_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    import re

    proc = metarl_cli(*args, "--out", str(tmp_path / "out")) if "--resume" not in args else metarl_cli(*args)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert re.search(message, proc.stderr), proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert not (tmp_path / "out" / "config.json").exists()


def test_settings_the_agent_refuses_leave_no_run_directory_behind(tmp_path: Path) -> None:
    import dataclasses

    from metarl.errors import UserError

    train, agent = _tiny_configs(1)
    bad = dataclasses.replace(train, episodes_per_task=3)  # trials of 2 episodes
    with pytest.raises(UserError, match=r"episodes_per_task \(3\) must be a multiple of episodes_per_trial \(2\)"):
        metarl.train(bad, agent, out=tmp_path / "new", progress=False)
    assert not (tmp_path / "new").exists()
    # an empty directory the user made is theirs: it stays
    (tmp_path / "mine").mkdir()
    with pytest.raises(UserError):
        metarl.train(bad, agent, out=tmp_path / "mine", progress=False)
    assert (tmp_path / "mine").is_dir()


def test_existing_run_and_damaged_checkpoint_are_refused_and_kept(tmp_path: Path) -> None:
    train, agent = _tiny_configs(1)
    run = metarl.train(train, agent, out=tmp_path / "run", progress=False)
    before = (run / "checkpoints/latest.pt").read_bytes()
    proc = metarl_cli("train", "rl2", "--iterations", "1", "--out", str(run))
    assert proc.returncode == 2 and "already holds a run; pass --resume" in proc.stderr
    assert (run / "checkpoints/latest.pt").read_bytes() == before
    (run / "checkpoints/latest.pt").write_bytes(before[: len(before) // 3])
    proc = metarl_cli("train", "--resume", str(run), "--iterations", "2")
    assert proc.returncode == 2 and "is damaged or not a metarl checkpoint" in proc.stderr
    assert proc.stderr.count("\n") == 1
    proc = metarl_cli("train", "--resume", str(run), "--meta-batch", "2")
    assert proc.returncode == 2 and "only budgets can change" in proc.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_writes_a_checkpoint_and_exits_130(tmp_path: Path) -> None:
    run = tmp_path / "run"
    exe = shutil.which("metarl")
    cmd = [exe] if exe else [sys.executable, "-m", "metarl.cli"]
    proc = subprocess.Popen(
        [*cmd, "train", "rl2", "--iterations", "1000", "--out", str(run), "--workers", "1", *TINY,
         "--checkpoint-every", "1000", "--eval-every", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # CI may run us with SIGINT ignored
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (run / "progress.csv").exists():
        time.sleep(0.2)
    assert (run / "progress.csv").exists(), "training did not start"
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()  # leave no orphan behind a failing test
        raise
    assert proc.returncode == 130, err
    state = load_checkpoint(run / "checkpoints/latest.pt")
    assert state["run"]["iteration"] >= 1
    assert "Traceback" not in err


# -- the machine: cores, workers, learner threads -----------------------------------------------------------


def test_workers_and_learner_threads_default_to_the_cores_this_process_may_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os

    from metarl.config import available_cores, host_worker_default, learner_threads, rollout_workers

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)  # the host's count, which a container must not use
    assert available_cores() == 3
    cfg = TrainConfig()
    assert cfg.workers is None and cfg.torch_threads is None
    assert rollout_workers(cfg) == 3 and learner_threads(cfg) == 3
    given = TrainConfig(workers=5, torch_threads=2)
    assert rollout_workers(given) == 5 and learner_threads(given) == 2
    # the driver steps envs only when it has no core of its own
    assert host_worker_default(3, 3) and host_worker_default(4, 3)
    assert not host_worker_default(2, 3) and not host_worker_default(1, 1)


@pytest.mark.parametrize(("value", "name"), [(0, "workers"), (-2, "torch_threads"), (1.5, "workers")])
def test_bad_worker_or_thread_counts_are_refused(value: object, name: str) -> None:
    with pytest.raises(ValueError, match=f"{name} must be a positive integer, got {value!r}"):
        TrainConfig(**{name: value})


def test_a_run_prints_its_layout_and_a_resume_with_other_threads_says_it_is_not_bitwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import os

    train, agent = _tiny_configs(1)
    train = TrainConfig(**{**train.__dict__, "torch_threads": None, "workers": None, "backend": "inline"})
    threads = torch.get_num_threads()
    try:
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
        run = metarl.train(train, agent, out=tmp_path / "run", progress=False)
        err = capsys.readouterr().err
        assert "metarl: 2 core(s) available: every env in the driver (backend inline); learner on cpu with 2" in err
        loop = gru_loop(agent.policy.gru_hidden, torch.device("cpu"))
        learner = {"torch_threads": 2, "device": "cpu", "gru_loop": loop}
        assert load_checkpoint(run / "checkpoints/latest.pt")["learner"] == learner
        metarl.resume(run, iterations=2, progress=False)  # same machine: silent
        assert "not bitwise" not in capsys.readouterr().err
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
        metarl.resume(run, iterations=3, progress=False)
        err = capsys.readouterr().err
        assert "the run so far used torch_threads 2; it continues with torch_threads 3" in err
        assert "not bitwise" in err
    finally:
        torch.set_num_threads(threads)


def test_a_resume_on_another_gru_loop_says_it_is_not_bitwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The checkpoint's learner record names RL²'s GRU time loop (reported by the agent); a resume on the other
    loop (a machine without a compiler, or METARL_NATIVE_GRU=0) says so."""
    from metarl.agents import gru

    train, agent = _tiny_configs(1)
    monkeypatch.setattr(gru, "native_gru", lambda: object())  # as if the compiled loop had built
    assert agent.policy.gru_hidden == 8 and gru.gru_loop(8, torch.device("cpu")) == "compiled"
    assert gru.gru_loop(12, torch.device("cpu")) == "python"  # its loops need a multiple of 8 units
    assert gru.gru_loop(16, torch.device("cuda")) == "cudnn"
    monkeypatch.setattr(gru, "native_gru", lambda: None)
    run = metarl.train(train, agent, out=tmp_path / "run", progress=False)
    assert load_checkpoint(run / "checkpoints/latest.pt")["learner"]["gru_loop"] == "python"
    capsys.readouterr()
    metarl.resume(run, iterations=2, progress=False)
    assert "not bitwise" not in capsys.readouterr().err
    state = load_checkpoint(run / "checkpoints/latest.pt")
    state["learner"]["gru_loop"] = "compiled"  # as if the run so far had run the compiled loop
    (run / "checkpoints/latest.pt").write_bytes(checkpoint_bytes({k: v for k, v in state.items() if k != "format"}))
    metarl.resume(run, iterations=3, progress=False)
    err = capsys.readouterr().err
    assert "the run so far used gru_loop compiled; it continues with gru_loop python" in err


@pytest.mark.parametrize(("benchmark", "deterministic"), [("ML1-reach-v3", True), ("point-nav", False)])
def test_periodic_meta_tests_use_and_record_the_benchmarks_protocol(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, benchmark: str, deterministic: bool
) -> None:
    """Meta-World's protocol (sampled adaptation, mean-action evaluation episodes) in the in-run meta-test as in
    `metarl eval`, so the curve, the final figure and the maximum over training are one metric; elsewhere sampled."""
    from metarl.agents.rl2 import RL2Agent
    from metarl.evaluation.result import protocol_name

    seen: list[bool] = []
    original = RL2Agent.meta_test

    def spy(self, engine, tasks, k, n, det=False, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(det)
        return original(self, engine, tasks, k, n, det, **kwargs)

    monkeypatch.setattr(RL2Agent, "meta_test", spy)
    train, agent = _tiny_configs(2)
    train = dataclasses.replace(
        train, benchmark=benchmark, meta_batch=2, eval_every=1, eval_tasks=2, adaptation_episodes=1, eval_episodes=1
    )
    run = metarl.train(train, agent, out=tmp_path / "run", progress=False, config_name="my-config")
    assert seen == [deterministic, deterministic]
    for name in ("iter-000001.json", "iter-000002.json", "latest.json"):
        result = json.loads((run / "eval" / name).read_text())
        assert result["deterministic"] is deterministic and result["protocol"] == protocol_name(deterministic)
        assert result["feedback"] is True and result["config_name"] == "my-config"
    assert json.loads((run / "eval/latest.json").read_text())["iteration"] == 2


def test_a_resume_never_replaces_an_unreadable_meta_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from metarl.training import record_resume

    (tmp_path / "meta.json").write_text("{not json")
    record_resume(tmp_path, {"iteration": 3, "env_steps": 300})
    assert (tmp_path / "meta.json").read_text() == "{not json"
    assert "unreadable" in capsys.readouterr().err
    (tmp_path / "meta.json").write_text('{"command": ["metarl", "train"]}')
    record_resume(tmp_path, {"iteration": 3, "env_steps": 300})
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["command"] == ["metarl", "train"] and meta["resumes"][0]["from_env_steps"] == 300
