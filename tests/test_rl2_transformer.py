"""``rl2-transformer`` (issue 35): the transformer memory's cache gives the outputs of a full pass, is causal,
keeps trials apart and lets an evaluation episode read the first adaptation episode's reward; the agent trains,
resumes bitwise, loads and evaluates through the same commands as RL²; its config refuses bad values in one
line."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from _helpers import metarl_cli

import metarl
from metarl.agents.configs import get_config
from metarl.agents.rl2 import RecurrentMemory, RL2PPOConfig, ppo_update
from metarl.agents.rl2.adapted import AdaptedStatePolicy
from metarl.agents.rl2_transformer import (
    RL2TransformerConfig,
    TransformerMemory,
    TransformerPolicyConfig,
    TransformerRL2Policy,
)
from metarl.config import TrainConfig
from metarl.envs import make_distribution
from metarl.rollout import RolloutEngine
from metarl.rollout.types import StepBatch
from metarl.run import build_agent, load_checkpoint

D = 5  # memory input features (the done flag comes on top)


def _memory(window: int = 4, max_episodes: int = 2, seed: int = 0) -> TransformerMemory:
    torch.manual_seed(seed)
    return TransformerMemory(D, 16, 2, 4, window, max_episodes)


def _sequence(lengths: list[list[int]], seed: int = 1) -> torch.Tensor:
    """Inputs [L, B, D + 1] for B trials whose episodes have the given lengths (the done flag set on the first step
    of every episode after the first); the trials are padded to the longest with a continuing episode."""
    gen = torch.Generator().manual_seed(seed)
    total = max(sum(ls) for ls in lengths)
    x = torch.randn(total, len(lengths), D + 1, generator=gen)
    x[..., -1] = 0.0
    for b, ls in enumerate(lengths):
        for start in np.cumsum(ls)[:-1]:
            x[int(start), b, -1] = 1.0
    return x


TRIALS = [[5, 7, 3, 8], [10, 13], [2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 3], [1, 1, 21]]


def test_the_memory_is_a_recurrent_memory() -> None:
    assert isinstance(_memory(), RecurrentMemory)


def test_cached_steps_equal_one_full_pass() -> None:
    """One token per step through the per-slot cache gives the outputs of one pass over the whole sequence (episodes
    longer than the window, more episodes than summary slots, one-step episodes)."""
    mem, x = _memory(), _sequence(TRIALS)
    with torch.no_grad():
        full, _ = mem.sequence(x, mem.initial_state(x.shape[1], torch.device("cpu")))
        state, outs = mem.initial_state(x.shape[1], torch.device("cpu")), []
        for t in range(x.shape[0]):
            out, state = mem.step(x[t], state)
            outs.append(out)
    torch.testing.assert_close(torch.stack(outs), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cuts", [(1,), (5,), (4, 9), (7, 11, 16), (2, 3, 4, 5, 20)])
def test_chunks_with_handed_over_caches_equal_one_full_pass(cuts: tuple[int, ...]) -> None:
    """The update's truncated BPTT: a trial split into chunks, each starting from the cache :meth:`handover` rebuilt
    after the previous chunk's last step (cuts on episode starts and inside episodes), gives the full pass."""
    mem, x = _memory(), _sequence(TRIALS)
    with torch.no_grad():
        full, _ = mem.sequence(x, mem.initial_state(x.shape[1], torch.device("cpu")))
        state, outs, start = mem.initial_state(x.shape[1], torch.device("cpu")), [], 0
        for end in [*cuts, x.shape[0]]:
            out, trace = mem.sequence(x[start:end], state)
            state, start = mem.handover(trace, end - start - 1), end
            outs.append(out)
    torch.testing.assert_close(torch.cat(outs), full, atol=1e-5, rtol=1e-5)


