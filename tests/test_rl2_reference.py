"""RL² as metaworld-algorithms runs it on Meta-World: the per-trial linear baseline (no value loss), the
sequential overlapping-chunk schedule, tanh heads, and meta-test inputs (sampled adaptation, the
no-feedback control)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from _helpers import one_row_step

from metarl.agents.distributions import gaussian_log_prob
from metarl.agents.rl2 import (
    AdaptedStatePolicy,
    RL2Agent,
    RL2Config,
    RL2Policy,
    RL2PolicyConfig,
    RL2PPOConfig,
    _kl_stop,
    _ppo_losses,
    _PPOBatch,
    chunk_starts,
    discounted_trial_returns,
    linear_trial_baseline,
    optimizer_steps_per_update,
    ppo_update,
    trials_from_trajectories,
)
from metarl.envs import make_distribution
from metarl.rollout import RolloutEngine

SMALL = RL2PolicyConfig(mlp_hidden=(16,), gru_hidden=16)


@pytest.fixture(scope="module")
def mw_batch() -> tuple[RL2Policy, object]:
    """Two ML1-reach trials of 2 real 500-step episodes, collected by a small untrained RL² policy."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    dist = make_distribution("ML1-reach-v3", seed=0)
    policy = RL2Policy(39, 4, SMALL)
    with RolloutEngine(dist, num_workers=1, seed=0, backend="inline", slots_per_family=2) as engine:
        traj = engine.collect(policy, dist.sample(2, "train", rng=0), episodes_per_task=2, episodes_per_trial=2)
    return policy, traj


def _fresh(policy: RL2Policy) -> RL2Policy:
    copy = RL2Policy(39, 4, policy.config)
    copy.load_state_dict(policy.state_dict())
    return copy


def _grad_norms(policy: RL2Policy, loss: torch.Tensor) -> dict[str, float]:
    policy.zero_grad(set_to_none=True)
    loss.backward(retain_graph=True)
    shared = [p for n, p in policy.named_parameters() if n.startswith(("encoder", "gru"))]
    return {"shared": float(torch.sqrt(sum((p.grad**2).sum() for p in shared if p.grad is not None)))}


def test_value_learning_cannot_swamp_the_policy_gradient_on_meta_world(mw_batch) -> None:  # type: ignore[no-untyped-def]
    policy, traj = mw_batch
    batch = trials_from_trajectories(traj)
    mask = batch.mask
    inputs = policy.inputs(batch.obs, batch.prev_action, batch.prev_reward, batch.prev_done)
    mean, log_std, value, _ = policy.forward_sequence(inputs, torch.zeros(mask.shape[1], 16))
    ret = discounted_trial_returns(batch.rewards, mask, 0.99)
    m = mask.float()
    adv = ret - ret[mask].mean()
    logp = gaussian_log_prob(policy.normalize_action(batch.actions), mean, log_std)
    pg_loss = -(logp * adv * m).sum() / m.sum()
    value_loss = 0.5 * ((value - ret).pow(2) * m).sum() / m.sum()
    # The failure mode of a value head regressing raw Meta-World returns through the shared layers:
    # its gradient there dwarfs the policy gradient's (rewards 0-10 per step, returns in the hundreds).
    assert _grad_norms(policy, 0.5 * value_loss)["shared"] > 10 * _grad_norms(policy, pg_loss)["shared"]

    # metarl's Meta-World default has no shared value loss: the value head is never trained, and the
    # update reports no value loss.
    config = RL2Config().ppo
    assert config.baseline == "linear"
    p = _fresh(policy)
    head_before = {k: v.clone() for k, v in p.value_head.state_dict().items()}
    encoder_before = p.encoder[0].weight.clone()
    stats = ppo_update(p, torch.optim.Adam(p.parameters(), lr=1e-3), traj, RL2PPOConfig(epochs=1))
    assert "value_loss" not in stats
    for k, v in p.value_head.state_dict().items():
        torch.testing.assert_close(v, head_before[k], rtol=0, atol=0)
    assert not torch.equal(p.encoder[0].weight, encoder_before)  # the policy itself did learn
    assert 0.0 < stats["explained_variance"] <= 1.0  # the linear baseline explains part of the returns


