"""Cross-check against Meta-World's own evaluator, ``metaworld.evaluation.metalearning_evaluation``.

:func:`cross_check` scores one agent both ways on the same held-out goals, one round at a time; a round is one
goal of each held-out class (ML1: one goal; ML10: five, one per test class):

* **official**: Meta-World's test vector env with one env per class (so each task name has exactly one env
  instance), the agent's ``MetaLearningAgent`` adapter, ``metalearning_evaluation`` with
  ``num_evals=1``; the goals it sampled are read back from the envs (``tasks[current_task_idx]``);
* **metarl**: ``agent.meta_test`` on those same goals through the rollout engine.

The RL² adapter sees what metaworld-algorithms' RL² sees: the cross-check's envs are Meta-World's
``recurrent_info_in_obs=True`` envs (observation ⊕ previous action ⊕ reward / 10 ⊕ done), and the
adapter reads the previous action and reward from that tail, so the agent gets its reward in
evaluation episodes too, although the evaluator never calls ``step()`` there (the reference's test
envs do the same).  metarl's meta-test feeds the same inputs from the engine, bit for bit: the tail holds
the reward itself (:data:`OBS_REWARD_DIVISOR`) and the adapter sends float32 actions.  Bit-equal inputs
matter because a trained agent turns an ulp of difference into another trajectory within tens of steps.

By default (``exact=True``) both sides also take their adaptation episodes with the mean action, so
with one env per task name they count exactly ``eval_episodes`` evaluation episodes on the same
goals after the same adaptation: the same success in every round, and the same returns wherever no
episode ended early.  ``exact=False`` runs the
reference's protocol on both sides (adaptation sampled, evaluation with the mean): the adapter and
the engine draw their own noise, so the two then agree only in distribution, over many goals.  A MAML
agent's adaptation episodes are always sampled (a policy gradient needs exploration), so for MAML
the two sides agree only in distribution; the official side takes the agent's test-time inner steps
(``adaptation_steps = config.steps_at_test``), one adaptation round of ``adaptation_episodes`` each.

A distribution with ``success_reward`` (``metarl train --env-success-reward``) pays it in its envs; the
cross-check puts :class:`SuccessReward` around each of Meta-World's envs, beneath its wrappers, so the
evaluator's envs pay it too and the agent sees the same reward input on both sides.  Meta-World's
success counting is untouched: the official figure is still Meta-World's success.

With several env instances per task name (ML1 with ``meta_batch_size > 1``) the official evaluator
stops counting after the first ``eval_episodes`` episodes *of the task name*, whichever envs
finished them — envs that succeed early (and so end their episodes early) are over-represented.
:func:`official_counting` reproduces that rule so the report can show the effect.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from metarl.errors import UserError
from metarl.tasks import Task, TaskDistribution


@dataclass
class CrossCheckRound:
    """One round: a goal per held-out class (ML1: one goal), both sides' mean success and return over the round's
    evaluation episodes, and success per class (the official evaluator's own per-class figures)."""

    task_id: str  # the round's goals, comma-separated
    official_success: float
    metarl_success: float
    official_return: float
    metarl_return: float
    official_per_family: dict[str, float] = field(default_factory=dict)
    metarl_per_family: dict[str, float] = field(default_factory=dict)


@dataclass
class CrossCheck:
    """Per-round figures and their means."""

    rounds: list[CrossCheckRound] = field(default_factory=list)

    @property
    def official_success(self) -> float:
        return float(np.mean([r.official_success for r in self.rounds]))

    @property
    def metarl_success(self) -> float:
        return float(np.mean([r.metarl_success for r in self.rounds]))

    @property
    def max_success_gap(self) -> float:
        """The largest gap in success of one goal (one class of one round) between the two sides."""
        gaps = [abs(r.official_per_family[f] - s) for r in self.rounds for f, s in r.metarl_per_family.items()]
        return float(max(gaps))


def official_counting(ended: list[tuple[int, bool]], num_episodes: int) -> float:
    """Meta-World's success rate for one task name from ``(env index, success)`` in the order episodes ended.

    Successes of the first ``num_episodes`` ended episodes are counted, whichever env ended them,
    and divided by ``num_episodes`` (``metaworld.evaluation.evaluation``).
    """
    return sum(int(s) for _, s in ended[:num_episodes]) / num_episodes


def per_env_counting(ended: list[tuple[int, bool]], num_episodes: int) -> float:
    """metarl's rule: the first ``num_episodes`` episodes of *each* env, averaged over envs."""
    envs = sorted({i for i, _ in ended})
    rates = []
    for env in envs:
        mine = [s for i, s in ended if i == env][:num_episodes]
        if len(mine) < num_episodes:
            raise ValueError(f"env {env} ended {len(mine)} episodes, fewer than {num_episodes}")
        rates.append(sum(mine) / num_episodes)
    return float(np.mean(rates))


class SuccessReward(gym.Wrapper):
    """Adds ``success_reward`` to the reward of every step whose ``info["success"]`` is set, as
    ``MetaWorldDistribution(success_reward=...)``'s envs do; Meta-World's success counting is untouched."""

    def __init__(self, env: Any, success_reward: float) -> None:
        super().__init__(env)
        self.success_reward = float(success_reward)

    def step(self, action: Any) -> Any:
        obs, reward, terminated, truncated, info = self.env.step(action)
        shaped = float(reward) + self.success_reward * float(info.get("success", 0.0))
        return obs, shaped, terminated, truncated, info


def pay_success_reward(envs: Any, success_reward: float) -> None:
    """Put :class:`SuccessReward` directly around each Meta-World env of a sync vector env from ``gym.make_vec``,
    beneath all of Meta-World's wrappers, so its ``recurrent_info_in_obs`` wrapper shows the agent the shaped
    reward and its evaluator counts success as ever."""
    for env in envs.envs:
        inner = env
        while isinstance(inner.env, gym.Wrapper):
            inner = inner.env
        inner.env = SuccessReward(inner.env, success_reward)


OBS_REWARD_DIVISOR = 1.0
"""What the reward in :func:`official_test_envs`' observation tail is divided by: built with
``normalize_reward_in_recurrent_info=False``, the tail holds the reward itself, so the adapter reads its float32
bits exactly (Meta-World's default, reward / 10 stored in float32, comes back off by an ulp now and then)."""

MULTI_CLASS = ("ML10", "ML25", "ML45")
"""The multi-class benchmarks the cross-check runs on, beside every ML1 distribution."""


def official_benchmark(dist: TaskDistribution) -> str:
    """Meta-World's name of ``dist``'s benchmark (``ML1`` or one of :data:`MULTI_CLASS`); refuses anything else."""
    name = getattr(dist, "name", "")
    if name.startswith("ML1-") and len(dist.families) == 1:
        return "ML1"
    if name in MULTI_CLASS:
        return name
    raise UserError(
        f"the cross-check runs on Meta-World's ML1 distributions and on {', '.join(MULTI_CLASS)}, got {name!r}"
    )


def official_test_envs(agent: Any, dist: TaskDistribution, *, envs_per_name: int, seed: int) -> Any:
    """Meta-World's own test vector env (sync; ``ML1-test`` for ``dist``'s one family, else ``ML10-test`` etc.
    with ``envs_per_name`` envs per held-out class), as the agent's adapter needs it (``recurrent_info_in_obs``
    where the agent reads its reward from the observation) and paying ``dist``'s ``success_reward`` where it has
    one.  Both sides build the benchmark with the same seed, so every goal the evaluator draws is one of
    ``dist``'s test tasks."""
    benchmark = official_benchmark(dist)
    families: dict[str, Any] = {"env_name": next(iter(dist.families))} if benchmark == "ML1" else {}
    classes = 1 if benchmark == "ML1" else len({t.family for t in dist.tasks("test")})
    envs: Any = gym.make_vec(
        f"Meta-World/{benchmark}-test",
        **families,
        seed=seed,
        vector_strategy="sync",
        meta_batch_size=envs_per_name * classes,
        recurrent_info_in_obs=agent.metaworld_info_in_obs,
        normalize_reward_in_recurrent_info=False,  # the tail holds float32(reward): the engine's bits
    )
    shaping = float(getattr(dist, "success_reward", 0.0))
    if shaping:
        pay_success_reward(envs, shaping)
    return envs


def _find_task(dist: TaskDistribution, data: bytes, family: str) -> Task:
    for task in dist.tasks("test"):
        if task.family == family and task.param("mw_data") == data:
            return task
    raise ValueError(
        f"the official evaluator sampled a {family} goal that is not in {dist.name}'s test split; "
        "build both with the same seed"
    )


def _current_tasks(dist: TaskDistribution, envs: Any) -> list[Task]:
    """The goal each env of Meta-World's vector env holds now, as ``dist``'s test tasks."""
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    by_class = {cls.__name__: name for name, cls in ALL_V3_ENVIRONMENTS.items()}
    names = [by_class[c] for c in envs.get_attr("task_name")]  # as the evaluator names its task names
    held, index = envs.get_attr("tasks"), envs.get_attr("current_task_idx")
    return [_find_task(dist, held[i][index[i]].data, names[i]) for i in range(envs.num_envs)]


def _meta_test_as_official(agent: Any, engine: Any, tasks: list[Task], k: int, n: int, exact: bool) -> Any:
    """``agent.meta_test`` with evaluation episodes on the mean action; with ``exact``, adaptation episodes
    too where the agent can (RL²)."""
    return agent.meta_test(engine, tasks, k, n, True, sample_adaptation=not exact)


def cross_check(
    agent: Any,
    dist: TaskDistribution,
    engine: Any,
    *,
    rounds: int,
    adaptation_episodes: int,
    eval_episodes: int,
    seed: int = 0,
    exact: bool = True,
) -> CrossCheck:
    """Score ``agent`` with Meta-World's evaluator and with ``meta_test`` on the same goals: each round one goal
    per held-out class (an ML1 distribution: its one class; ML10/ML25/ML45: every test class, one env each)."""
    from metaworld.evaluation import metalearning_evaluation

    envs = official_test_envs(agent, dist, envs_per_name=1, seed=seed)
    out = CrossCheck()
    try:
        adapter = agent.metaworld_adapter(
            envs.num_envs,
            deterministic=True,
            seed=seed,
            info_in_obs=agent.metaworld_info_in_obs,
            exact=exact,
            obs_reward_divisor=OBS_REWARD_DIVISOR,
        )
        for _ in range(rounds):
            steps = agent.metaworld_adaptation_steps
            success, mean_return, per_name = metalearning_evaluation(
                adapter, envs, num_evals=1, adaptation_steps=steps,
                adaptation_episodes=adaptation_episodes, evaluation_episodes=eval_episodes,
            )  # fmt: skip
            tasks = _current_tasks(dist, envs)
            ours = _meta_test_as_official(agent, engine, tasks, adaptation_episodes, eval_episodes, exact)
            per_task = ours.eval_success.float().mean(-1)
            by_family = {t.family: float(s) for t, s in zip(tasks, per_task, strict=True)}
            out.rounds.append(
                CrossCheckRound(
                    task_id=", ".join(t.id for t in tasks),
                    official_success=float(success),
                    metarl_success=float(per_task.mean()),
                    official_return=float(mean_return),
                    metarl_return=float(ours.eval_return.float().mean()),
                    official_per_family={str(k): float(v) for k, v in sorted(per_name.items())},
                    metarl_per_family=dict(sorted(by_family.items())),
                )
            )
    finally:
        envs.close()
    return out
