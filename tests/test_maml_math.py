"""MAML family: meta-gradients (against finite differences), baseline, TRPO, the vmapped per-task call."""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import pytest
import torch

from metarl.agents.maml import (
    FOMAMLConfig,
    GaussianMLPPolicy,
    LoopTaskPolicy,
    MAMLAgent,
    MAMLConfig,
    ReptileConfig,
    TaskBatch,
    TaskPolicy,
    adapt_params,
    baseline_features,
    conjugate_gradient,
    detach_params,
    discounted_returns,
    fit_linear_baseline,
    flat,
    gae,
    gaussian_kl,
    gaussian_log_prob,
    group_rows,
    hvp_tasks,
    inner_losses,
    reptile_outer_step,
    stack_params,
    surrogate_loss,
    trpo_step,
)
from metarl.rollout.types import StepBatch

N, M, O, A = 3, 7, 2, 2  # noqa: E741 (tasks, steps, obs dim, action dim)


def _policy(dtype: torch.dtype = torch.float64, hidden: tuple[int, ...] = (5,), seed: int = 0) -> GaussianMLPPolicy:
    torch.manual_seed(seed)
    pol = GaussianMLPPolicy(O, A, hidden, init_std=0.7).to(dtype)
    with torch.no_grad():  # a non-trivial mean head, so second-order terms are visible
        for p in pol.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return pol


def _batch(seed: int, dtype: torch.dtype = torch.float64, n: int = N, m: int = M) -> TaskBatch:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(n, m, dtype=dtype)
    mask[0, -2:] = 0  # padding must not count
    return TaskBatch(
        obs=torch.randn(n, m, O, generator=g, dtype=dtype),
        actions=torch.randn(n, m, A, generator=g, dtype=dtype),
        advantages=torch.randn(n, m, generator=g, dtype=dtype),
        mask=mask,
        returns=torch.zeros(n, 1, dtype=dtype),
        success=torch.zeros(n, 1, dtype=dtype),
    )


def _post_loss(pol: GaussianMLPPolicy, adapted: dict[str, torch.Tensor], post: TaskBatch) -> torch.Tensor:
    """Mean over tasks of the REINFORCE loss of the post-adaptation batch."""
    return inner_losses(pol, adapted, post).mean()


def _objective(pol: GaussianMLPPolicy, flat_theta: torch.Tensor, pre: TaskBatch, post: TaskBatch, lr: float) -> float:
    names = [k for k, _ in pol.named_parameters()]
    shapes = [p.shape for _, p in pol.named_parameters()]
    params, offset = {}, 0
    for k, s in zip(names, shapes, strict=True):
        n = math.prod(s)
        params[k] = flat_theta[offset : offset + n].view(s).clone().requires_grad_(True)
        offset += n
    adapted = adapt_params(pol, params, [pre], lr, create_graph=False)
    return float(_post_loss(pol, detach_params(adapted), post))


def _meta_grad(pol: GaussianMLPPolicy, pre: TaskBatch, post: TaskBatch, lr: float, first_order: bool) -> torch.Tensor:
    params = pol.params()
    adapted = adapt_params(pol, params, [pre], lr, create_graph=not first_order)
    grads = torch.autograd.grad(_post_loss(pol, adapted, post), list(params.values()))
    return torch.cat([g.reshape(-1) for g in grads])


def test_meta_gradient_through_one_inner_step_matches_finite_differences() -> None:
    pol = _policy()
    pre, post, lr = _batch(1), _batch(2), 0.5
    analytic = _meta_grad(pol, pre, post, lr, first_order=False)
    theta = torch.cat([p.detach().reshape(-1) for p in pol.parameters()])
    eps = 1e-6
    numeric = torch.zeros_like(theta)
    for i in range(theta.numel()):
        e = torch.zeros_like(theta)
        e[i] = eps
        numeric[i] = (_objective(pol, theta + e, pre, post, lr) - _objective(pol, theta - e, pre, post, lr)) / (2 * eps)
    torch.testing.assert_close(analytic, numeric, rtol=1e-5, atol=1e-7)