def test_linear_trial_baseline_matches_the_reference_least_squares() -> None:
    """Oracle: metaworld-algorithms' LinearFeatureBaseline (numpy lstsq of the ridge normal equations)."""
    g = torch.Generator().manual_seed(0)
    length, trials, dim = 60, 3, 5
    inputs = torch.randn(length, trials, dim, generator=g) * 4  # some values beyond the ±10 clip
    inputs[0, 0, 0] = 25.0
    rewards = torch.rand(length, trials, generator=g) * 10
    mask = torch.ones(length, trials, dtype=torch.bool)
    mask[45:, 2] = False  # a shorter trial
    returns = discounted_trial_returns(rewards, mask, 0.99)
    ours = linear_trial_baseline(inputs, returns, mask)
    for t in range(trials):
        n = int(mask[:, t].sum())
        x = np.clip(inputs[:n, t].double().numpy(), -10, 10)
        ts = (np.arange(n) / 100.0).reshape(-1, 1)
        feats = np.concatenate([x, x**2, ts, ts**2, ts**3, np.ones((n, 1))], axis=1)
        y = returns[:n, t].double().numpy()
        coef = np.linalg.lstsq(feats.T @ feats + 1e-5 * np.eye(feats.shape[1]), feats.T @ y, rcond=-1)[0]
        np.testing.assert_allclose(ours[:n, t].double().numpy(), feats @ coef, rtol=1e-4, atol=1e-3)
        assert (ours[n:, t] == 0).all()
    # returns run across episode ends within a trial and stop at the trial's end
    assert returns[44, 2] == pytest.approx(float(rewards[44, 2]))
    assert returns[43, 2] == pytest.approx(float(rewards[43, 2] + 0.99 * rewards[44, 2]))


def test_chunk_starts_follow_the_reference_and_cover_the_whole_trial() -> None:
    # metaworld-algorithms: np.arange(0, T - overlap, C - overlap), keeping starts whose chunk fits
    ref = [int(s) for s in np.arange(0, 5000 - 50, 200) if s + 250 <= 5000]
    assert len(ref) == 24 and ref[-1] + 250 == 4850
    assert chunk_starts(5000, 250, 50) == [*ref, 4750]  # plus one chunk for the last 150 steps
    assert chunk_starts(1000, 250, 50) == [0, 200, 400, 600, 750]
    assert chunk_starts(1000, 250, 0) == [0, 250, 500, 750]
    assert chunk_starts(100, 250, 50) == [0]  # a trial shorter than a chunk: one chunk
    assert chunk_starts(5000, 250, 50, tail=False) == ref  # ppo.train_tail=False: the reference's 24 exactly
    assert chunk_starts(1000, 250, 0, tail=False) == [0, 250, 500, 750]  # no tail to add: the same either way


@pytest.mark.parametrize(
    ("changes", "per_epoch"),
    [
        ({}, 5),
        ({"train_tail": False}, 4),
        ({"bptt_overlap": 0}, 4),
        ({"chunk_order": "shuffled", "minibatches": 3}, 3),
    ],
)
def test_optimizer_steps_per_iteration_match_the_schedule(mw_batch, changes: dict, per_epoch: int) -> None:  # type: ignore[no-untyped-def]
    policy, traj = mw_batch
    config = RL2PPOConfig(epochs=2, **changes)
    p = _fresh(policy)
    opt = torch.optim.Adam(p.parameters(), lr=1e-4)
    stats = ppo_update(p, opt, traj, config)
    adam_steps = int(opt.state[p.encoder[0].weight]["step"])
    assert adam_steps == 2 * per_epoch == stats["optimizer_steps"]  # trials of 1,000 steps
    assert optimizer_steps_per_update(config, 1000, 2 * 4) == 2 * per_epoch


