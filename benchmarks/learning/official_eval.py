"""Cross-check metarl's meta-test against Meta-World's own evaluator on the same trained agent.

Scores an agent (a run directory, or a briefly trained RL² on ML1-reach-v3 when none is given)
on the same held-out goals two ways, one goal per round:

* ``metaworld.evaluation.metalearning_evaluation`` through the agent's MetaLearningAgent adapter,
  on a Meta-World vector env with one env (so each task name has one env instance and both
  protocols count the same number of evaluation episodes);
* ``agent.meta_test`` through metarl's rollout engine.

On ML10/ML25/ML45 a round is one goal of every held-out class (one env each).  On ML1 it then shows the
official evaluator's counting rule (the first N episodes *per task name*,
whichever envs ended them) against metarl's (N per env) on the episodes of an ML1 vector env with
several envs, where envs that succeed early end more episodes.

    python benchmarks/learning/official_eval.py                  # brief RL² training, 5 rounds, K=10, N=3
    python benchmarks/learning/official_eval.py --run RUN_DIR --rounds 10
    python benchmarks/learning/official_eval.py --run RUN_DIR --rounds 50 --sampled-adaptation  # the reference protocol
    python benchmarks/learning/official_eval.py --quick          # K=1, N=1, 2 rounds
    python benchmarks/learning/official_eval.py --run benchmarks/results/ML10/rl2-ml10-s0 --rounds 10  # 5 goals a round
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

# Run as a script, this file's folder comes first on sys.path, where ``metaworld.py`` would hide the ``metaworld``
# package from every import below.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import metarl  # noqa: E402
from metarl.agents.rl2 import RL2Agent, RL2Config, RL2PolicyConfig  # noqa: E402
from metarl.envs import make_distribution  # noqa: E402
from metarl.evaluation.official import (  # noqa: E402
    OBS_REWARD_DIVISOR,
    cross_check,
    official_benchmark,
    official_counting,
    official_test_envs,
    per_env_counting,
)
from metarl.rollout import RolloutEngine  # noqa: E402
from metarl.run import make_run_distribution, read_run_config  # noqa: E402


def counting_demo(agent: object, dist: object, envs_per_name: int, episodes: int, seed: int) -> dict[str, float]:
    """Run an ML1 vector env with several envs (terminate on success, as the official evaluation does) and
    count its ended episodes both ways."""
    info_in_obs = agent.metaworld_info_in_obs  # type: ignore[attr-defined]
    envs = official_test_envs(agent, dist, envs_per_name=envs_per_name, seed=seed)  # type: ignore[arg-type]
    try:
        envs.call("toggle_sample_tasks_on_reset", False)
        envs.call("toggle_terminate_on_success", True)
        envs.call("sample_tasks")
        adapter = agent.metaworld_adapter(  # type: ignore[attr-defined]
            envs.num_envs,
            deterministic=True,
            seed=seed,
            info_in_obs=info_in_obs,
            exact=True,
            obs_reward_divisor=OBS_REWARD_DIVISOR,
        )
        adapter.init()
        obs, _ = envs.reset()
        adapter.reset(np.ones(envs.num_envs, dtype=bool))
        ended: list[tuple[int, bool]] = []
        counts = np.zeros(envs.num_envs, int)
        while (counts < episodes).any():
            obs, _, term, trunc, infos = envs.step(adapter.eval_action(obs))
            done = np.logical_or(term, trunc)
            adapter.reset(done)
            for i in np.flatnonzero(done):
                ended.append((int(i), bool(infos["final_info"]["success"][i])))
                counts[i] += 1
    finally:
        envs.close()
    return {"official_rule": official_counting(ended, episodes), "per_env_rule": per_env_counting(ended, episodes),
            "episodes_ended": len(ended)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=None, help="a run directory (ML1, ML10, ML25, ML45)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (a held-out goal of each test class) to score")
    parser.add_argument("--distribution", default="ML1-reach-v3", help="without --run: the briefly trained RL²'s")
    parser.add_argument("--adaptation-episodes", type=int, default=10)
    parser.add_argument("--eval-episodes", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="2 rounds, 1 adaptation and 1 evaluation episode")
    parser.add_argument(
        "--sampled-adaptation", action="store_true",
        help="the reference's protocol on both sides (adaptation episodes sampled, each side its own noise): "
        "success then agrees in distribution, over many goals, not goal by goal",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    torch.set_num_threads(1)
    if args.quick:
        args.rounds, args.adaptation_episodes, args.eval_episodes = 2, 1, 1
    t0 = time.perf_counter()
    if args.run is not None:
        train_cfg, _, _ = read_run_config(args.run)
        dist = make_run_distribution(train_cfg)
        agent = metarl.load(args.run)
    else:
        dist = make_distribution(args.distribution, seed=args.seed)
        cfg = RL2Config(episodes_per_trial=2, policy=RL2PolicyConfig(mlp_hidden=(64,), gru_hidden=32))
        agent = RL2Agent(39, 4, cfg, episodes_per_task=2, seed=args.seed)
    with RolloutEngine(dist, num_workers=1, seed=args.seed, backend="inline") as engine:
        if args.run is None:
            print(f"briefly training RL² on {args.distribution} (2 iterations) ...", flush=True)
            for i in range(2):
                agent.meta_train_step(engine, dist.sample(4, "train", rng=[args.seed, i]))
        # a gradient-based agent's adaptation episodes are always sampled (a policy gradient needs exploration)
        exact = not args.sampled_adaptation and agent.adaptation_unit == "episodes"
        check = cross_check(agent, dist, engine, rounds=args.rounds, adaptation_episodes=args.adaptation_episodes,
                            eval_episodes=args.eval_episodes, seed=args.seed, exact=exact)  # fmt: skip
    families = sorted(check.rounds[0].official_per_family)
    print(f"\n{'round':<6} {'class':<26} {'official succ':>13} {'metarl succ':>11}")
    for i, r in enumerate(check.rounds):
        for family in families:
            print(f"{i:<6} {family:<26} {r.official_per_family[family]:>13.2f} {r.metarl_per_family[family]:>11.2f}")
        print(f"{i:<6} {'(return, all classes)':<26} {r.official_return:>13.1f} {r.metarl_return:>11.1f}")
    print(f"\nmean success: official {check.official_success:.3f}, metarl {check.metarl_success:.3f}; "
          f"largest per-goal gap {check.max_success_gap:.2f}")  # fmt: skip
    if not exact:
        print(
            "Adaptation episodes sampled on both sides, each with its own noise (the reference's protocol; a\n"
            "gradient-based agent's always are):\n"
            "success agrees in distribution over many goals, not goal by goal. The official side ends every\n"
            "episode on success (its test envs), metarl's runs all 500 steps (the training env settings)."
        )
    else:
        print("Both sides take mean actions in every episode (exact mode) and RL² sees its reward in evaluation\n"
              "episodes on both (the evaluator's envs carry it in the observation, recurrent_info_in_obs), with the\n"
              "same bits (float32 actions, the reward itself in the tail), so success must agree and returns must\n"
              "agree wherever no episode ended early. `metarl eval` samples adaptation episodes and never ends an\n"
              "episode on success (the training env settings).")  # fmt: skip
    demo = None
    if official_benchmark(dist) == "ML1":  # the miscount needs several envs of one task name: ML1's case
        demo = counting_demo(agent, dist, envs_per_name=5, episodes=args.eval_episodes, seed=args.seed)
        print(f"\ncounting on one ML1 vector env with 5 envs and {args.eval_episodes} episode(s) each: "
              f"official rule (first {args.eval_episodes} per task name) {demo['official_rule']:.3f}, "
              f"per-env rule {demo['per_env_rule']:.3f} ({demo['episodes_ended']} episodes ended)")  # fmt: skip
    print(f"\n{time.perf_counter() - t0:.0f} s")
    if args.json:
        figures = {
            "distribution": dist.name,
            "run": str(args.run) if args.run else None,
            "agent": agent.name,
            "exact": exact,
            "bit_equal_inputs": True,  # float32 actions, the reward's own bits in the observation tail
            "official_success": check.official_success,
            "metarl_success": check.metarl_success,
            "rounds": [vars(r) for r in check.rounds],
            "counting": demo,
        }
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