def test_second_order_differs_from_first_order_which_is_the_gradient_at_the_adapted_weights() -> None:
    pol = _policy()
    pre, post, lr = _batch(1), _batch(2), 0.5
    second = _meta_grad(pol, pre, post, lr, first_order=False)
    first = _meta_grad(pol, pre, post, lr, first_order=True)
    # first order: d/dθ L(θ') with dθ'/dθ = I, i.e. the mean over tasks of ∇L_i at θ'_i
    adapted = detach_params(adapt_params(pol, pol.params(), [pre], lr, create_graph=False))
    expected = torch.zeros_like(first)
    for i in range(N):
        p_i = {k: v[i].clone().requires_grad_(True) for k, v in adapted.items()}
        loss_i = inner_losses(pol, {k: v.unsqueeze(0) for k, v in p_i.items()}, _slice(post, i)).sum() / N
        expected += torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss_i, list(p_i.values()))])
    torch.testing.assert_close(first, expected)
    # the Hessian term lr * H_inner * g is not small here, so the two must differ clearly
    assert (second - first).norm() > 1e-3 * first.norm()


def _slice(batch: TaskBatch, i: int) -> TaskBatch:
    return TaskBatch(
        obs=batch.obs[i : i + 1],
        actions=batch.actions[i : i + 1],
        advantages=batch.advantages[i : i + 1],
        mask=batch.mask[i : i + 1],
        returns=batch.returns[i : i + 1],
        success=batch.success[i : i + 1],
    )


def test_meta_gradient_reaches_every_initial_parameter() -> None:
    pol = _policy(torch.float32, hidden=(8, 8))
    params = pol.params()
    adapted = adapt_params(pol, params, [_batch(3, torch.float32), _batch(4, torch.float32)], 0.1, create_graph=True)
    _post_loss(pol, adapted, _batch(5, torch.float32)).backward()
    for name, p in pol.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_inner_step_does_not_touch_the_module_parameters() -> None:
    pol = _policy()
    before = {k: v.detach().clone() for k, v in pol.named_parameters()}
    adapted = adapt_params(pol, pol.params(), [_batch(1)], 0.5, create_graph=True)
    for k, v in pol.named_parameters():
        assert torch.equal(v.detach(), before[k])
        assert not torch.allclose(adapted[k][0], v)  # the adapted weights did move


def test_linear_baseline_fits_a_known_linear_return_exactly() -> None:
    g = torch.Generator().manual_seed(0)
    n, e, h, o = 2, 3, 20, 4
    obs = torch.randn(n, e, h, o, generator=g)
    valid = torch.ones(n, e, h, dtype=torch.bool)
    valid[1, 2, 15:] = False  # a shorter episode
    feats = baseline_features(obs, valid)
    assert feats.shape == (n, e, h, 2 * o + 4)
    w = torch.randn(n, 2 * o + 4, generator=g, dtype=torch.float64)
    returns = torch.einsum("nehd,nd->neh", feats.double(), w).float()
    pred = fit_linear_baseline(feats, returns, valid, reg=1e-10)
    torch.testing.assert_close(pred, returns * valid, rtol=1e-4, atol=1e-4)
    assert (pred[~valid] == 0).all()


def test_discounted_returns_and_gae_with_lambda_one() -> None:
    rewards = torch.tensor([[1.0, 2.0, 3.0, 9.0]])
    valid = torch.tensor([[True, True, True, False]])
    ret = discounted_returns(rewards, valid, 0.5)
    torch.testing.assert_close(ret, torch.tensor([[1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3.0, 0.0]]))
    values = torch.tensor([[0.3, -1.0, 2.0, 0.0]])
    torch.testing.assert_close(gae(rewards, values, valid, 0.5, 1.0), (ret - values) * valid)
    # λ = 0: one-step TD errors
    td = torch.tensor([[1 + 0.5 * -1.0 - 0.3, 2 + 0.5 * 2.0 + 1.0, 3.0 - 2.0, 0.0]])
    torch.testing.assert_close(gae(rewards, values, valid, 0.5, 0.0), td)