def test_sequential_chunks_start_from_the_hidden_state_the_trial_reached(mw_batch) -> None:  # type: ignore[no-untyped-def]
    """With the weights held still, every chunk must reproduce the behaviour log-probabilities, which only
    holds if each chunk starts from the hidden state the collecting policy had there."""
    policy, traj = mw_batch
    p = _fresh(policy)
    stats = ppo_update(p, torch.optim.SGD(p.parameters(), lr=0.0), traj, RL2PPOConfig(epochs=1))
    assert stats["optimizer_steps"] == 5
    assert stats["approx_kl"] < 1e-6 and stats["clip_frac"] == 0.0
    # the control: chunks started from a zero state would not reproduce them
    batch = trials_from_trajectories(traj)
    inputs = p.inputs(batch.obs, batch.prev_action, batch.prev_reward, batch.prev_done)
    with torch.no_grad():
        mean, log_std, _, _ = p.forward_sequence(inputs[600:850], torch.zeros(2, 16))
    logp = gaussian_log_prob(p.normalize_action(batch.actions[600:850]), mean, log_std)
    assert (logp - batch.log_prob[600:850]).abs().max() > 1e-3


@pytest.mark.parametrize(("squash", "low", "high"), [(True, -1.0, 1.0), (False, -5.0, 2.0)])
def test_the_std_never_falls_below_its_bound(squash: bool, low: float, high: float) -> None:
    cfg = RL2PolicyConfig(mlp_hidden=(8,), gru_hidden=6, squash_heads=squash)
    policy = RL2Policy(3, 2, cfg)
    assert policy.log_std_bounds == (low, high)
    hidden = torch.randn(50, 6) * 3
    reached = []
    for bias in (-1e3, 0.0, 1e3):
        with torch.no_grad():
            policy.log_std_head.bias.fill_(bias)
            policy.mean_head.bias.fill_(bias)
        with torch.no_grad():
            mean, log_std, _ = policy.heads(hidden)
        assert float(log_std.min()) >= low and float(log_std.max()) <= high
        if squash:  # the mean stays in the [-1, 1] action box too
            assert float(mean.abs().max()) <= 1.0
        reached.append(log_std)
    # both bounds are reached, not an artefact of the init
    assert float(reached[0].min()) == pytest.approx(low) and float(reached[-1].max()) == pytest.approx(high)


@pytest.mark.parametrize(("squash", "init"), [(True, 0.0), (True, -0.9), (False, -1.0), (False, 1.5)])
def test_the_untrained_std_is_init_log_std(squash: bool, init: float) -> None:
    torch.manual_seed(0)
    cfg = RL2PolicyConfig(mlp_hidden=(8,), gru_hidden=6, squash_heads=squash, init_log_std=init)
    policy = RL2Policy(3, 2, cfg)
    with torch.no_grad():
        _, log_std, _ = policy.heads(torch.randn(40, 6))
    # the head's weights start at orthogonal x 0.01, so every state's log σ sits within 0.05 of the chosen value
    assert (log_std - init).abs().max() < 0.05
    assert log_std.std() > 0  # state-dependent, not a constant


