"""Smoke tests of benchmarks/speed/sampler.py: step counting of every loop, the policies, the JSON output.

No timing assertions: speed is what the benchmark reports, not what tests check.
"""

from __future__ import annotations

import functools
import json
import math
import multiprocessing as mp
import os
import platform
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._common import (  # noqa: E402
    BenchEnvs,
    GRUPolicy,
    MLPPolicy,
    alternating_orders,
    median,
    ray_loopback_env,
)
from benchmarks.speed import sampler  # noqa: E402
from metarl.rollout.types import StepBatch  # noqa: E402

REQUIRED_KEYS = {m + suffix for m in sampler.METHODS for suffix in ("", "_20")}


@pytest.fixture(scope="module", autouse=True)
def _forkserver_preload() -> None:
    """Env processes fork from a server that has imported torch and Meta-World once (as the benchmark does);
    has no effect when another test already started the forkserver."""
    mp.get_context(sampler.START_METHOD).set_forkserver_preload(sampler.FORKSERVER_PRELOAD)


class CountingEnv(gym.Env[np.ndarray, np.ndarray]):
    """Episodes of exactly ``length`` steps (then truncated); counts every real step it takes."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self, length: int, counter: Any = None) -> None:
        self.length, self.counter = length, counter
        self.t = 0
        self.steps = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(2, np.float32), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self.t >= self.length:
            raise RuntimeError("stepped past the end of an episode without reset")
        self.t += 1
        self.steps += 1
        if self.counter is not None:
            with self.counter.get_lock():
                self.counter.value += 1
        return np.full(2, self.t / self.length, np.float32), 1.0, False, self.t == self.length, {}


def make_counting_env(length: int, counter: Any = None) -> CountingEnv:
    return CountingEnv(length, counter)


def _counting_bench(lengths: list[int], counter: Any) -> BenchEnvs:
    fns: list[Any] = [functools.partial(make_counting_env, n, counter) for n in lengths]
    return BenchEnvs("counting", [f"len{n}" for n in lengths], fns, None, None, horizon=max(lengths))


def test_limit_pool_steps_are_counted_inside_the_envs() -> None:
    counter = mp.get_context(sampler.START_METHOD).Value("q", 0)
    pool = sampler.LimitPool(_counting_bench([3, 5, 7], counter), [[0, 2], [1]])
    try:
        m = pool.measure(episodes=2, strict=False)
        assert m.steps == 2 * (3 + 5 + 7) == counter.value
        assert [r.steps for r in pool.last_results] == [2 * (3 + 7), 2 * 5]
        assert [r.episodes for r in pool.last_results] == [[2, 2], [2]]
        assert math.isfinite(m.seconds) and m.seconds > 0 and m.steps_per_s > 0
        # Shared-heap allocations after start must not clobber the pool's barrier (regression: a barrier
        # that was not kept referenced had its block reused and broke once the block was written).
        junk = [mp.get_context(sampler.START_METHOD).Array("i", [-7] * 64) for _ in range(64)]
        m = pool.measure(episodes=3, strict=True)
        del junk
        assert m.steps == 3 * (3 + 5 + 7)
        assert counter.value == 2 * 15 + 3 * 15
        assert [r.episodes for r in pool.last_results] == [[3, 3], [3]]
    finally:
        pool.close()


def test_gym_loop_skips_next_step_reset_rows() -> None:
    venv = gym.vector.SyncVectorEnv([functools.partial(make_counting_env, n) for n in (3, 5)])
    try:
        m = sampler.run_gym_vector(venv, MLPPolicy(obs_dim=2, act_dim=1), episodes=2)
        envs: Any = venv.envs
        real = [e.unwrapped.steps for e in envs]
    finally:
        venv.close()
    # 11 calls: env 1 runs 5 + reset + 5; env 0 runs 3, reset, 3, reset, 3 in the same calls = 9 real steps
    assert real == [9, 10]
    assert m.steps == 19


def test_sb3_loop_counts_every_row() -> None:
    from stable_baselines3.common.vec_env import DummyVecEnv

    venv = DummyVecEnv([functools.partial(make_counting_env, n) for n in (3, 5)])
    try:
        m = sampler.run_sb3_vector(venv, MLPPolicy(obs_dim=2, act_dim=1), episodes=2)
        real = [e.unwrapped.steps for e in venv.envs]
    finally:
        venv.close()
    assert real == [10, 10]  # SB3 resets inside the ending step: 10 calls, all real
    assert m.steps == 20


def test_alternate_assignment_and_orders() -> None:
    assert sampler.alternate_assignment(5, 2) == [[0, 2, 4], [1, 3]]
    assert sampler.alternate_assignment(1, 2) == [[0]]
    assert alternating_orders(["a", "b", "c"], 3) == [["a", "b", "c"], ["c", "b", "a"], ["a", "b", "c"]]
    assert median([3.0, 1.0, float("nan"), 2.0]) == 2.0
    with pytest.raises(ValueError, match="num_workers must be a positive integer"):
        sampler.alternate_assignment(4, 0)


def _step_batch(rows: int, slots: list[int], trial_start: list[bool], deterministic: bool = False) -> StepBatch:
    g = torch.Generator().manual_seed(0)
    return StepBatch(
        obs=torch.randn(rows, 39, generator=g),
        prev_action=torch.randn(rows, 4, generator=g),
        prev_reward=torch.randn(rows, generator=g),
        prev_done=torch.zeros(rows, dtype=torch.bool),
        episode_start=torch.tensor(trial_start),
        trial_start=torch.tensor(trial_start),
        slot=torch.tensor(slots),
        task=torch.arange(rows),
        noise=torch.randn(rows, 4, generator=g),
        deterministic=deterministic,
    )


@torch.no_grad()
def test_gru_policy_resets_only_trial_start_rows_and_updates_only_given_slots() -> None:
    torch.manual_seed(0)
    policy = GRUPolicy()
    state = torch.randn(3, 256)  # [S, H], nonzero so a reset is visible
    step = _step_batch(2, slots=[2, 0], trial_start=[True, False])
    action, new_state, extras = policy.act(step, state.clone())
    assert action.shape == (2, 4) and new_state.shape == (3, 256) and extras == {}
    # row 0 (slot 2) starts from zeros; row 1 (slot 0) continues from its state
    fresh, _, _ = policy.act(step, torch.zeros(3, 256))
    assert torch.equal(action[0], fresh[0])
    assert not torch.allclose(action[1], fresh[1])
    assert torch.equal(new_state[1], state[1])  # slot 1 was not in the batch
    assert not torch.equal(new_state[0], state[0]) and not torch.equal(new_state[2], state[2])
    mean, _, _ = policy.act(_step_batch(2, [2, 0], [True, False], deterministic=True), state)
    torch.testing.assert_close(action - mean, policy.std * step.noise)


@torch.no_grad()
def test_mlp_policy_matches_between_engine_and_numpy_entry_points() -> None:
    torch.manual_seed(0)
    policy = MLPPolicy()
    step = _step_batch(3, [0, 1, 2], [True] * 3)
    assert policy.initial_state(3) is None  # type: ignore[func-returns-value]
    action, state, _ = policy.act(step, None)
    assert state is None and action.shape == (3, 4)
    torch.testing.assert_close(action, policy(step.obs) + policy.std * step.noise)
    sampled = policy.sample(step.obs.double().numpy())
    assert sampled.shape == (3, 4) and sampled.dtype == np.float32 and np.isfinite(sampled).all()


@torch.no_grad()
def test_benchmark_policies_compute_the_layers_they_name() -> None:
    """The lean benchmark policies equal the ``nn.Linear``/``nn.GRUCell`` maths on the same weights."""
    torch.manual_seed(0)
    mlp = MLPPolicy()
    obs = torch.randn(5, 39)
    h = torch.tanh(torch.nn.functional.linear(obs, mlp.w1_OH.t(), mlp.b1_H))
    h = torch.tanh(torch.nn.functional.linear(h, mlp.w2_HH.t(), mlp.b2_H))
    torch.testing.assert_close(mlp(obs), torch.nn.functional.linear(h, mlp.w3_HA.t(), mlp.b3_A))
    gru = GRUPolicy()
    x, h0 = torch.randn(5, 256), torch.randn(5, 256)
    expected = torch.gru_cell(x, h0, gru.wi_HG.t(), gru.wh_HG.t(), gru.bi_G, gru.bh_G)
    torch.testing.assert_close(gru.cell(x, h0), expected)
    assert not torch.allclose(expected, h0)  # the step changed the state: the comparison means something


def test_ray_loopback_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("RAY_USAGE_STATS_ENABLED", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "1")
    ray_loopback_env()
    assert os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"
    assert os.environ["RAY_USAGE_STATS_ENABLED"] == "0"
    assert os.environ["HTTP_PROXY"] == os.environ["http_proxy"] == "http://127.0.0.1:9"
    assert os.environ["NO_PROXY"] == os.environ["no_proxy"] == "127.0.0.1,localhost"


def test_bad_cli_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        sampler.parse_args(["--only", "limit,nope"])
    assert exc.value.code == 2
    assert "unknown method(s) ['nope']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        sampler.parse_args(["--repeats", "0"])
    assert "--repeats must be a positive integer, got 0" in capsys.readouterr().err


def test_sampler_end_to_end_json(tmp_path: Path) -> None:
    """Every method on Meta-World (1 train class: 1 env, then 2), 1 episode, 1 round; run_config checks
    that each measurement took exactly envs x episodes x 500 steps."""
    out = tmp_path / "sampler.json"
    assert sampler.main(["--classes", "1", "--repeats", "1", "--episodes", "1", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert set(data) == REQUIRED_KEYS | {"meta"}
    skipped = data["meta"]["skipped"]
    engine_available = sampler.engine_class()[0] is not None
    for key in sorted(REQUIRED_KEYS):
        if key in skipped:
            assert not engine_available and key.startswith("metarl_"), (key, skipped[key])
            assert data[key] is None
        else:
            assert isinstance(data[key], float) and math.isfinite(data[key]) and data[key] > 0, (key, data[key])
            assert len(data["meta"]["samples_steps_per_s"][key]) == 1
    assert data["meta"]["settings"]["episodes"] == 1


def test_paired_ratio_pairs_measurements_of_the_same_round() -> None:
    from benchmarks._common import Measurement

    def ms(*rates: float) -> list[Measurement]:
        return [Measurement(int(r), 1.0) for r in rates]

    # the machine slows down 2x between rounds: ratios of medians mislead, paired ratios do not
    limit, ours = ms(4000, 2000, 2000), ms(3000, 1500, 1500)
    assert sampler.paired_ratio(ours, limit) == pytest.approx(0.75)
    assert sampler.paired_ratio(ms(1, 3, 2), ms(1, 1, 1)) == pytest.approx(2.0)  # the median of 1, 3, 2
    assert sampler.paired_ratio([], limit) is None
    samples = {"limit": limit, "metarl_mlp": ours, "gym_async": ms(1000, 500, 500)}
    res = sampler.ConfigResult(10, samples, {}, [], "", {})
    rats = sampler.ratios({"": res})
    assert rats["metarl_mlp_per_limit"] == pytest.approx(0.75)
    assert rats["metarl_mlp_per_gym_async"] == pytest.approx(3.0)
    assert "limit_per_limit" not in rats
    # every method is measured, and each metarl row runs right next to the limit (in both directions)
    order = sampler.MEASURE_ORDER
    assert sorted(order) == sorted(sampler.METHODS)
    assert all(abs(order.index(m) - order.index("limit")) == 1 for m in ("metarl_mlp", "metarl_gru"))


def test_training_benchmark_quick_writes_every_key(tmp_path: Path) -> None:
    """`benchmarks/speed/training.py --quick --overlap`: one round of the limit, of both paths of both agents and of RL²
    with --overlap (meta-batch 2, 2 episodes per task), each measurement in its own process; every figure the
    issue names is there and sane."""
    from benchmarks.speed import training

    out = tmp_path / "training.json"
    assert training.main(["--quick", "--overlap", "--workers", "2", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["meta"]["quick"] is True and data["meta"]["rounds"] == 1
    assert math.isfinite(data["limit"]) and data["limit"] > 0
    for key in ("rl2_sync_1t", "rl2_best", "rl2_overlap", "maml_sync_1t", "maml_best"):
        for suffix in ("", "_sampling_s", "_learning_s", "_learning_s_per_100k", "_peak_rss_mib"):
            value = data[key + suffix]
            assert isinstance(value, float) and math.isfinite(value) and value > 0, (key + suffix, value)
        # end-to-end steps/s is the iteration's steps over its sampling and learning seconds
        steps = data[f"{key}_env_steps"]
        assert data[key] == pytest.approx(steps / (data[f"{key}_sampling_s"] + data[f"{key}_learning_s"]))
    # meta-batch 2: RL² 2 trials of 2 episodes; MAML 2 tasks x 2 episodes, before and after the inner step
    assert data["rl2_sync_1t_env_steps"] == 2 * 2 * 500 and data["maml_best_env_steps"] == 2 * 2 * 2 * 500
    assert data["rl2_overlap_env_steps"] == 2 * 2 * 500  # the second iteration's batch, sampled during the first
    assert "maml_overlap" not in data  # MAML's outer step needs on-policy samples
    assert data["rl2_sync_1t_threads"] == 1 and data["rl2_best_threads"] == training_cores()
    # the old path is float32; the best path and --overlap train RL² under the bf16 autocast its learning check passed
    assert data["rl2_sync_1t_autocast_bf16"] is False and data["maml_best_autocast_bf16"] is False
    assert data["rl2_best_autocast_bf16"] is True and data["rl2_overlap_autocast_bf16"] is True


def test_training_benchmark_flags_replace_nested_config_fields() -> None:
    from benchmarks.speed import training
    from metarl.agents.rl2 import RL2Config

    base = RL2Config()
    changed = training.with_flags(base, ["ppo.autocast_bf16=True", "episodes_per_trial=3"])
    assert changed.ppo.autocast_bf16 is True and changed.episodes_per_trial == 3
    assert changed.ppo.lr == base.ppo.lr and changed.policy == base.policy and base.ppo.autocast_bf16 is False
    with pytest.raises(ValueError, match="RL2PPOConfig has no field 'no_such_field'"):
        training.with_flags(base, ["ppo.no_such_field=1"])


def training_cores() -> int:
    from metarl.config import available_cores

    return available_cores()


def test_training_benchmark_refuses_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.speed import training

    with pytest.raises(SystemExit) as exc:
        training.parse_args(["--rounds", "0"])
    assert exc.value.code == 2 and "--rounds and --workers must be positive, got 0" in capsys.readouterr().err


def test_profile_learner_quick_times_and_profiles_both_learners(tmp_path: Path) -> None:
    """`benchmarks/dev/profile_learner.py --quick` (meta-batch 2): the RL² update takes its full schedule (no
    target_kl), each profile lists operators whose own time fits in the profiled phase, and the MAML step with
    the curvature from all tasks compares with itself as the identity."""
    from benchmarks.dev import profile_learner

    out = tmp_path / "profile.json"
    assert profile_learner.main(["--quick", "--threads", "1", "--top", "5", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    rl2, maml = data["rl2"], data["maml"]
    assert rl2["env_steps"] == 2 * 10 * 500 and rl2["adam_steps"] == 10 * 25  # 10 epochs x 25 chunks of a trial
    for res in (rl2, maml):
        assert 1 <= len(res["top"]) <= 5 and all(r["self_s"] > 0 and 0 < r["share"] <= 1.0 for r in res["top"])
        assert sum(r["share"] for r in res["top"]) <= 1.0 + 1e-6
        assert all(math.isfinite(v) and v > 0 for v in res["phases_s"].values())
    full = next(r for r in maml["hvp_subsample"] if r["hvp_subsample"] == 1.0)
    assert full["speedup"] == 1.0 and full["cosine_to_full_step"] == pytest.approx(1.0) and full["norm_ratio"] == 1.0
    assert {r["hvp_subsample"] for r in maml["hvp_subsample"]} == {1.0, 0.5, 0.25}
    assert data["meta"]["quick"] is True and data["meta"]["meta_batch"] == 2


def test_gru_backward_quick_agrees_with_nn_gru_and_writes_its_figures(tmp_path: Path) -> None:
    """`benchmarks/dev/gru_backward.py --quick`: the fused GRU's gradients are nn.GRU's (the comparison is of the same
    maths), bfloat16's point the same way, and the JSON holds all eight timings with their speeds."""
    import subprocess

    out = tmp_path / "gru.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "dev" / "gru_backward.py"), "--quick", "--json", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    figures = json.loads(out.read_text())
    assert figures["max_relative_grad_diff"] < 1e-5 and 0.99 <= figures["min_bf16_cosine"] <= 1.0 + 1e-6
    keys = [f"{v}_{a}" for a in ("default", "kept") for v in ("nn_gru_float32", "fused_float32", "nn_gru_bf16",
                                                               "fused_bf16")]  # fmt: skip
    from metarl.agents.gru import native_gru

    compiled = [f"compiled_{d}_{a}" for a in ("default", "kept") for d in ("float32", "bf16")]
    assert all(k in figures for k in compiled) is (native_gru() is not None)  # timed wherever it builds
    keys += [k for k in compiled if k in figures]
    assert all(figures[k] > 0 for k in keys)
    for k in keys:
        assert figures[k + "_speedup"] == pytest.approx(figures["nn_gru_float32_default"] / figures[k])
    assert figures["nn_gru_float32_default_speedup"] == 1.0
    assert figures["allocator_kept"] is (sys.platform.startswith("linux") and "glibc" in " ".join(platform.libc_ver()))
    assert "(--quick: not the reference shapes)" in proc.stdout
    bad = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "dev" / "gru_backward.py"), "--rounds", "0"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].endswith("got 2 and 0")


