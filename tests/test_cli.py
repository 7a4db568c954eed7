"""The `metarl` command as a user meets it: real subprocesses of the installed console script."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from typing import Any

import pytest

from metarl.envs import list_distributions


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("metarl")
    cmd = [exe, *args] if exe else [sys.executable, "-m", "metarl.cli", *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("METARL_DEBUG", None)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False)


@pytest.fixture(scope="module")
def envs_json() -> list[dict[str, object]]:
    proc = run_cli("envs", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def test_envs_list_json_has_every_distribution(envs_json: list[dict[str, object]]) -> None:
    names = [row["name"] for row in envs_json]
    assert names == list_distributions()
    assert sum(str(n).startswith("ML1-") for n in names) == 50
    rows = {row["name"]: row for row in envs_json}
    for name in ("ML10", "ML25", "ML45", "point-nav", "cheetah-vel", "cheetah-dir", "ant-dir"):
        assert "notes" not in rows[name] or not str(rows[name]["notes"]).startswith("cannot be built"), rows[name]
    assert (rows["ML10"]["train_tasks"], rows["ML10"]["test_tasks"]) == (500, 250)
    assert (rows["ML45"]["train_tasks"], rows["ML45"]["test_tasks"]) == (2250, 250)
    assert (rows["ML25"]["train_tasks"], rows["ML25"]["test_tasks"]) == (1250, 200)
    assert "basketball-v3" in str(rows["ML25"]["notes"])
    assert (rows["ML1-reach-v3"]["obs_dim"], rows["ML1-reach-v3"]["action_dim"], rows["ML1-reach-v3"]["horizon"]) == (
        39,
        4,
        500,
    )
    assert (rows["point-nav"]["train_tasks"], rows["point-nav"]["test_tasks"], rows["point-nav"]["horizon"]) == (
        1000,
        100,
        100,
    )
    assert rows["cheetah-dir"]["overlapping_splits"] is True
    assert [n for n, r in rows.items() if r["overlapping_splits"]] == ["cheetah-dir"]


def test_envs_list_table_mentions_the_ml25_fix_and_overlap() -> None:
    proc = run_cli("envs", "list")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:3] == ["name", "train", "test"]
    assert any(line.startswith("ML1-reach-v3 ") for line in lines)
    assert any(line.startswith("  ML25:") and "basketball-v3" in line for line in lines)
    assert any(line.startswith("  cheetah-dir:") for line in lines)


def test_unknown_filter_is_one_line_and_exit_2() -> None:
    proc = run_cli("envs", "list", "--filter", "no-such-thing")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "no distribution name contains 'no-such-thing'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_rollout_unknown_benchmark_is_one_line_and_exit_2() -> None:
    proc = run_cli("rollout", "--benchmark", "ML11")
    assert proc.returncode == 2
    assert proc.stderr.startswith("metarl: error: unknown distribution 'ML11'")
    assert "Traceback" not in proc.stderr


def test_rollout_random_policy_on_held_out_tasks() -> None:
    proc = run_cli("rollout", "--benchmark", "point-nav", "--tasks", "3", "--episodes", "2", "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    task_lines = [line for line in proc.stdout.splitlines() if line.startswith("point-nav/test/")]
    assert len(task_lines) == 3
    for line in task_lines:
        ret, success = float(line.split()[1]), float(line.split()[2])
        assert -100 * 1.5 < ret < 0  # reward is minus a distance of at most ~1.4 over <= 100 steps
        assert 0.0 <= success <= 1.0
    assert "env steps" in proc.stdout


def test_env_success_reward_on_a_distribution_without_it_is_one_line_and_exit_2(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The one success-reward flag reaches the distribution, which names the option it lacks."""
    proc = run_cli(
        "train", "rl2", "--config", "rl2-point-nav", "--env-success-reward", "1", "--out", str(tmp_path / "run")
    )
    assert proc.returncode == 2, proc.stderr
    assert "unknown option(s) ['success_reward'] for distribution 'point-nav'" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.strip().count("\n") == 0
    assert not (tmp_path / "run").exists()