def test_reference_weight_init_is_metaworld_algorithms() -> None:
    """Per-gate Xavier-uniform input kernels and orthogonal recurrent kernels, zero biases, Xavier-uniform MLP and
    heads with the bound of one 2A-output head (the reference's flax layers); the default is PyTorch's."""
    torch.manual_seed(0)
    a, g = 4, 32
    policy = RL2Policy(39, a, RL2PolicyConfig(mlp_hidden=(64, 48), gru_hidden=g, weight_init="reference"))
    torch.manual_seed(0)
    default = RL2Policy(39, a, RL2PolicyConfig(mlp_hidden=(64, 48), gru_hidden=g))

    def xavier_bound(fan_in: int, fan_out: int) -> float:
        return math.sqrt(6.0 / (fan_in + fan_out))

    def spans(w: torch.Tensor, bound: float) -> bool:  # fills most of [-bound, bound] and never leaves it
        top = float(w.detach().abs().max())
        return top <= bound and top > 0.9 * bound

    for layer, (fan_in, fan_out) in zip(policy.encoder[::2], [(39 + a + 2, 64), (64, 48)], strict=True):
        assert spans(layer.weight, xavier_bound(fan_in, fan_out)) and not layer.bias.any()
    for gate in range(3):
        w_hh = policy.gru.weight_hh_l0[gate * g : (gate + 1) * g]
        assert torch.allclose(w_hh @ w_hh.T, torch.eye(g), atol=1e-5)  # orthogonal, per gate
        assert spans(policy.gru.weight_ih_l0[gate * g : (gate + 1) * g], xavier_bound(48, g))
    assert not policy.gru.bias_ih_l0.any() and not policy.gru.bias_hh_l0.any()
    assert spans(policy.mean_head.weight, xavier_bound(g, 2 * a)) and not policy.mean_head.bias.any()
    assert spans(policy.log_std_head.weight, xavier_bound(g, 2 * a))
    # the default keeps PyTorch's GRU (uniform ±1/√G, biases too) and the heads of gain 0.01
    assert spans(default.gru.weight_hh_l0, 1 / math.sqrt(g)) and default.gru.bias_hh_l0.abs().min() > 0
    assert float(default.mean_head.weight.detach().abs().max()) < 0.01
    # the log-std head's bias still sets init_log_std (0 here), and the untrained mean is no longer ≈ 0
    with torch.no_grad():
        mean, _, _ = policy.heads(torch.tanh(torch.randn(200, g)))
    assert float(policy.log_std_head.bias.detach().abs().max()) == 0.0 and float(mean.abs().max()) > 0.1


@pytest.mark.parametrize("eps", [1e-5, 1e-8])
def test_adam_eps_reaches_the_optimizer(eps: float) -> None:
    agent = RL2Agent(3, 2, RL2Config(episodes_per_trial=1, ppo=RL2PPOConfig(adam_eps=eps)), episodes_per_task=1)
    assert agent.optimizer.param_groups[0]["eps"] == eps


@pytest.mark.parametrize("action_input", [True, False])
def test_action_input_off_hides_the_previous_action(action_input: bool) -> None:
    torch.manual_seed(0)
    policy = RL2Policy(3, 2, RL2PolicyConfig(mlp_hidden=(8,), gru_hidden=6, action_input=action_input))
    obs, noise = torch.randn(1, 3), torch.zeros(1, 2)
    outs = []
    for prev in (torch.zeros(1, 2), torch.tensor([[0.9, -0.7]])):
        step = one_row_step(obs, trial_start=False, episode_start=False, noise=noise, reward=1.0)
        step.prev_action = prev
        action, state, _ = policy.act(step, torch.randn(1, 6, generator=torch.Generator().manual_seed(1)))
        outs.append((action, state))
    same = torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
    assert same != action_input  # off: action and next hidden state ignore it; on: they depend on it
    # the training path reads the same inputs
    x = policy.inputs(obs, torch.tensor([[0.9, -0.7]]), torch.tensor([1.0]), torch.tensor([False]))
    assert x.shape == (1, 3 + 2 + 2) and bool((x[:, 3:5] == 0).all()) != action_input


