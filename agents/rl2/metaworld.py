"""RL² as Meta-World's ``MetaLearningAgent``, so ``metaworld.evaluation.metalearning_evaluation`` can score it."""

from __future__ import annotations

from typing import Any

import torch

from metarl.agents.rl2.policy import RL2Policy
from metarl.rollout.types import StepBatch


class RL2MetaWorldAgent:
    """Adapter so ``metaworld.evaluation.metalearning_evaluation`` can score an RL² policy.

    The evaluator calls ``init()``, then ``adapt_action``/``step`` over the adaptation episodes,
    ``adapt()``, and then ``eval_action``/``reset(dones)`` over the evaluation episodes.  RL²
    adapts through its hidden state, so ``adapt()`` snapshots each env's hidden state and
    ``reset(mask)`` restores that snapshot for the masked envs — zeroing it there would score
    RL² zero-shot.  Inputs at each episode start match the engine's (previous action and reward
    zero, done flag set after the first episode of a trial).

    As metaworld-algorithms' RL² does, adaptation actions are sampled and evaluation actions take the mean
    when ``deterministic`` (``deterministic_adaptation`` makes adaptation take the mean too, for exact
    comparisons).  The evaluator never calls ``step()`` in evaluation episodes, so the reward there reaches
    the agent only through the observation: with ``info_in_obs`` the envs are Meta-World's
    ``recurrent_info_in_obs=True`` envs (observation ⊕ previous action ⊕ reward / ``obs_reward_divisor`` ⊕
    done, zeros after a reset), the adapter reads the previous action and reward from that tail in every
    episode, and the policy sees what metaworld-algorithms' RL² sees.  Without it, evaluation episodes show
    reward 0.  Meta-World's default tail holds reward / 10 (``obs_reward_divisor=10``); envs built with
    ``normalize_reward_in_recurrent_info=False`` hold the reward itself (``obs_reward_divisor=1``), and only
    those give the policy the reward's float32 bits exactly as the engine does: the vector env stores the tail
    in float32, so reward / 10 scaled back is off by an ulp now and then.

    Actions go out in float32, the dtype of Meta-World's action space and of what the engine sends its envs:
    Meta-World scales the action in the action's own precision, so float64 actions move the hand by a
    different last bit.  A trained policy amplifies such differences (an ulp at step 3 grows to 1e-3 by step
    30 on ML10), so only bit-equal inputs keep the two sides on the same trajectory.
    """

    def __init__(
        self,
        policy: RL2Policy,
        num_envs: int,
        *,
        deterministic: bool = False,
        seed: int = 0,
        info_in_obs: bool = False,
        deterministic_adaptation: bool = False,
        obs_reward_divisor: float = 10.0,
    ) -> None:
        self.policy = policy
        self.num_envs = int(num_envs)
        self.deterministic = deterministic
        self.deterministic_adaptation = deterministic_adaptation
        self.info_in_obs = info_in_obs
        if not obs_reward_divisor > 0:
            raise ValueError(
                f"obs_reward_divisor must be positive (10: Meta-World's default envs; 1: envs built with "
                f"normalize_reward_in_recurrent_info=False), got {obs_reward_divisor!r}"
            )
        self.obs_reward_divisor = float(obs_reward_divisor)
        self.generator = torch.Generator(device=policy.device).manual_seed(seed)
        self.init()

    def _zero_inputs(self) -> None:
        a = self.policy.action_dim
        self.prev_action = torch.zeros(self.num_envs, a, device=self.policy.device)
        self.prev_reward = torch.zeros(self.num_envs, device=self.policy.device)

    def init(self) -> None:
        """Start a new trial in every env: zero hidden state, no previous step."""
        self.hidden = self.policy.initial_state(self.num_envs)
        self._zero_inputs()
        self.prev_done = torch.zeros(self.num_envs, dtype=torch.bool, device=self.policy.device)
        self.trial_start = torch.ones(self.num_envs, dtype=torch.bool, device=self.policy.device)
        self.adapted_hidden: torch.Tensor | None = None

    def _split(self, observations: Any) -> torch.Tensor:
        """The env observation; with ``info_in_obs`` the previous action and reward are read from its tail."""
        obs = torch.as_tensor(observations, dtype=torch.float32, device=self.policy.device)
        if not self.info_in_obs:
            return obs
        o, a = self.policy.obs_dim, self.policy.action_dim
        if obs.shape[-1] != o + a + 2:
            raise ValueError(
                f"info_in_obs expects observations of {o} + {a} + 2 values (Meta-World's recurrent_info_in_obs), "
                f"got {obs.shape[-1]}"
            )
        self.prev_action = obs[:, o : o + a]
        self.prev_reward = obs[:, o + a] * self.obs_reward_divisor  # exact for 1; the policy scales the reward itself
        return obs[:, :o]

    def _act(self, observations: Any, deterministic: bool) -> tuple[Any, Any]:
        obs = self._split(observations)
        noise = torch.randn(self.num_envs, self.policy.action_dim, generator=self.generator, device=self.policy.device)
        step = StepBatch(
            obs=obs,
            prev_action=self.prev_action,
            prev_reward=self.prev_reward,
            prev_done=self.prev_done,
            episode_start=self.prev_done | self.trial_start,
            trial_start=self.trial_start,
            slot=torch.arange(self.num_envs, device=self.policy.device),
            task=torch.arange(self.num_envs, device=self.policy.device),
            noise=noise,
            deterministic=deterministic,
        )
        action, self.hidden, extras = self.policy.act(step, self.hidden)
        self.trial_start = torch.zeros_like(self.trial_start)
        self._last_action = action
        return action.float().cpu().numpy(), {k: v.cpu().numpy() for k, v in extras.items()}

    def adapt_action(self, observations: Any) -> tuple[Any, dict[str, Any]]:
        return self._act(observations, self.deterministic_adaptation)

    def step(self, timestep: Any) -> None:
        """Record the previous action, reward and done flag for the next input."""
        done = torch.as_tensor(timestep.terminated | timestep.truncated, device=self.policy.device)
        self.prev_action = self._last_action * (~done).unsqueeze(-1)
        reward = torch.as_tensor(timestep.reward, dtype=torch.float32, device=self.policy.device)
        self.prev_reward = reward * (~done)
        self.prev_done = done

    def adapt(self) -> None:
        """The hidden state after the adaptation episodes is the adapted 'policy'."""
        memory = self.policy.memory
        self.adapted_hidden = memory.gather(self.hidden, torch.arange(self.num_envs, device=self.policy.device))

    def eval_action(self, observations: Any) -> Any:
        """An evaluation action.  The evaluator calls no ``step`` here: the next input carries this action, a
        done flag of 0, and the reward from the observation's tail with ``info_in_obs`` (else 0)."""
        action, _ = self._act(observations, self.deterministic)
        self.prev_action = self._last_action
        self.prev_reward = torch.zeros_like(self.prev_reward)
        self.prev_done = torch.zeros_like(self.prev_done)
        return action

    def reset(self, env_mask: Any) -> None:
        """Start a new evaluation episode in the masked envs from the adapted hidden state."""
        mask = torch.as_tensor(env_mask, dtype=torch.bool, device=self.policy.device)
        memory = self.policy.memory
        if self.adapted_hidden is None:  # before adaptation: a fresh trial
            self.hidden = memory.reset(self.hidden, mask)
            self.trial_start = self.trial_start | mask
            return
        rows = mask.nonzero()[:, 0]
        self.hidden = memory.scatter(self.hidden, rows, memory.gather(self.adapted_hidden, rows))
        self.prev_action = self.prev_action * (~mask).unsqueeze(-1)
        self.prev_reward = self.prev_reward * (~mask)
        self.prev_done = self.prev_done | mask
