"""embodied: agent-independent RL infrastructure. Imports no JAX.

  core/    contracts (Space, Env, Agent), Config, BatchEnv, Driver, Logger, Checkpoint
  envs/    gymnasium, crafter, dummy and optional suites (load_env, make_envs)
  replay/  uniform replay with chunked persistence
  run/     the train, train_eval and eval_only loops
"""

from embodied.core import *  # noqa: F401,F403
from embodied.core import logger, wrappers
from embodied import envs, replay, run

__version__ = '0.1.0'
