"""Task names to envs: the suite table, load_env (one env) and make_envs (a batch)."""

import functools
import importlib
import inspect

import numpy as np

from embodied.core import wrappers
from embodied.core.batch import BatchEnv
from embodied.core.config import ConfigError

# Suite name -> 'module:Class'; a module is imported only when its suite is used.
SUITES = {
    'dummy': 'embodied.envs.dummy:Dummy',
    'gym': 'embodied.envs.gym:Gym',
    'crafter': 'embodied.envs.crafter:Crafter',
    'dmc': 'embodied.envs.dmc:DMC',
    'atari': 'embodied.envs.atari:Atari',
    'dmlab': 'embodied.envs.dmlab:DMLab',
    'minecraft': 'embodied.envs.minecraft:Minecraft',
    'bsuite': 'embodied.envs.bsuite:BSuite',
    'loconav': 'embodied.envs.loconav:LocoNav',
    'procgen': 'embodied.envs.procgen:ProcGen',
    'memmaze': 'embodied.envs.memmaze:MemMaze',
}

# Suites whose dependencies are a pip extra of this project; the other suites
# with an adapter install with scripts/install-<suite>.sh.
_EXTRAS = {'dmc': 'dmc', 'atari': 'atari', 'bsuite': 'bsuite', 'memmaze': 'memmaze'}

# Suites of the original that have no adapter here, with why (see their scripts).
_NO_ADAPTER = {
    'dmlab': 'DeepMind Lab is not on PyPI and builds from source with Bazel',
    'minecraft': 'MineRL builds Minecraft with Java and Gradle downloads at install time',
    'loconav': 'its ant-maze tasks need an adapter on dm_control.locomotion, not written yet',
    'procgen': 'procgen has no wheels for Python 3.11 or newer on PyPI',
}

_MODES = {'train': 0, 'eval': 1}  # Eval envs get seeds distinct from train envs.


def load_env(task, config, index=0, mode='train'):
  """Builds env `index` of `task` ('suite_name') with the wrappers of config."""
  return _build(task, dict(config.flat), index, mode)


def make_envs(config, mode='train', amount=None):
  """Builds a BatchEnv of config.envs.amount envs of config.task."""
  flat = dict(config.flat)
  _import_suite(_split(flat['task'])[0])  # Bad tasks fail here, before any process starts.
  amount = flat['envs.amount'] if amount is None else amount
  ctors = [
      functools.partial(_build, flat['task'], flat, index, mode)
      for index in range(amount)]
  return BatchEnv(ctors, flat['envs.parallel'], flat['envs.restart'])


def wrap_env(env, config, name=None):
  """Applies the wrappers of config to an env you built yourself (see example.py)."""
  return _wrap(env, dict(config.flat), name or type(env).__name__, (64, 64))


def env_seed(seed, index, mode='train'):
  """A distinct, reproducible seed per (run seed, env index, train/eval)."""
  if mode not in _MODES:
    raise ValueError(f"Env mode must be one of {list(_MODES)}, got '{mode}'.")
  return int(np.random.SeedSequence([seed, index, _MODES[mode]]).generate_state(1)[0])


def _build(task, flat, index, mode):
  """Module-level so a partial of it pickles by reference into env processes."""
  suite, name = _split(task)
  ctor = _import_suite(suite)
  kwargs = _suite_kwargs(flat, suite)
  if 'seed' in inspect.signature(ctor).parameters:
    kwargs['seed'] = env_seed(flat.get('seed', 0), index, mode)
  env = ctor(name, **kwargs)
  return _wrap(env, flat, task, kwargs.get('size', (64, 64)))


def _split(task):
  suite, _, name = task.partition('_')
  if suite not in SUITES or not name:
    raise ConfigError(
        f"Unknown task '{task}': tasks are <suite>_<name> with suite one of "
        f"{', '.join(SUITES)} (e.g. gym_CartPole-v1, crafter_reward, dummy_disc).")
  return suite, name


def _import_suite(suite):
  module_name, class_name = SUITES[suite].split(':')
  try:
    module = importlib.import_module(module_name)
  except ImportError as e:
    if not isinstance(e, ModuleNotFoundError):
      # Installed, but its import failed (e.g. dmc without OSMesa): the suite says why.
      raise ConfigError(f"Suite '{suite}' could not be imported: {e}") from e
    # A missing suite module itself or one of its dependencies.
    if suite in _NO_ADAPTER:
      raise ConfigError(
          f"Suite '{suite}' is not installed: {_NO_ADAPTER[suite]}; "
          f'see scripts/install-{suite}.sh.') from e
    script = f'scripts/install-{suite}.sh'
    command = f'pip install .[{_EXTRAS[suite]}] (or {script})' if suite in _EXTRAS else script
    raise ConfigError(
        f"Suite '{suite}' is not installed: run {command}. Import error: {e}") from e
  return getattr(module, class_name)


def _suite_kwargs(flat, suite):
  """Keys env.<suite>.* of the config as keyword arguments; lists become tuples."""
  prefix = f'env.{suite}.'
  return {
      key[len(prefix):]: tuple(value) if isinstance(value, list) else value
      for key, value in flat.items() if key.startswith(prefix)}


def _wrap(env, flat, task, size):
  """Action conversions, time limit, resize and output checks, inside out."""
  for key, space in env.act_space.items():
    if key == 'reset':
      continue
    discretize = flat.get('wrapper.discretize', 0)
    if not space.discrete and discretize:
      env = wrappers.Discretize(env, key, discretize)
      space = env.act_space[key]
    if space.discrete:
      env = wrappers.OneHotAction(env, key)
    else:
      env = wrappers.NormalizeAction(env, key)
      space = env.act_space[key]  # [-1, 1] where the env's bounds are finite.
      env = wrappers.ClipAction(env, key, space.low, space.high)
  env = wrappers.ResizeImage(env, tuple(size))
  if flat.get('wrapper.length', 0):
    env = wrappers.TimeLimit(env, flat['wrapper.length'], flat.get('wrapper.reset', True))
  if flat.get('wrapper.checks', False):
    return wrappers.CheckSpaces(env, task)
  return wrappers.CheckFinite(env, task)