def test_env_success_reward_is_the_one_spelling_of_the_success_reward(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``--env-success-reward`` (``TrainConfig.env_success_reward``) is the only success-reward flag of
    ``metarl train``: the agent's own ``--success-reward`` (``ppo.success_reward``) is gone, so argparse refuses it."""
    help_text = run_cli("train", "rl2", "--help").stdout
    assert "--env-success-reward" in help_text
    assert help_text.replace("--env-success-reward", "").count("success-reward") == 0
    proc = run_cli("train", "rl2", "--config", "rl2-ml1", "--success-reward", "1", "--out", str(tmp_path / "run"))
    assert proc.returncode == 2, proc.stderr
    assert "unrecognized arguments: --success-reward 1" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--baseline", "critic"], "baseline must be one of ['linear', 'value'], got 'critic'"),
        (["--chunk-order", "random"], "chunk_order must be one of ['sequential', 'shuffled'], got 'random'"),
        (["--bptt-chunk", "40"], "bptt_overlap (50) must be smaller than bptt_chunk (40)"),
        (["--bptt-overlap", "-3"], "bptt_overlap must be a non-negative integer, got -3"),
    ],
)
def test_bad_rl2_reference_settings_are_one_line_and_exit_2(flags: list[str], message: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    proc = run_cli("train", "rl2", "--config", "rl2-ml1", *flags, "--out", str(tmp_path / "run"))
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0
    assert not (tmp_path / "run").exists()  # nothing started


def test_a_user_error_is_one_line_and_exit_2_and_a_bug_keeps_its_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from metarl import cli
    from metarl.errors import UserError
    from metarl.rollout.errors import ActionError

    def user_mistake(args: object) -> int:
        raise UserError("--frobnicate must be positive, got -1")

    monkeypatch.setattr(cli, "cmd_configs", user_mistake)
    assert cli.main(["configs"]) == 2
    assert capsys.readouterr().err == "metarl: error: --frobnicate must be positive, got -1\n"
    # internal faults are not the user's: a ValueError (ActionError is one) or a FileNotFoundError propagates,
    # so Python prints its traceback and exits 1
    for fault in (ActionError("policy returned NaN actions"), ValueError("shapes"), FileNotFoundError("x.npy")):

        def bug(args: object, fault: Exception = fault) -> int:
            raise fault

        monkeypatch.setattr(cli, "cmd_configs", bug)
        with pytest.raises(type(fault)):
            cli.main(["configs"])


def test_a_bug_in_a_subprocess_prints_a_traceback_and_exits_1() -> None:
    code = (
        "import sys; from metarl import cli; from metarl.rollout.errors import ActionError\n"
        "def bug(args): raise ActionError('policy returned NaN actions')\n"
        "cli.cmd_configs = bug\n"
        "sys.exit(cli.main(['configs']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 1 and "Traceback (most recent call last)" in proc.stderr
    assert "ActionError: policy returned NaN actions" in proc.stderr


@pytest.mark.parametrize(
    ("make", "kinds"),
    [
        (lambda: __import__("metarl.agents.rl2", fromlist=["x"]).RL2PolicyConfig(gru_hidden=0), (ValueError,)),
        (lambda: __import__("metarl.config", fromlist=["x"]).TrainConfig(meta_batch=0), (ValueError,)),
        (lambda: __import__("metarl.envs", fromlist=["x"]).make_distribution("no-such-benchmark"), (ValueError,)),
    ],
)
def test_boundary_checks_raise_the_user_error_family(make: Any, kinds: tuple[type, ...]) -> None:
    from metarl.errors import UserError

    with pytest.raises(UserError) as info:
        make()
    assert isinstance(info.value, kinds)  # still a ValueError for Python callers


def test_configs_name_prints_every_setting_of_the_config() -> None:
    """`metarl configs NAME`: every field of the training config and of the agent config (nested sections too),
    each as the flag that overrides it, with the named config's value; --json gives the config as a run saves it."""
    from metarl.agents.configs import get_config
    from metarl.config import show_value, to_dict

    named = get_config("rl2-ml10")
    proc = run_cli("configs", "rl2-ml10")
    assert proc.returncode == 0, proc.stderr
    shown = {}
    for line in proc.stdout.splitlines():
        if line.startswith("  --"):
            flag, _, value = line.strip().partition(" ")
            shown[flag] = value.strip()
    expected = {}
    sections = [named.train, named.agent, named.agent.policy, named.agent.ppo]
    for section in sections:
        for name, value in vars(section).items():
            if name != "agent" and not hasattr(value, "__dataclass_fields__"):
                expected["--" + name.replace("_", "-")] = "not set" if value is None else show_value(value)
    assert shown == expected
    assert shown["--meta-batch"] == "20" and shown["--benchmark"] == "ML10"  # the config's values, not the defaults
    data = json.loads(run_cli("configs", "rl2-ml10", "--json").stdout)
    assert data["train"] == to_dict(named.train) and data["agent"] == to_dict(named.agent)


def test_configs_with_a_bad_name_is_one_line_naming_the_valid_ones_and_exit_2() -> None:
    proc = run_cli("configs", "rl2-ml11")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert "unknown config 'rl2-ml11'; choose one of" in proc.stderr and "'rl2-ml10'" in proc.stderr


def test_train_help_with_a_config_shows_the_configs_values() -> None:
    """`metarl train AGENT --config NAME --help` shows what a run of NAME gets without the flag."""
    text = " ".join(run_cli("train", "maml-trpo", "--config", "maml-trpo-ml10", "--help").stdout.split())
    assert "Tasks sampled per meta-iteration. (default: 20)" in text  # TrainConfig's own default is 10
    assert "(default: 512 512)" in text and "(defaults: config maml-trpo-ml10)" in text  # MAMLConfig.hidden
    plain = " ".join(run_cli("train", "--config", "rl2-point-nav", "--help").stdout.split())
    assert "Tasks sampled per meta-iteration. (default: 20)" in plain  # the agent from the config
    assert "and after adaptation). (default: 4)" in plain  # episodes_per_task of rl2-point-nav (default 10)