def _walk(
    policy: AdaptedStatePolicy, episodes: int, reward: float = 2.0
) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
    """(episode, action, mean action) for every step of a trial of ``episodes`` 3-step episodes."""
    g = torch.Generator().manual_seed(3)
    state = policy.initial_state(1)
    out = []
    for episode in range(episodes):
        for t in range(3):
            obs, noise = torch.randn(1, 3, generator=g), torch.randn(1, 2, generator=g)
            kw = {"trial_start": episode == 0 and t == 0, "episode_start": t == 0, "reward": reward}
            mean_state = tuple(s.clone() for s in state)
            mean, _, _ = policy.act(
                dataclasses.replace(one_row_step(obs, noise=noise, **kw), deterministic=True), mean_state
            )
            action, state, _ = policy.act(one_row_step(obs, noise=noise, **kw), state)
            out.append((episode, action, mean))
    return out


def test_adaptation_episodes_are_sampled_and_evaluation_episodes_take_the_mean() -> None:
    torch.manual_seed(0)
    net = RL2Policy(3, 2, RL2PolicyConfig(mlp_hidden=(8,), gru_hidden=6))
    k = 2
    for episode, action, mean in _walk(AdaptedStatePolicy(net, k, deterministic_eval=True), k + 2):
        if episode < k:
            assert not torch.allclose(action, mean), episode
        else:
            torch.testing.assert_close(action, mean)
    # without --deterministic every episode samples
    assert all(not torch.allclose(a, m) for _, a, m in _walk(AdaptedStatePolicy(net, k), k + 2))


def test_no_feedback_control_zeroes_the_reward_input() -> None:
    torch.manual_seed(0)
    net = RL2Policy(3, 2, RL2PolicyConfig(mlp_hidden=(8,), gru_hidden=6))
    blind = [a for _, a, _ in _walk(AdaptedStatePolicy(net, 1, reward_feedback=False), 3, reward=5.0)]
    zero = [a for _, a, _ in _walk(AdaptedStatePolicy(net, 1), 3, reward=0.0)]
    seen = [a for _, a, _ in _walk(AdaptedStatePolicy(net, 1), 3, reward=5.0)]
    for b, z in zip(blind, zero, strict=True):
        torch.testing.assert_close(b, z)  # a reward of 5 reads as 0 throughout the trial
    assert not all(torch.allclose(b, s) for b, s in zip(blind, seen, strict=True))


def test_meta_test_samples_adaptation_under_deterministic() -> None:
    """End to end on point-nav (resets do not depend on the seed): with no adaptation episode the
    deterministic evaluation episodes agree across noise seeds; with adaptation episodes they do not,
    because the adaptation episodes explore."""
    torch.set_num_threads(1)
    dist = make_distribution("point-nav", seed=0)
    task = dist.tasks("test")[0]
    cfg = RL2Config(episodes_per_trial=2, policy=RL2PolicyConfig(mlp_hidden=(8,), gru_hidden=8))
    agent = RL2Agent(2, 2, cfg, episodes_per_task=2, seed=0, action_low=-0.1, action_high=0.1)

    def run(seed: int, k: int) -> torch.Tensor:
        with RolloutEngine(dist, num_workers=1, seed=seed, backend="inline") as engine:
            return agent.meta_test(engine, [task], k, 1, True).curve_return

    torch.testing.assert_close(run(0, 0), run(1, 0))
    a, b = run(0, 2), run(1, 2)
    assert not torch.equal(a[:, :2], b[:, :2])  # adaptation episodes sampled with different noise


