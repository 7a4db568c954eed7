"""Why an RL² agent that succeeds with sampled actions fails with the mean action: follow whole trials on
held-out ML1-reach goals and print, per episode, the closest and the final distance of the hand to the
hidden goal (``info["obj_to_target"]``, metres; success is within 0.05 at any step).

    python benchmarks/learning/rl2_reach_probe.py runs/rl2-reach --goals 8 --modes sample mean meanfeed

Each trial is 10 sampled adaptation episodes, then 3 evaluation episodes from the adapted hidden state, as
``metarl eval``.  Evaluation episodes per mode:

- ``sample``: sampled actions (``metarl eval`` without ``--deterministic``);
- ``mean``: the mean action (``metarl eval --deterministic``);
- ``meanfeed``: the mean action is executed, but the GRU is fed a sampled action as its previous action
  (a probe, not a protocol): it tells whether the noise reaching the hidden state through that input is
  what the search relies on.

After each mode it prints where the hand came to rest: the final hand position of every evaluation episode
minus the goal, per axis (mean: a bias; RMS: the error), the slope of the resting point on the goal per axis
(1 when the agent has located the goal, 0 when it goes to one place whatever the goal), and how far that
point lies from where the last adaptation episode (sampled) ended.  ``--json PATH`` writes these figures.

One env, one trial at a time, single-threaded; the same noise seeds for every mode.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import numpy as np  # noqa: E402
import torch  # noqa: E402

import metarl  # noqa: E402
from metarl.rollout.types import StepBatch  # noqa: E402
from metarl.run import make_run_distribution, read_run_config  # noqa: E402

MODES = ("sample", "mean", "meanfeed")
ADAPTATION, EVALUATION = 10, 3


def trial(policy, dist, env, task, mode: str, seed: int) -> list[tuple[float, float, bool, np.ndarray]]:  # type: ignore[no-untyped-def]
    """(closest distance, final distance, success, final hand position) of each episode of one trial."""
    g = torch.Generator().manual_seed(seed)
    dist.set_task(env, task)
    hidden = policy.initial_state(1)
    adapted = hidden
    episodes = []
    for ep in range(ADAPTATION + EVALUATION):
        obs, _ = env.reset(seed=seed * 100 + ep)
        prev_action, prev_reward = torch.zeros(1, policy.action_dim), torch.zeros(1)
        if ep == ADAPTATION:
            adapted = hidden.clone()
        elif ep > ADAPTATION:
            hidden = adapted.clone()
        evaluation = ep >= ADAPTATION
        closest, success = float("inf"), False
        for t in range(dist.max_episode_steps):
            step = StepBatch(
                obs=torch.as_tensor(obs, dtype=torch.float32)[None], prev_action=prev_action,
                prev_reward=prev_reward, prev_done=torch.tensor([ep > 0 and t == 0]),
                episode_start=torch.tensor([t == 0]), trial_start=torch.tensor([ep == 0 and t == 0]),
                slot=torch.tensor([0]), task=torch.tensor([0]),
                noise=torch.randn(1, policy.action_dim, generator=g),
                deterministic=evaluation and mode in ("mean", "meanfeed"),
            )  # fmt: skip
            before = hidden
            action, hidden, _ = policy.act(step, hidden)
            fed = action
            if evaluation and mode == "meanfeed":  # what a sampled action would have been, fed but not executed
                with torch.no_grad():
                    x = policy.encoder(policy.inputs(step.obs, step.prev_action, step.prev_reward, step.prev_done))
                    mean, log_std, _ = policy.heads(policy.gru(x[None], before[None])[0][0])
                fed = policy.action_bias + policy.action_scale * (
                    mean + log_std.exp() * torch.randn(1, policy.action_dim, generator=g)
                )
            obs, reward, terminated, truncated, info = env.step(action[0].numpy())
            prev_action, prev_reward = fed, torch.tensor([float(reward)])
            closest = min(closest, float(info["obj_to_target"]))
            success = success or bool(info.get("success", 0.0))
            if terminated or truncated:
                break
        episodes.append((closest, float(info["obj_to_target"]), success, np.asarray(obs[:3], dtype=np.float64)))
    return episodes


def rest_points(ends: np.ndarray, goals: np.ndarray, adapted_ends: np.ndarray) -> dict[str, Any]:
    """Where the hand came to rest: ``ends`` [G, E, 3] final hand positions of the evaluation episodes,
    ``goals`` [G, 3], ``adapted_ends`` [G, 3] the final position of each trial's last adaptation episode."""
    error = ends - goals[:, None, :]  # [G, E, 3]
    flat_ends, flat_goals = ends.reshape(-1, 3), np.repeat(goals, ends.shape[1], axis=0)
    slope = [float(np.polyfit(flat_goals[:, a], flat_ends[:, a], 1)[0]) for a in range(3)]
    return {
        "bias_cm": (error.mean((0, 1)) * 100).tolist(),
        "rms_cm": (np.sqrt((error**2).mean((0, 1))) * 100).tolist(),
        "slope_on_goal": slope,
        "median_rest_to_goal_cm": float(np.median(np.linalg.norm(error, axis=-1)) * 100),
        "median_rest_to_adaptation_end_cm": float(
            np.median(np.linalg.norm(ends - adapted_ends[:, None, :], axis=-1)) * 100
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="an RL² run directory on ML1-reach")
    parser.add_argument("--checkpoint", type=Path, help="default: the run's latest")
    parser.add_argument("--goals", type=int, default=8, help="the first N held-out goals")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--json", type=Path, default=None, help="write the success and resting-point figures here")
    args = parser.parse_args()
    if args.goals < 2:
        parser.error(f"--goals must be at least 2 (the resting point's slope on the goal needs two), got {args.goals}")
    torch.set_num_threads(1)
    agent = metarl.load(args.run, args.checkpoint)
    policy = getattr(agent, "policy", None)
    train, _, _ = read_run_config(args.run)
    if policy is None or not hasattr(policy, "gru") or not train.benchmark.startswith("ML1-reach"):
        raise SystemExit(f"rl2_reach_probe.py: {args.run} is not an RL² run on ML1-reach ({train.benchmark})")
    dist = make_run_distribution(train)
    tasks = dist.tasks("test")[: args.goals]
    env = dist.make_env(tasks[0].family)
    print("per goal: closest / final distance in cm of the last adaptation episode and the 3 evaluation "
          "episodes (* = success)")  # fmt: skip
    figures: dict[str, object] = {"run": str(args.run), "goals": len(tasks)}
    for mode in args.modes:
        success, ends, adapted_ends = [], [], []
        for i, task in enumerate(tasks):
            eps = trial(policy, dist, env, task, mode, seed=i)
            success.append([s for _, _, s, _ in eps])
            ends.append([e for *_, e in eps[ADAPTATION:]])
            adapted_ends.append(eps[ADAPTATION - 1][3])
            shown = " ".join(
                f"{c * 100:4.1f}/{f * 100:4.1f}{'*' if s else ' '}" for c, f, s, _ in eps[ADAPTATION - 1 :]
            )
            print(f"{mode:8s} goal {i}: {shown}", flush=True)
        rate = np.mean(success, axis=0)
        print(f"{mode:8s} success, adaptation episodes {rate[:ADAPTATION].mean():.2f}, "
              f"evaluation episodes {rate[ADAPTATION:].mean():.2f}")  # fmt: skip
        goals = np.stack([np.asarray(env_goal(t), dtype=np.float64) for t in tasks])
        rest = rest_points(np.asarray(ends), goals, np.asarray(adapted_ends))
        print(
            f"{mode:8s} resting point − goal (cm, x y z): bias "
            + " ".join(f"{v:+.1f}" for v in rest["bias_cm"])
            + ", RMS "
            + " ".join(f"{v:.1f}" for v in rest["rms_cm"])
            + "; slope on the goal "
            + " ".join(f"{v:.2f}" for v in rest["slope_on_goal"])
            + f"; median {rest['median_rest_to_goal_cm']:.1f} cm from the goal, "
            f"{rest['median_rest_to_adaptation_end_cm']:.1f} cm from where the last adaptation episode ended"
        )
        figures[mode] = {
            "adaptation_success": float(rate[:ADAPTATION].mean()),
            "evaluation_success": float(rate[ADAPTATION:].mean()),
            **rest,
        }
    env.close()
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return 0


def env_goal(task) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The hidden goal of an ML1-reach task (its Meta-World ``rand_vec`` is object xyz, then goal xyz)."""
    import pickle

    return np.asarray(pickle.loads(task.param("mw_data"))["rand_vec"])[3:]


if __name__ == "__main__":
    sys.exit(main())
