"""The core knows agents only through :class:`metarl.agent.MetaLearner` (issue: a core that does not know its
agents): both agents implement it, no core module names an agent, evaluation never imports the training loop,
a made-up agent trains, resumes and evaluates through the public API with nothing but a registry entry, and
each agent's ``adapt`` gives the policy its meta-test evaluates."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

import metarl
import metarl.agents
from metarl.agent import MetaLearner
from metarl.config import TrainConfig
from metarl.envs import make_distribution
from metarl.errors import UserError
from metarl.evaluation.runner import EvalSettings, evaluate_run
from metarl.rollout import RolloutEngine
from metarl.run import build_agent

CORE = Path(metarl.__file__).parent


def _core_modules() -> list[Path]:
    return sorted(p for p in CORE.rglob("*.py") if p.is_file())


def test_no_core_module_names_an_agent() -> None:
    """No agent name and no agent module in the core; the registry (``metarl.agents`` and its named configs,
    ``metarl.agents.configs``) is how the core finds agents.  The one mention allowed: TrainConfig's default."""
    names = set(metarl.agents.AGENTS)
    registry = {"metarl.agents", "metarl.agents.configs"}
    found = []
    for path in _core_modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in names:
                found.append(f"{path.relative_to(CORE)} names {node.value!r}")
            module = (node.module or "") if isinstance(node, ast.ImportFrom) else ""
            if module.startswith("metarl.agents") and module not in registry:
                found.append(f"{path.relative_to(CORE)} imports {node.module}")
    assert found == ["config.py names 'rl2'"], found


def test_evaluation_never_imports_the_training_loop() -> None:
    for path in sorted((CORE / "evaluation").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert node.module != "metarl.training", f"{path.name}:{node.lineno} imports metarl.training"


@pytest.mark.parametrize("agent_name", ["rl2", "maml-trpo"])
def test_agents_implement_the_protocol(agent_name: str) -> None:
    dist = make_distribution("point-nav", seed=0)
    cfg = TrainConfig(agent=agent_name, benchmark="point-nav", meta_batch=2, episodes_per_task=10)
    agent = build_agent(cfg, metarl.agents.agent_config_class(agent_name)(), dist, torch.device("cpu"))
    assert isinstance(agent, MetaLearner)
    assert agent.adaptation_unit in ("episodes", "gradient_steps") and agent.env_steps == 0
    assert agent.eval_slots(10, 3) >= 1 and agent.metaworld_adaptation_steps >= 1


def test_a_new_agent_needs_only_a_registry_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import toy_agent

    monkeypatch.setitem(metarl.agents.AGENTS, "toy", "toy_agent")
    monkeypatch.setitem(metarl.agents.CONFIG_CLASS, "toy", "ToyConfig")
    cfg = TrainConfig(agent="toy", benchmark="point-nav", meta_batch=4, episodes_per_task=2, iterations=3,
                      backend="inline", eval_every=2, eval_tasks=4, adaptation_episodes=1, eval_episodes=1,
                      checkpoint_every=1)  # fmt: skip
    run = metarl.train(cfg, toy_agent.ToyConfig(), out=tmp_path / "toy", progress=False)
    agent = metarl.load(run)
    assert isinstance(agent, toy_agent.ToyAgent) and isinstance(agent, MetaLearner)
    assert agent.env_steps == 3 * 4 * 2 * 100  # 3 iterations of 4 tasks x 2 point-nav episodes of 100 steps
    assert float(agent.policy.mean.abs().sum()) > 0  # it trained
    assert (run / "eval" / "iter-000002.json").is_file()  # the periodic meta-test ran
    metarl.resume(run, iterations=4, progress=False)
    assert metarl.load(run).env_steps == 4 * 4 * 2 * 100
    result = evaluate_run(run, EvalSettings(tasks_per_family=5, deterministic=True))
    assert result.agent == "toy" and result.env_steps == 4 * 4 * 2 * 100
    assert len(result.per_task) == 5 and np.isfinite(result.return_mean)


def test_rl2_adapt_gives_the_policy_its_meta_test_evaluates() -> None:
    """Same engine seed, same adaptation noise streams: the adapted policy's mean-action episodes are the
    meta-test's evaluation episodes, step for step."""
    torch.set_num_threads(1)
    dist = make_distribution("point-nav", seed=0)
    cfg = TrainConfig(agent="rl2", benchmark="point-nav", meta_batch=3, episodes_per_task=4)
    agent_cfg = metarl.agents.agent_config_class("rl2")(episodes_per_trial=4)
    agent = build_agent(cfg, agent_cfg, dist, torch.device("cpu"))
    tasks = dist.sample(3, "test", rng=np.random.default_rng(0))
    with RolloutEngine(dist, num_workers=1, seed=5, backend="inline", slots_per_family=3) as engine:
        ref = agent.meta_test(engine, tasks, 2, 2, True)
    with RolloutEngine(dist, num_workers=1, seed=5, backend="inline", slots_per_family=3) as engine:
        adapted = agent.adapt(engine, tasks, 2)
        traj = engine.collect(adapted, tasks, episodes_per_task=2, deterministic=True)
        fresh = engine.collect(agent.adapt(engine, tasks, 0), tasks, episodes_per_task=1, deterministic=True)
    torch.testing.assert_close(traj.episode_returns, ref.eval_return)
    # without adaptation the hidden state starts from zero: a different behaviour from the adapted one
    assert not torch.allclose(fresh.episode_returns[:, 0], traj.episode_returns[:, 0])


def test_maml_adapt_takes_the_test_time_inner_steps() -> None:
    torch.set_num_threads(1)
    dist = make_distribution("point-nav", seed=0)
    cfg = TrainConfig(agent="maml-trpo", benchmark="point-nav", meta_batch=2, episodes_per_task=2)
    agent = build_agent(cfg, metarl.agents.agent_config_class("maml-trpo")(hidden=(16,)), dist, torch.device("cpu"))
    tasks = dist.sample(2, "test", rng=np.random.default_rng(0))
    with RolloutEngine(dist, num_workers=1, seed=0, backend="inline") as engine:
        adapted = agent.adapt(engine, tasks, 2)
        with pytest.raises(ValueError, match="adaptation_episodes must be a positive integer, got 0"):
            agent.adapt(engine, tasks, 0)
    assert adapted.params is not None and adapted.num_tasks == 2
    moved = [not torch.equal(v[0], agent.policy.get_parameter(k).detach()) for k, v in adapted.params.items()]
    assert any(moved)


def test_rl2_adapt_refuses_an_engine_that_runs_the_policy_remotely() -> None:
    class RemoteEngine:
        policy_runs_remotely = True

        def collect(self, *args: object, **kwargs: object) -> None:
            raise AssertionError("adapt() must refuse before collecting")

    dist = make_distribution("point-nav", seed=0)
    cfg = TrainConfig(agent="rl2", benchmark="point-nav", meta_batch=2, episodes_per_task=10)
    agent = build_agent(cfg, metarl.agents.agent_config_class("rl2")(), dist, torch.device("cpu"))
    with pytest.raises(UserError, match="use a process or inline engine"):
        agent.adapt(RemoteEngine(), dist.tasks("test")[:2], 2)
