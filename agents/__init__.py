"""Meta-learning agents (RL², MAML-RL family). They talk to envs only through metarl's rollout engine."""