def test_gru_step_quick_writes_consistent_per_step_figures(tmp_path: Path) -> None:
    """`benchmarks/dev/gru_step.py --quick`: a figure per thread count, all positive, and the derived ones (the
    product's share of a forward step, the fused-kernel floor) computed from the measured ones."""
    import subprocess

    out = tmp_path / "step.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "dev" / "gru_step.py"), "--quick", "--threads", "1", "2",
         "--json", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    figures = json.loads(out.read_text())
    assert figures["meta"]["quick"] is True and figures["meta"]["batch"] == 4
    for threads in (1, 2):
        f = figures[f"threads_{threads}"]
        measured = ["forward_step", "product_forward", "product_backward", "product_forward_half",
                    "product_backward_half", "elementwise_call"]  # fmt: skip
        assert all(f[k] > 0 for k in measured), f
        assert f["product_share_of_forward_step"] == pytest.approx(f["product_forward"] / f["forward_step"])
        best = min(f["product_forward"], f.get("product_forward_reordered", float("inf")))
        assert f["fused_step_floor"] == pytest.approx(best + f["elementwise_call"])
    assert "(--quick: not the reference shapes)" in proc.stdout
    bad = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "dev" / "gru_step.py"), "--threads", "0"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert bad.returncode == 2 and "got [0], 20 and 5" in bad.stderr.strip().splitlines()[-1]
