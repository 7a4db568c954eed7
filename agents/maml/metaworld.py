"""The MAML family as Meta-World's ``MetaLearningAgent``, so ``metaworld.evaluation.metalearning_evaluation``
can score it."""

from __future__ import annotations

from typing import Any

import torch

from metarl.agents.distributions import gaussian_log_prob
from metarl.agents.maml.agent import MAMLAgent
from metarl.agents.maml.inner import task_batch
from metarl.agents.maml.policy import Params, TaskPolicy
from metarl.rollout.types import Trajectories


class MAMLMetaWorldAgent:
    """Adapter so ``metaworld.evaluation.metalearning_evaluation`` can score a MAML-family agent.

    Env ``i`` of the evaluator's vector env is task ``i``.  ``adapt_action``/``step`` record each
    env's adaptation episodes; ``adapt()`` takes one inner step per call (the evaluator calls it
    once per adaptation step) on that env's complete episodes, from the current weights; the
    evaluation episodes then run with the adapted weights (``reset`` has nothing to do: the
    policy is feed-forward).  ``init()`` returns every env to θ.  Meta-World vector envs
    auto-reset in the same step (``SAME_STEP``), so every recorded step is a real one.  Actions go out in
    float32, as the engine sends them (Meta-World scales an action in its own precision).
    """

    def __init__(self, agent: MAMLAgent, num_envs: int, *, deterministic: bool = False, seed: int = 0) -> None:
        self.agent = agent
        self.policy = agent.policy
        self.num_envs = int(num_envs)
        self.deterministic = deterministic
        self.generator = torch.Generator(device=self.policy.device).manual_seed(seed)
        self.params: Params | None = None
        self.init()

    def init(self) -> None:
        self.params = None
        self._clear()

    def _clear(self) -> None:
        self._steps: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None

    def _act(self, observations: Any, deterministic: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        dev = self.policy.device
        obs = torch.as_tensor(observations, dtype=torch.float32, device=dev)
        task = torch.arange(self.num_envs, device=dev)
        noise = torch.randn(self.num_envs, self.policy.action_dim, generator=self.generator, device=dev)
        with torch.no_grad():
            mean, log_std = TaskPolicy(self.policy, self.params).distribution(obs, task)
            a = mean if deterministic else mean + log_std.exp() * noise
            log_prob = gaussian_log_prob(a, mean, log_std)
        return obs, self.policy.action_bias + self.policy.action_scale * a, log_prob

    def adapt_action(self, observations: Any) -> tuple[Any, dict[str, Any]]:
        # adaptation episodes are always sampled: a policy gradient needs exploration
        obs, action, log_prob = self._act(observations, False)
        self._last = (obs, action)
        return action.float().cpu().numpy(), {"log_prob": log_prob.cpu().numpy()}

    def step(self, timestep: Any) -> None:
        if self._last is None:
            raise RuntimeError("step() called before adapt_action()")
        dev = self.policy.device
        obs, action = self._last
        reward = torch.as_tensor(timestep.reward, dtype=torch.float32, device=dev)
        done = torch.as_tensor(timestep.terminated | timestep.truncated, device=dev)
        terminated = torch.as_tensor(timestep.terminated, device=dev)
        self._steps.append((obs, action, reward, done, terminated))

    def _trajectories(self) -> Trajectories:
        """The recorded steps as [env, episode, time] whole episodes (an unfinished last episode is dropped)."""
        if not self._steps:
            raise RuntimeError("adapt() called with no adaptation steps recorded")
        obs, act, rew, done, term = (torch.stack(x, 1) for x in zip(*self._steps, strict=True))  # [N, T, ...]
        episodes: list[list[tuple[int, int]]] = []
        for i in range(self.num_envs):
            ends = (done[i].nonzero().squeeze(1) + 1).tolist()
            episodes.append(list(zip([0, *ends[:-1]], ends, strict=True)) if ends else [])
        if any(not e for e in episodes):
            raise RuntimeError("an env finished no adaptation episode; give the evaluator more adaptation episodes")
        n_eps = max(len(e) for e in episodes)
        horizon = max(b - a for e in episodes for a, b in e)
        n, dev = self.num_envs, self.policy.device
        out_obs = torch.zeros(n, n_eps, horizon, obs.shape[-1], device=dev)
        out_act = torch.zeros(n, n_eps, horizon, act.shape[-1], device=dev)
        out_rew = torch.zeros(n, n_eps, horizon, device=dev)
        valid = torch.zeros(n, n_eps, horizon, dtype=torch.bool, device=dev)
        terminated = torch.zeros(n, n_eps, horizon, dtype=torch.bool, device=dev)
        for i, eps in enumerate(episodes):
            for e, (a, b) in enumerate(eps):
                out_obs[i, e, : b - a] = obs[i, a:b]
                out_act[i, e, : b - a] = act[i, a:b]
                out_rew[i, e, : b - a] = rew[i, a:b]
                valid[i, e, : b - a] = True
                terminated[i, e, : b - a] = term[i, a:b]
        return Trajectories(
            tasks=[],
            obs=out_obs,
            actions=out_act,
            rewards=out_rew,
            terminated=terminated,
            truncated=torch.zeros_like(terminated),
            success=torch.zeros_like(terminated),
            valid=valid,
            final_obs=torch.zeros(n, n_eps, obs.shape[-1], device=dev),
            lengths=valid.sum(-1),
            episode_seeds=torch.zeros(n, n_eps, dtype=torch.int64, device=dev),
        )

    def adapt(self) -> None:
        """One inner step per env from the current weights, on the episodes recorded since the last call."""
        batch = task_batch(self._trajectories(), self.policy, self.agent.config)
        self.params = self.agent.inner_step(self.params, batch, self.num_envs)
        self._clear()

    def eval_action(self, observations: Any) -> Any:
        _, action, _ = self._act(observations, self.deterministic)
        return action.float().cpu().numpy()

    def reset(self, env_mask: Any) -> None:
        """Nothing to reset: the adapted weights stay, the policy has no state."""
