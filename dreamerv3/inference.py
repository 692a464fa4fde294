"""Acting with a trained agent outside the training loop.

  policy = load_policy('~/logdir/cartpole')
  obs, _ = env.reset()
  state = policy.reset()
  while ...:
    action, state = policy(obs, state)
    obs, reward, terminated, truncated, _ = env.step(action)

For gymnasium tasks (`gym_<id>`) the policy takes the gymnasium observation
and returns the gymnasium action. It converts both through the same adapter
and wrappers that training used (embodied/envs/gym.py, wrap_env): the adapter
wraps a stand-in gymnasium env that hands it the caller's observation and
records the action it receives, so image resizing, one-hot and normalised
actions, discretisation and dict spaces match training by construction.
For other envs the policy takes the observation dicts of the env that
`embodied.envs.load_env(config.task, config)` builds and returns the action
dict for its step().
"""

import pathlib

import gymnasium
import numpy as np

from embodied.core.basics import Counter
from embodied.core.checkpoint import CheckpointError, read_tree
from embodied.core.config import Config
from embodied.envs import gym, load_env, wrap_env

from . import jaxagent


def load_policy(logdir, mode='eval', env=None):
  """The agent saved in `logdir` (its config.yaml and newest checkpoint) as a Policy.

  mode: the agent's policy mode, 'eval', 'train' or 'explore'.
  env: the wrapped embodied env the agent was trained on, needed only when
  it is not config.task (e.g. example.py's make_env(config)); it is not
  stepped or closed. By default load_env(config.task) builds one for its
  spaces. The agent runs on the platform of the saved config (the CPU when
  that is absent) on one device, whatever jax.parallel was during training.
  """
  logdir = pathlib.Path(logdir).expanduser()
  path = logdir / 'config.yaml'
  if not path.is_file():
    raise FileNotFoundError(
        f'load_policy: {path} not found; pass the run.logdir of a training run.')
  config = Config.load(path).update({'jax.parallel': False})
  trees = read_tree(logdir)
  if 'agent' not in trees:
    raise CheckpointError(f'load_policy: the checkpoint in {logdir} holds no agent '
                          f'(found: {sorted(trees)}).')
  own_env = env is None
  env = load_env(config.task, config, mode='eval') if own_env else env
  try:
    agent = jaxagent.JAXAgent(env.obs_space, env.act_space, Counter(), config)
    agent.load(trees['agent'])
    return Policy(agent, env, config, mode)
  finally:
    if own_env:
      env.close()


class Policy:
  """A loaded agent acting on one env; the caller carries the recurrent state.

  `policy(obs, state=None) -> (action, state)`: state None starts an episode
  (is_first). `env` is the wrapped env the agent was trained on, used for its
  spaces only (the policy never steps it; it may be closed). When it is a
  gymnasium env (embodied.envs.gym.Gym inside wrappers) the policy speaks
  gymnasium; otherwise it speaks the env's own dicts.
  """

  def __init__(self, agent, env, config, mode='eval'):
    self.agent = agent
    self.config = config
    self.mode = mode
    self.obs_space = env.obs_space
    self.act_space = env.act_space
    self._converter = _GymConverter(env, config) if hasattr(env, 'gym_env') else None

  def reset(self):
    """The state that starts a new episode."""
    return None

  def __call__(self, obs, state=None):
    first = state is None
    if self._converter:
      obs = self._converter.observation(obs, first)
    else:
      obs = self._complete(obs, first)
    batch = {key: np.asarray(value)[None] for key, value in obs.items()}  # [1, ...]
    outs, state = self.agent.policy(batch, state, mode=self.mode)
    action = {key: np.asarray(value)[0] for key, value in outs.items()}
    if self._converter:
      return self._converter.action(action), state
    return {**action, 'reset': False}, state

  def _complete(self, obs, first):
    """An env observation dict with is_first from the state; defaults for the rest."""
    missing = [key for key in self.obs_space if key not in obs and not key.startswith('log_')
               and key not in ('reward', 'is_last', 'is_terminal')]
    if missing:
      raise KeyError(
          f'Policy for {self.config.task} needs observation keys {missing}; got keys '
          f'{sorted(obs)}. Pass the observations of embodied.envs.load_env(task, config).')
    defaults = {'reward': np.float32(0), 'is_last': False, 'is_terminal': False}
    return {**defaults, **obs, 'is_first': first}


class _GymConverter:
  """Raw gymnasium obs -> agent obs and agent action -> gymnasium action.

  Both go through the training adapter and wrappers around a _StandIn env:
  a step first converts the observation (reset or a no-op action), then
  converts the agent's action, whose observation is discarded. The time limit
  is left out so that it never swallows an action with a reset.
  """

  def __init__(self, env, config):
    # Wrappers forward attribute lookups, here to the Gym adapter inside.
    real = env.gym_env
    self._stand_in = _StandIn(real.observation_space, real.action_space)
    obs_key, act_key = env.key_names
    adapter = gym.Gym(self._stand_in, obs_key=obs_key, act_key=act_key)
    unlimited = config.update({'wrapper.length': 0, 'wrapper.checks': True})
    self._env = wrap_env(adapter, unlimited, config.task)
    self._noop = {
        key: np.zeros(space.shape, space.dtype)
        for key, space in self._env.act_space.items() if key != 'reset'}

  def observation(self, obs, first):
    self._stand_in.obs = obs
    converted = self._env.step({**self._noop, 'reset': first})
    return {key: value for key, value in converted.items() if not key.startswith('log_')}

  def action(self, action):
    self._env.step({**action, 'reset': False})
    return self._stand_in.action


class _StandIn(gymnasium.Env):
  """Returns the observation it is given and records the action it receives."""

  def __init__(self, observation_space, action_space):
    self.observation_space = observation_space
    self.action_space = action_space
    self.obs = None
    self.action = None

  def reset(self, seed=None, options=None):
    return self.obs, {}

  def step(self, action):
    self.action = action
    return self.obs, 0.0, False, False, {}

