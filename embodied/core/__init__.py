"""Generic RL infrastructure: contracts, config, envs, driver, logging, checkpoints."""

from embodied.core.base import Agent, Env, Space, make_act_space, make_obs_space
from embodied.core.basics import (
    Clock, Counter, Every, Once, Ratio, Timer, Until, format_number)
from embodied.core.batch import BatchEnv
from embodied.core.checkpoint import Checkpoint, CheckpointError
from embodied.core.config import Config, ConfigError, load_config, load_yaml
from embodied.core.driver import Driver
from embodied.core.flags import Flags
from embodied.core.logger import Logger
from embodied.core.random_agent import RandomAgent