def test_conjugate_gradient_solves_a_positive_definite_system() -> None:
    g = torch.Generator().manual_seed(0)
    q = torch.randn(6, 6, generator=g, dtype=torch.float64)
    h = q @ q.T + 6 * torch.eye(6, dtype=torch.float64)
    b = torch.randn(6, generator=g, dtype=torch.float64)
    x = conjugate_gradient(lambda v: h @ v, b, iters=20)
    torch.testing.assert_close(h @ x, b)


def test_trpo_step_respects_the_kl_limit_and_does_not_lower_the_surrogate() -> None:
    pol = _policy(torch.float32, hidden=(16, 16))
    pre, post = _batch(1, torch.float32, m=40), _batch(2, torch.float32, m=40)
    cfg = MAMLConfig(hidden=(16, 16), inner_lr=0.1, max_kl=0.01)
    before = {k: v.detach().clone() for k, v in pol.named_parameters()}
    old_adapted = detach_params(adapt_params(pol, pol.params(), [pre], cfg.inner_lr, create_graph=False))
    with torch.no_grad():
        old = pol.call_stacked(old_adapted, post.obs)
    surr_before, _ = surrogate_loss(pol, old_adapted, post, old)
    info = trpo_step(pol, [pre], post, cfg)
    assert info["trpo/accepted"] == 1.0
    new_adapted = detach_params(adapt_params(pol, pol.params(), [pre], cfg.inner_lr, create_graph=False))
    with torch.no_grad():
        surr_after, kl = surrogate_loss(pol, new_adapted, post, old)
    assert float(kl) <= cfg.max_kl * (1 + 1e-4)
    assert float(kl) > 0.05 * cfg.max_kl  # the step used a fair part of the trust region
    assert float(surr_after) < float(surr_before)  # loss = −surrogate went down
    assert info["losses/surrogate_after"] == pytest.approx(float(surr_after), rel=1e-4)
    assert any(not torch.equal(v.detach(), before[k]) for k, v in pol.named_parameters())


def _trpo_from(pol: GaussianMLPPolicy, pre: TaskBatch, post: TaskBatch, cfg: MAMLConfig, tasks: Any) -> Any:
    """(θ step, info) of one TRPO step from ``pol``'s weights, on a copy."""
    pol = copy.deepcopy(pol)
    theta0 = flat([p.detach() for p in pol.parameters()]).clone()
    info = trpo_step(pol, [pre], post, cfg, tasks)
    return flat([p.detach() for p in pol.parameters()]) - theta0, info, pol


def test_trpo_curvature_from_a_subset_of_tasks() -> None:
    """``hvp_subsample``: the conjugate-gradient curvature from some tasks' KL.  All tasks named explicitly give
    the full step; a subset gives a different step that still keeps every task's KL within the limit (the line
    search checks them all) and lowers the surrogate; the subset is drawn reproducibly."""
    n = 6
    pol = _policy(torch.float64, hidden=(16, 16))
    pre, post = _batch(1, torch.float64, n=n, m=40), _batch(2, torch.float64, n=n, m=40)
    cfg = MAMLConfig(hidden=(16, 16), inner_lr=0.1, max_kl=0.01)
    full, info_full, _ = _trpo_from(pol, pre, post, cfg, None)
    every, _, _ = _trpo_from(pol, pre, post, cfg, torch.arange(n))
    assert torch.allclose(every, full, rtol=1e-8, atol=1e-10)
    part = hvp_tasks(n, 0.5, torch.Generator().manual_seed(0))
    assert part is not None and part.tolist() == sorted(set(part.tolist())) and len(part) == 3
    assert torch.equal(part, hvp_tasks(n, 0.5, torch.Generator().manual_seed(0)))  # type: ignore[arg-type]
    sub, info, moved = _trpo_from(pol, pre, post, cfg, part)
    assert info["trpo/accepted"] == 1.0 and info_full["trpo/accepted"] == 1.0
    assert not torch.allclose(sub, full)  # the curvature did change
    assert float(sub @ full) > 0  # and the step still points the full step's way
    adapted_old = detach_params(adapt_params(pol, pol.params(), [pre], cfg.inner_lr, create_graph=False))
    with torch.no_grad():
        old = pol.call_stacked(adapted_old, post.obs)
        adapted_new = detach_params(adapt_params(moved, moved.params(), [pre], cfg.inner_lr, create_graph=False))
        surr_after, kl = surrogate_loss(moved, adapted_new, post, old)
        surr_before, _ = surrogate_loss(pol, adapted_old, post, old)
    assert float(kl) <= cfg.max_kl * (1 + 1e-6)  # over all tasks, not only the curvature's
    assert float(surr_after) < float(surr_before)


