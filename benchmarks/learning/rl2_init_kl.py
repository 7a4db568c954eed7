"""How far RL²'s first PPO steps move the policy, by weight initialisation and Adam ε: one update on a batch of
real ML1-reach trials collected by the untrained policy, with the KL early stop of the tuned setting.

    python benchmarks/learning/rl2_init_kl.py            # 4 trials of 4 episodes, 2 epochs: about a minute

For each ``policy.weight_init`` (``torch``, ``reference``) the untrained policy collects the batch; then, for
each Adam ε (1e-5, the reference's 1e-8), a copy takes one ``ppo_update`` with ``target_kl`` 0.02 and prints
its Adam steps before the early stop, the mean approx. KL per step and the gradient norm.  The README's
reference-differences table cites it: the reference's initialisation makes the first Adam step's KL about
25 times larger, so the early stop ends the update after one or two steps.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]  # this folder holds metaworld.py

import torch  # noqa: E402

from metarl.agents.rl2 import POLICY_INITS, RL2Policy, RL2PolicyConfig, RL2PPOConfig, ppo_update  # noqa: E402
from metarl.envs import make_distribution  # noqa: E402
from metarl.rollout import RolloutEngine  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=4, help="trials (tasks) in the batch")
    parser.add_argument("--episodes", type=int, default=4, help="500-step episodes per trial")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for name in ("trials", "episodes", "epochs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be a positive integer, got {getattr(args, name)}")
    torch.set_num_threads(1)
    dist = make_distribution("ML1-reach-v3", seed=args.seed)
    tasks = dist.sample(args.trials, "train", rng=args.seed)
    print("| weight_init | Adam ε | Adam steps before the stop | approx. KL per step | grad norm |")
    print("|---|---|---|---|---|")
    for init in POLICY_INITS:
        torch.manual_seed(args.seed)
        policy = RL2Policy(39, 4, RL2PolicyConfig(action_input=False, weight_init=init))
        with RolloutEngine(dist, num_workers=1, seed=args.seed, backend="inline", slots_per_family=args.trials) as e:
            traj = e.collect(policy, tasks, episodes_per_task=args.episodes, episodes_per_trial=args.episodes)
        for eps in (1e-5, 1e-8):
            copy = RL2Policy(39, 4, policy.config)
            copy.load_state_dict(policy.state_dict())
            opt = torch.optim.Adam(copy.parameters(), lr=5e-4, eps=eps)
            st = ppo_update(copy, opt, traj, RL2PPOConfig(target_kl=0.02, epochs=args.epochs))
            print(
                f"| {init} | {eps:g} | {int(st['optimizer_steps'])} | {st['approx_kl']:.4f} | {st['grad_norm']:.1f} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
