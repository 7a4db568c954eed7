"""Adapters for people with their own algorithms: gymnasium VectorEnv and SB3 VecEnv over the engine."""