def test_hvp_tasks_keeps_at_least_one_task_and_all_at_fraction_one() -> None:
    g = torch.Generator().manual_seed(0)
    assert hvp_tasks(20, 1.0, g) is None
    assert hvp_tasks(20, 0.25, g).shape == (5,)  # type: ignore[union-attr]
    assert hvp_tasks(3, 0.01, g).shape == (1,)  # type: ignore[union-attr]


def test_trpo_rejects_every_step_when_no_direction_improves() -> None:
    pol = _policy(torch.float32, hidden=(8,))
    pre, post = _batch(1, torch.float32), _batch(2, torch.float32)
    post.advantages.zero_()  # surrogate is identically zero: no step can lower the loss
    before = {k: v.detach().clone() for k, v in pol.named_parameters()}
    info = trpo_step(pol, [pre], post, MAMLConfig(hidden=(8,)))
    assert info["trpo/accepted"] == 0.0
    for k, v in pol.named_parameters():
        assert torch.equal(v.detach(), before[k]), k


def test_gaussian_kl_is_zero_for_equal_and_positive_otherwise() -> None:
    m, s = torch.randn(5, 3), torch.randn(5, 3) * 0.1
    torch.testing.assert_close(gaussian_kl(m, s, m, s), torch.zeros(5))
    assert (gaussian_kl(m, s, m + 0.5, s - 0.2) > 0).all()


def _step(obs: torch.Tensor, task: torch.Tensor, deterministic: bool = False) -> StepBatch:
    r = obs.shape[0]
    g = torch.Generator().manual_seed(7)
    return StepBatch(
        obs=obs,
        prev_action=torch.zeros(r, A),
        prev_reward=torch.zeros(r),
        prev_done=torch.zeros(r, dtype=torch.bool),
        episode_start=torch.zeros(r, dtype=torch.bool),
        trial_start=torch.zeros(r, dtype=torch.bool),
        slot=torch.arange(r),
        task=task,
        noise=torch.randn(r, A, generator=g),
        deterministic=deterministic,
    )


@pytest.mark.parametrize("task", [[2, 0, 2, 2, 4], [4], [0, 1, 2, 3, 4, 0, 1], [3, 3, 3]])
def test_vmapped_per_task_call_equals_the_loop_over_tasks(task: list[int]) -> None:
    """Rows of a task may be absent, several, or in any order."""
    pol = _policy(torch.float32, hidden=(16, 16))
    n_tasks = 5
    stacked = {k: v.detach() + 0.1 * torch.randn(n_tasks, *v.shape) for k, v in pol.named_parameters()}
    obs = torch.randn(len(task), O)
    step = _step(obs, torch.tensor(task))
    a1, _, e1 = TaskPolicy(pol, stacked).act(step, None)
    a2, _, e2 = LoopTaskPolicy(pol, stacked).act(step, None)
    torch.testing.assert_close(a1, a2)
    torch.testing.assert_close(e1["log_prob"], e2["log_prob"])
    # and each row equals its own task's weights applied alone
    for r, i in enumerate(task):
        mean, _ = pol.call({k: v[i] for k, v in stacked.items()}, obs[r : r + 1])
        da, _, _ = TaskPolicy(pol, stacked).act(_step(obs, torch.tensor(task), deterministic=True), None)
        torch.testing.assert_close(da[r], (pol.action_bias + pol.action_scale * mean)[0])