def test_a_handover_before_the_chunk_ends_starts_an_overlapping_chunk() -> None:
    """The sequential order's overlap: the next chunk starts from the state after a step inside this one."""
    mem, x = _memory(), _sequence(TRIALS)
    with torch.no_grad():
        full, _ = mem.sequence(x, mem.initial_state(x.shape[1], torch.device("cpu")))
        for inside in (0, 3, 4, 8):
            _, trace = mem.sequence(x[:12], mem.initial_state(x.shape[1], torch.device("cpu")))
            out, _ = mem.sequence(x[inside + 1 :], mem.handover(trace, inside))
            torch.testing.assert_close(out, full[inside + 1 :], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("t", [0, 6, 13, 22])
def test_no_output_depends_on_a_later_step(t: int) -> None:
    """Perturb step t (features and done flag): every output before t is unchanged, and the output at t changes."""
    mem, x = _memory(), _sequence(TRIALS)
    y = x.clone()
    y[t, :, :-1] += 3.0
    y[t, :, -1] = 1.0 - y[t, :, -1]
    with torch.no_grad():
        a, _ = mem.sequence(x, mem.initial_state(x.shape[1], torch.device("cpu")))
        b, _ = mem.sequence(y, mem.initial_state(x.shape[1], torch.device("cpu")))
    torch.testing.assert_close(a[:t], b[:t], atol=0, rtol=0)
    assert not torch.allclose(a[t], b[t])


def _policy(window: int = 8, seed: int = 0) -> TransformerRL2Policy:
    torch.manual_seed(seed)
    cfg = TransformerPolicyConfig(mlp_hidden=(16,), d_model=16, n_layers=2, n_heads=2, window=window, max_episodes=4)
    return TransformerRL2Policy(3, 2, cfg, action_low=-np.ones(2), action_high=np.ones(2))


def _step(obs: torch.Tensor, reward: torch.Tensor, *, done: bool, trial_start: bool, slots: list[int]) -> StepBatch:
    r = len(slots)
    return StepBatch(
        obs=obs, prev_action=torch.zeros(r, 2), prev_reward=reward, prev_done=torch.full((r,), done),
        episode_start=torch.full((r,), done or trial_start), trial_start=torch.full((r,), trial_start),
        slot=torch.tensor(slots), task=torch.zeros(r, dtype=torch.long), noise=torch.zeros(r, 2), deterministic=True,
    )  # fmt: skip


def _run_trial(policy: TransformerRL2Policy, state: object, steps: list[tuple[torch.Tensor, torch.Tensor, bool]],
               slots: list[int]) -> tuple[list[torch.Tensor], object]:  # fmt: skip
    means = []
    for i, (obs, reward, done) in enumerate(steps):
        action, state, _ = policy.act(_step(obs, reward, done=done, trial_start=i == 0, slots=slots), state)
        means.append(action)
    return means, state


def _random_trial(seed: int, rows: int, episodes: int = 3, length: int = 6) -> list:
    gen = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(rows, 3, generator=gen), torch.randn(rows, generator=gen), e > 0 and t == 0)
        for e in range(episodes)
        for t in range(length)
    ]


