"""One source of truth where the code had two: the integer check, the device rule, the shared-memory row
layout and result width, the group control bytes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metarl.errors import UserError, check_int
from metarl.rollout.engine import resolve_device
from metarl.rollout.shm import RES_SUCCESS, RES_WIDTH, Cols, SharedBlock
from metarl.rollout.worker import GROUP_BYTES


def test_check_int_accepts_integers_and_names_what_is_wrong() -> None:
    assert check_int("n", 3) == 3 and check_int("n", np.int64(2)) == 2 and type(check_int("n", np.int32(2))) is int
    assert check_int("seed", 0, 0) == 0
    for bad, minimum, message in (
        (0, 1, "n must be a positive integer, got 0"),
        (True, 1, "n must be a positive integer, got True"),
        (2.0, 1, "n must be a positive integer, got 2.0"),
        (-1, 0, "n must be a non-negative integer, got -1"),
        (2, 3, "n must be an integer >= 3, got 2"),
    ):
        with pytest.raises(UserError) as info:
            check_int("n", bad, minimum)
        assert str(info.value) == message


def test_one_device_rule() -> None:
    cuda = torch.cuda.is_available()
    assert resolve_device("auto") == torch.device("cuda" if cuda else "cpu")
    assert resolve_device("auto", torch.nn.Linear(2, 2)) == torch.device("cpu")  # a policy's own device wins
    assert resolve_device("cuda") == torch.device("cuda")  # an engine may be built for CUDA anywhere
    with pytest.raises(UserError, match="invalid device 'gpu7'"):
        resolve_device("gpu7")
    if not cuda:
        with pytest.raises(UserError, match="CUDA is not available"):
            resolve_device("cuda", require_available=True)


def test_row_layout_and_result_width_are_the_blocks() -> None:
    cols = Cols(obs_dim=5, act_dim=3)
    block = SharedBlock.create(4, 5, 3, shared=False)
    row = np.arange(cols.width)
    named = [row[cols.obs], row[cols.action], [row[cols.reward]], row[cols.flags], [row[cols.slot]], [row[cols.task]]]
    assert np.array_equal(np.concatenate(named), row)  # the columns tile the row, in order, without overlap
    assert row[cols.action_and_reward].tolist() == [*row[cols.action], row[cols.reward]]
    assert RES_SUCCESS == RES_WIDTH - 1
    assert block.res.shape == (4, RES_WIDTH) and block.x.shape == (4, cols.width) and block.cols == cols
    assert GROUP_BYTES == (b"\x00", b"\x01") and all(len(b) == 1 for b in GROUP_BYTES)


def test_config_integers_are_stored_as_python_ints() -> None:
    """A numpy integer passes the check and is stored as an int, so the saved config stays JSON."""
    import json

    from metarl.agents.maml import MAMLConfig
    from metarl.agents.rl2 import RL2Config, RL2PPOConfig
    from metarl.config import TrainConfig, to_dict

    cfg = TrainConfig(meta_batch=np.int64(4), iterations=np.int32(3), seed=np.int64(0))
    assert type(cfg.meta_batch) is int and type(cfg.iterations) is int and type(cfg.seed) is int
    rl2 = RL2Config(episodes_per_trial=np.int64(2), ppo=RL2PPOConfig(epochs=np.int64(3)))
    maml = MAMLConfig(inner_steps=np.int64(2), test_inner_steps=np.int64(1))
    json.dumps([to_dict(cfg), to_dict(rl2), to_dict(maml)])  # raises TypeError on a numpy integer


def test_old_checkpoints_take_the_runs_step_count() -> None:
    from metarl.run import agent_state

    old = {"agent": {"policy": {}}, "run": {"env_steps": 500}}
    rl2_before_schedule = {"agent": {"policy": {}, "env_steps": 0}, "run": {"env_steps": 700}}
    new = {"agent": {"policy": {}, "env_steps": 900}, "run": {"env_steps": 900}}
    assert agent_state(old)["env_steps"] == 500 and agent_state(rl2_before_schedule)["env_steps"] == 700
    assert agent_state(new)["env_steps"] == 900 and "env_steps" not in old["agent"]  # the checkpoint is untouched
    # resumed by older code, which restarted the agent's count at 0: 1.5M counted, 2.5M trained
    stale = {"agent": {"policy": {}, "env_steps": 1_500_000}, "run": {"env_steps": 2_500_000}}
    assert agent_state(stale)["env_steps"] == 2_500_000 and stale["agent"]["env_steps"] == 1_500_000