def test_shared_weights_policy_uses_theta_and_the_engine_noise() -> None:
    pol = _policy(torch.float32, hidden=(8,))
    obs = torch.randn(4, O)
    step = _step(obs, torch.tensor([0, 1, 1, 3]))
    action, state, extras = TaskPolicy(pol).act(step, None)
    mean, log_std = pol(obs)
    torch.testing.assert_close(action, pol.action_bias + pol.action_scale * (mean + log_std.exp() * step.noise))
    torch.testing.assert_close(extras["log_prob"], gaussian_log_prob(mean + log_std.exp() * step.noise, mean, log_std))
    assert state is None


def test_rows_of_a_task_without_weights_are_refused() -> None:
    pol = _policy(torch.float32, hidden=(8,))
    stacked = stack_params(detach_params(pol.params()), 2)
    with pytest.raises(ValueError, match="row of task 2 but only 2 tasks have adapted weights"):
        TaskPolicy(pol, stacked).act(_step(torch.randn(3, O), torch.tensor([0, 2, 1])), None)


def test_group_rows_ranks_rows_within_their_task() -> None:
    rank, width = group_rows(torch.tensor([2, 0, 2, 2, 0]), 3)
    assert rank.tolist() == [0, 0, 1, 2, 1] and width == 3


def test_reptile_outer_step_moves_theta_toward_the_mean_adapted_weights() -> None:
    pol = _policy(torch.float32, hidden=(8,))
    theta = {k: v.detach().clone() for k, v in pol.named_parameters()}
    adapted = {k: v.unsqueeze(0) + torch.randn(4, *v.shape) for k, v in theta.items()}
    reptile_outer_step(pol, adapted, 0.25)
    for k, v in pol.named_parameters():
        torch.testing.assert_close(v.detach(), theta[k] + 0.25 * (adapted[k].mean(0) - theta[k]))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"inner_lr": 0.0}, "inner_lr must be a positive finite number, got 0.0"),
        ({"inner_lr": float("nan")}, "inner_lr must be a positive finite number"),
        ({"inner_steps": 0}, "inner_steps must be a positive integer, got 0"),
        ({"max_kl": -0.01}, "max_kl must be a positive finite number, got -0.01"),
        ({"hidden": ()}, "hidden must be a non-empty tuple of positive widths"),
        ({"gamma": 1.5}, r"gamma must be in \[0, 1\], got 1.5"),
        ({"ls_backtrack": 1.0}, r"ls_backtrack must be in \(0, 1\)"),
        ({"hvp_subsample": 0.0}, r"hvp_subsample must be a fraction in \(0, 1\], got 0.0"),
        ({"hvp_subsample": 1.5}, r"hvp_subsample must be a fraction in \(0, 1\], got 1.5"),
        ({"hvp_subsample": True}, r"hvp_subsample must be a fraction in \(0, 1\], got True"),
    ],
)
def test_bad_hyperparameters_are_refused_with_the_value(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MAMLConfig(**kwargs)  # type: ignore[arg-type]


def test_variant_defaults() -> None:
    assert FOMAMLConfig().first_order and not MAMLConfig().first_order
    assert ReptileConfig().outer == "reptile" and ReptileConfig().inner_steps > 1
    with pytest.raises(ValueError, match="reptile's outer_lr"):
        ReptileConfig(outer_lr=2.0)


# -- the agent through the rollout engine --------------------------------------------------------


@pytest.fixture(scope="module")
def nav_engine():  # type: ignore[no-untyped-def]
    from metarl.envs import make_distribution
    from metarl.rollout import RolloutEngine

    dist = make_distribution("point-nav", seed=0)
    with RolloutEngine(dist, num_workers=1, slots_per_family=12, seed=0, backend="inline") as engine:
        yield dist, engine


@pytest.mark.parametrize("cls", [MAMLConfig, FOMAMLConfig, ReptileConfig])
def test_agent_meta_train_step_and_meta_test_through_the_engine(nav_engine, cls: type[MAMLConfig]) -> None:  # type: ignore[no-untyped-def]
    dist, engine = nav_engine
    cfg = cls(hidden=(16,), inner_steps=2) if cls is ReptileConfig else cls(hidden=(16,))
    agent = MAMLAgent(
        2, 2, cfg, episodes_per_task=3, action_low=dist.action_space.low, action_high=dist.action_space.high
    )
    tasks = dist.sample(4, "train", rng=np.random.default_rng(0))
    before = {k: v.detach().clone() for k, v in agent.policy.named_parameters()}
    metrics = agent.meta_train_step(engine, tasks)
    phases = cfg.inner_steps + (0 if cfg.outer == "reptile" else 1)
    assert 0 < metrics["env_steps"] <= phases * 4 * 3 * 100
    assert all(math.isfinite(v) for v in metrics.values())
    assert any(not torch.equal(v.detach(), before[k]) for k, v in agent.policy.named_parameters())
    test_tasks = dist.sample(3, "test", rng=np.random.default_rng(1))
    out = agent.meta_test(engine, test_tasks, adaptation_episodes=2, eval_episodes=2, deterministic=True)
    assert out.unit == "gradient_steps"
    assert out.curve_return.shape == (3, cfg.steps_at_test + 1) and out.eval_return.shape == (3, 2)
    torch.testing.assert_close(out.curve_return[:, -1], out.eval_return.mean(1))
    assert [t.id for t in out.tasks] == [t.id for t in test_tasks]


def test_meta_test_adapts_many_tasks_in_bounded_chunks(nav_engine, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """All 250 held-out ML10 goals in one inner step outgrew 24 GiB: a meta-test adapts at most
    ``META_TEST_EPISODES_PER_CALL`` adaptation episodes at once, returns every task's rows in order, and gives what
    one call would."""
    import metarl.agents.maml.agent as maml_agent

    dist, engine = nav_engine
    agent = MAMLAgent(2, 2, MAMLConfig(hidden=(16,)), episodes_per_task=2,
                      action_low=dist.action_space.low, action_high=dist.action_space.high)  # fmt: skip
    seen: list[tuple[int, int]] = []
    collect = agent._collect

    def spy(engine, tasks, params, episodes, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append((len(tasks), episodes))
        return collect(engine, tasks, params, episodes, *args, **kwargs)

    tasks = dist.sample(5, "test", rng=np.random.default_rng(4))
    before = engine.state_dict()
    whole = agent.meta_test(engine, tasks, adaptation_episodes=2, eval_episodes=3, deterministic=True)
    after = engine.state_dict()
    engine.load_state_dict(before)
    monkeypatch.setattr(agent, "_collect", spy)
    monkeypatch.setattr(maml_agent, "META_TEST_EPISODES_PER_CALL", 4)  # 2 adaptation episodes: 2 tasks a chunk
    out = agent.meta_test(engine, tasks, adaptation_episodes=2, eval_episodes=3, deterministic=True)
    # each chunk's episodes keep their seeds and noise (the whole call's collect indices and task positions), and
    # tasks adapt independently: the chunks give the one call's figures (up to the rounding of a batched product
    # over fewer tasks), and leave the engine as it did
    for name in ("curve_return", "eval_return"):
        torch.testing.assert_close(getattr(out, name), getattr(whole, name), rtol=1e-4, atol=1e-4)
    assert torch.equal(out.eval_success, whole.eval_success) and torch.equal(out.curve_success, whole.curve_success)
    assert engine.state_dict() == after
    assert [t.id for t in out.tasks] == [t.id for t in tasks]
    assert out.curve_success.shape == (5, 2) and out.eval_success.shape == (5, 3) and out.eval_return.shape == (5, 3)
    torch.testing.assert_close(out.curve_return[:, -1], out.eval_return.mean(1))
    # per chunk of 2, 2 and 1 tasks: evaluate (3 episodes), adapt (2), evaluate after the step (3)
    assert seen == [(2, 3), (2, 2), (2, 3)] * 2 + [(1, 3), (1, 2), (1, 3)]
    assert torch.isfinite(out.curve_return).all()


def test_adapt_returns_per_task_weights_in_the_task_order(nav_engine) -> None:  # type: ignore[no-untyped-def]
    dist, engine = nav_engine
    agent = MAMLAgent(2, 2, MAMLConfig(hidden=(16,)), episodes_per_task=2,
                      action_low=dist.action_space.low, action_high=dist.action_space.high)  # fmt: skip
    tasks = dist.sample(3, "test", rng=np.random.default_rng(2))
    adapted, batches = agent.adapt_with_batches(engine, tasks, episodes=2)
    assert adapted.params is not None and adapted.num_tasks == 3 and len(batches) == 1
    again = adapt_params(agent.policy, agent.policy.params(), batches, 0.1, create_graph=False)
    for k, v in adapted.params.items():
        torch.testing.assert_close(v, again[k].detach())
    traj = engine.collect(adapted, tasks, episodes_per_task=1, deterministic=True)
    assert traj.obs.shape[:2] == (3, 1) and torch.isfinite(traj.actions).all()


def test_ppo_outer_loop_changes_theta_and_checkpoints_its_optimizer(nav_engine) -> None:  # type: ignore[no-untyped-def]
    from metarl.agents.maml import MAMLPPOConfig

    dist, engine = nav_engine
    agent = MAMLAgent(2, 2, MAMLPPOConfig(hidden=(16,)), name="maml-ppo", episodes_per_task=2,
                      action_low=dist.action_space.low, action_high=dist.action_space.high)  # fmt: skip
    metrics = agent.meta_train_step(engine, dist.sample(3, "train", rng=np.random.default_rng(3)))
    assert metrics["losses/surrogate_after"] < metrics["losses/surrogate_before"]
    state = agent.state_dict()
    assert "optimizer" in state and state["optimizer"]["state"]
    clone = MAMLAgent(2, 2, MAMLPPOConfig(hidden=(16,)), name="maml-ppo", seed=5,
                      action_low=dist.action_space.low, action_high=dist.action_space.high)  # fmt: skip
    clone.load_state_dict(state)
    for (k, v), (_, w) in zip(agent.policy.state_dict().items(), clone.policy.state_dict().items(), strict=True):
        assert torch.equal(v, w), k


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_vmapped_call_on_cuda_equals_the_cpu_loop() -> None:
    pol = _policy(torch.float32, hidden=(32, 32))
    stacked = {k: v.detach() + 0.1 * torch.randn(6, *v.shape) for k, v in pol.named_parameters()}
    task = torch.tensor([5, 0, 5, 2, 2, 2, 4])
    obs = torch.randn(task.numel(), O)
    ref, _, _ = LoopTaskPolicy(pol, stacked).act(_step(obs, task), None)
    cuda = torch.device("cuda")
    pol_cuda = pol.to(cuda)
    step = _step(obs.to(cuda), task.to(cuda))
    step.noise = step.noise.to(cuda)
    for name in ("prev_action", "prev_reward", "prev_done", "episode_start", "trial_start", "slot"):
        setattr(step, name, getattr(step, name).to(cuda))
    out, _, _ = TaskPolicy(pol_cuda, {k: v.to(cuda) for k, v in stacked.items()}).act(step, None)
    torch.testing.assert_close(out.cpu(), ref, rtol=1e-4, atol=1e-5)
