"""Environments: suites are imported only when a task of theirs is loaded."""

from embodied.envs.registry import SUITES, env_seed, load_env, make_envs, wrap_env