@pytest.mark.parametrize(
    ("cls", "kwargs", "match"),
    [
        (RL2PPOConfig, {"baseline": "critic"}, r"baseline must be one of \['linear', 'value'\], got 'critic'"),
        (RL2PPOConfig, {"chunk_order": "random"}, r"chunk_order must be one of \['sequential', 'shuffled'\]"),
        (RL2PPOConfig, {"bptt_overlap": 250}, r"bptt_overlap \(250\) must be smaller than bptt_chunk \(250\)"),
        (RL2PPOConfig, {"bptt_overlap": -1}, "bptt_overlap must be a non-negative integer, got -1"),
        (RL2PPOConfig, {"normalize_advantages": "yes"}, "normalize_advantages must be true or false"),
        (RL2PolicyConfig, {"squash_heads": 1}, "squash_heads must be true or false, got 1"),
        (RL2PolicyConfig, {"init_log_std": -1.0}, r"open interval \(-1, 1\)\), got -1\.0"),
        (RL2PolicyConfig, {"init_log_std": -6.0, "squash_heads": False}, r"linear heads: \[-5, 2\]\), got -6\.0"),
        (RL2PolicyConfig, {"action_input": "no"}, "action_input must be true or false, got 'no'"),
        (RL2PolicyConfig, {"init_log_std": "low"}, "init_log_std must lie inside the log σ bounds .*got 'low'"),
        (RL2PPOConfig, {"adam_eps": 0.0}, r"adam_eps must be a number in \[1e-12, 1\], got 0\.0"),
        (RL2PPOConfig, {"adam_eps": None}, r"adam_eps must be a number in \[1e-12, 1\], got None"),
        (RL2PPOConfig, {"train_tail": "no"}, "train_tail must be true or false, got 'no'"),
        (
            RL2PolicyConfig,
            {"weight_init": "xavier"},
            r"weight_init must be one of \['torch', 'reference'\], got 'xavier'",
        ),
    ],
)
def test_new_config_fields_reject_bad_values(cls: type, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


def test_target_kl_stops_the_update_once_a_step_moves_too_far(mw_batch) -> None:  # type: ignore[no-untyped-def]
    policy, traj = mw_batch
    p = _fresh(policy)
    # step 1 starts at the behaviour policy (KL 0); step 2 sees the KL step 1 made and is the last
    stats = ppo_update(p, torch.optim.Adam(p.parameters(), lr=1e-3), traj, RL2PPOConfig(epochs=3, target_kl=1e-9))
    assert stats["optimizer_steps"] == 2
    p = _fresh(policy)
    stats = ppo_update(p, torch.optim.Adam(p.parameters(), lr=1e-3), traj, RL2PPOConfig(epochs=3, target_kl=1e3))
    assert stats["optimizer_steps"] == 15  # never reached: 3 epochs x 5 chunks
    with pytest.raises(ValueError, match=r"target_kl must be a positive number or None, got -0\.1"):
        RL2PPOConfig(target_kl=-0.1)


def test_the_kl_stop_reads_the_approx_kl_of_the_last_step() -> None:
    # a hand-made part: behaviour log-probs of the actions under N(0, σ²); the current mean moved by 0.1σ, so the
    # KL is 4 dims x 0.1² / 2 = 0.02
    torch.manual_seed(1)
    log_std = torch.full((50, 3, 4), -2.0)
    actions = torch.randn(50, 3, 4) * log_std.exp()
    old = gaussian_log_prob(actions, torch.zeros_like(actions), log_std)
    part = _PPOBatch(inputs=torch.zeros(50, 3, 1), actions=actions, old_log_prob=old, adv=torch.zeros(50, 3),
                     ret=torch.zeros(50, 3), mask=torch.ones(50, 3, dtype=torch.bool))  # fmt: skip
    mean = torch.full_like(actions, 0.1) * log_std.exp()
    _, plain = _ppo_losses(RL2PPOConfig(target_kl=0.01), mean, log_std, torch.zeros(50, 3), part)
    assert plain["approx_kl"] == pytest.approx(0.02, rel=0.3)
    assert _kl_stop({"approx_kl": [0.001, 0.02]}, RL2PPOConfig(target_kl=0.01))  # 0.02 > 1.5 x 0.01
    assert not _kl_stop({"approx_kl": [0.02, 0.014]}, RL2PPOConfig(target_kl=0.01))  # the last step's: 0.014 < 0.015
    assert not _kl_stop({"approx_kl": [1.0]}, RL2PPOConfig())  # no target_kl: never