def test_nothing_crosses_a_trial_boundary() -> None:
    """A trial that starts in a slot after another trial acts exactly as the same trial in a fresh slot, while the
    neighbouring slot, still inside its trial, keeps its own cache."""
    policy = _policy()
    first, second = _random_trial(1, 1), _random_trial(2, 1)
    _, state = _run_trial(policy, policy.initial_state(2), first, slots=[0])
    after, _ = _run_trial(policy, state, second, slots=[0])
    fresh, _ = _run_trial(policy, policy.initial_state(2), second, slots=[1])
    for a, b in zip(after, fresh, strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    # and the previous trial did shape what its own later steps saw: the same second half differs without it
    cont, _ = _run_trial(policy, state, [(o, r, d or i == 0) for i, (o, r, d) in enumerate(second)][1:], slots=[0])
    assert not torch.allclose(torch.stack(cont), torch.stack(fresh[1:]))


def test_an_evaluation_step_depends_on_a_reward_of_the_first_adaptation_episode() -> None:
    """Trials of 3 adaptation episodes of 20 steps and an evaluation episode; the window (4) is far shorter than the
    gap, so the first episode reaches the evaluation episode only through its summary token."""
    policy = _policy(window=4)
    length, episodes = 20, 4
    gen = torch.Generator().manual_seed(3)
    obs = torch.randn(episodes * length, 1, 3, generator=gen)
    reward = torch.randn(episodes * length, 1, generator=gen, requires_grad=True)
    done = torch.zeros(episodes * length, 1, dtype=torch.bool)
    done[length::length] = True
    inputs = policy.inputs(obs, torch.zeros(episodes * length, 1, 2), reward, done)
    mean, _, value, _ = policy.forward_hidden(inputs, policy.memory.initial_state(1, torch.device("cpu")))
    eval_step = 3 * length + 10
    (grad,) = torch.autograd.grad(mean[eval_step].sum() + value[eval_step].sum(), reward)
    assert grad[5].abs().item() > 0  # a reward of the first episode (step 5)
    assert torch.all(grad[eval_step + 1 :] == 0)  # and no later one


def _tiny_agent(ppo: RL2PPOConfig | None = None) -> tuple[object, object]:
    dist = make_distribution("point-nav", seed=0)
    cfg = TrainConfig(agent="rl2-transformer", benchmark="point-nav", meta_batch=2, episodes_per_task=2)
    policy = TransformerPolicyConfig(mlp_hidden=(16,), d_model=16, n_heads=2, window=8, max_episodes=4)
    agent_cfg = RL2TransformerConfig(episodes_per_trial=2, policy=policy,
                                     ppo=ppo or RL2PPOConfig(epochs=1, bptt_chunk=25, bptt_overlap=5))  # fmt: skip
    return build_agent(cfg, agent_cfg, dist, torch.device("cpu")), dist


@pytest.mark.parametrize("bf16", [False, True])
def test_the_rl2_update_trains_the_transformer_over_handed_over_chunks(bf16: bool) -> None:
    """RL²'s PPO (sequential chunks with overlap, cache handed over between them) changes every weight of the
    memory and stays finite, in float32 and under bfloat16 autocast."""
    torch.set_num_threads(1)
    agent, dist = _tiny_agent(RL2PPOConfig(epochs=1, bptt_chunk=25, bptt_overlap=5, autocast_bf16=bf16))
    tasks = dist.sample(2, "train", rng=np.random.default_rng(0))
    before = {k: v.clone() for k, v in agent.policy.transformer.state_dict().items()}
    with RolloutEngine(dist, num_workers=1, seed=0, backend="inline", slots_per_family=2) as engine:
        traj = engine.collect(agent.policy, tasks, episodes_per_task=2, episodes_per_trial=2)
    stats = ppo_update(agent.policy, agent.optimizer, traj, agent.config.ppo, agent.generator)
    # trials of 2 x 100 steps, chunks of 25 every 20 steps: starts 0, 20, ..., 160 and the tail at 175
    assert stats["optimizer_steps"] == 10 and math.isfinite(stats["policy_loss"])
    changed = [k for k, v in agent.policy.transformer.state_dict().items() if not torch.equal(v, before[k])]
    assert set(changed) == set(before)


def test_meta_test_snapshots_and_restores_the_adapted_cache() -> None:
    """RL²'s meta-test wrapper works on the transformer's cache: every evaluation episode starts from the cache
    reached after the adaptation episodes, so with the mean action all evaluation episodes are the same."""
    torch.set_num_threads(1)
    agent, dist = _tiny_agent()
    tasks = dist.sample(2, "test", rng=np.random.default_rng(0))
    with RolloutEngine(dist, num_workers=1, seed=0, backend="inline", slots_per_family=2) as engine:
        result = agent.meta_test(engine, tasks, 2, 3, True)
    returns = result.eval_return  # [N, 3]
    torch.testing.assert_close(returns[:, 1:], returns[:, :1].expand(-1, 2))
    assert isinstance(AdaptedStatePolicy(agent.policy, 2).initial_state(3)[0], dict)


def test_config_fields_reject_bad_values_in_one_line(tmp_path: Path) -> None:
    for flags, message in [
        (["--n-heads", "3"], "d_model (32) must be a multiple of n_heads (3)"),
        (["--window", "0"], "window must be"),
        (["--max-episodes", "-1"], "max_episodes must be"),
        (["--chunk-order", "shuffled"], "rl2-transformer trains its chunks in time order only"),
        (["--gru-hidden", "32"], "rl2-transformer has no GRU"),
        (["--weight-init", "reference"], "supports only 'torch'"),
    ]:
        run = tmp_path / "run"
        proc = metarl_cli("train", "rl2-transformer", "--config", "rl2-transformer-point-nav", "--iterations", "1",
                          "--out", str(run), "--no-progress", *flags)  # fmt: skip
        assert proc.returncode == 2, (flags, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert "Traceback" not in proc.stderr and len(lines) == 1 and message in lines[0], (flags, proc.stderr)
        assert not run.exists()


def test_named_configs_carry_rl2s_budgets() -> None:
    for name, rl2 in [("rl2-transformer-ml1", "rl2-ml1"), ("rl2-transformer-ml10", "rl2-ml10")]:
        cfg, ref = get_config(name), get_config(rl2)
        assert cfg.train.agent == "rl2-transformer" and cfg.train.benchmark == ref.train.benchmark
        for field in ("meta_batch", "episodes_per_task", "total_env_steps", "eval_every", "eval_tasks"):
            assert getattr(cfg.train, field) == getattr(ref.train, field), (name, field)
        assert cfg.agent.episodes_per_trial == ref.agent.episodes_per_trial


_SMALL = ["--config", "rl2-transformer-point-nav", "--seed", "4", "--meta-batch", "2", "--eval-every", "0",
          "--checkpoint-every", "1000", "--workers", "1", "--torch-threads", "1", "--no-progress",
          "--bptt-chunk", "60", "--bptt-overlap", "10", "--epochs", "2"]  # fmt: skip


def test_train_resume_load_and_eval_through_the_commands(tmp_path: Path) -> None:
    """``metarl train rl2-transformer`` for 3 iterations equals 2 iterations resumed to 3, bitwise; ``metarl.load``
    gives the agent back; ``metarl eval`` (and its no-feedback control) score it."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    proc = metarl_cli("train", "rl2-transformer", *_SMALL, "--iterations", "3", "--out", str(straight))
    assert proc.returncode == 0, proc.stderr
    proc = metarl_cli("train", "rl2-transformer", *_SMALL, "--iterations", "2", "--out", str(resumed))
    assert proc.returncode == 0, proc.stderr
    proc = metarl_cli("train", "--resume", str(resumed), "--iterations", "3", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    a = load_checkpoint(straight / "checkpoints/latest.pt")
    b = load_checkpoint(resumed / "checkpoints/latest.pt")
    weights_a, weights_b = a["agent"]["policy"], b["agent"]["policy"]
    assert weights_a.keys() == weights_b.keys() and any(k.startswith("transformer.") for k in weights_a)
    for key in weights_a:
        assert torch.equal(weights_a[key], weights_b[key]), key
    agent = metarl.load(straight)
    assert agent.name == "rl2-transformer" and isinstance(agent.policy, TransformerRL2Policy)
    for key, value in agent.policy.state_dict().items():
        assert torch.equal(value, weights_a[key]), key
    args = ["eval", str(straight), "--tasks-per-family", "2", "--adaptation-episodes", "2", "--eval-episodes", "1"]
    proc = metarl_cli(*args)
    assert proc.returncode == 0, proc.stderr
    assert (straight / "eval" / "final.json").is_file()
    proc = metarl_cli(*args, "--no-feedback")
    assert proc.returncode == 0, proc.stderr
    assert (straight / "eval" / "no-feedback.json").is_file()
