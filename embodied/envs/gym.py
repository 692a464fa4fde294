"""Adapter from a gymnasium env to the embodied Env contract."""

import gymnasium
import numpy as np

from embodied.core.base import Env, Space, make_act_space, make_obs_space
from embodied.core.config import ConfigError


class Gym(Env):
  """Any gymnasium env: `Gym('CartPole-v1')` or `Gym('mymodule:MyEnv-v0')`.

  The `module:EnvName-v0` form makes gymnasium import `module` first, which
  must register `EnvName-v0`; this happens in every process that builds one.
  Observations: a Box, Discrete or MultiBinary space becomes `obs_key` (or
  'image' for a uint8 rank-3 Box); a Dict space becomes one key per entry.
  Float observations are float32 and Discrete ones one-hot float32 vectors.
  Actions: Discrete(n) becomes Space(int32, (), 0, n - 1); a Box stays a
  float32 Box; MultiBinary(n) becomes a float32 [0, 1] vector thresholded at
  0.5, so the agent can treat it as a continuous action.
  Gymnasium's `terminated` is is_terminal; `terminated or truncated` is is_last.
  """

  def __init__(self, env, obs_key='vector', act_key='action', seed=None, **kwargs):
    if isinstance(env, str):
      self._name = env
      env = _make(env, **kwargs)
    else:
      self._name = type(env).__name__
    self._env = env
    self._seed = None if seed is None else int(seed)
    self._obs_dict = isinstance(env.observation_space, gymnasium.spaces.Dict)
    self._act_dict = isinstance(env.action_space, gymnasium.spaces.Dict)
    self._obs_spaces = _named(env.observation_space, obs_key, self._name, 'observation')
    self._act_spaces = _named(env.action_space, act_key, self._name, 'action')
    self._obs_key = obs_key
    self._act_key = act_key
    self._done = True

  @property
  def gym_env(self):
    """The wrapped gymnasium env."""
    return self._env

  @property
  def key_names(self):
    """(obs_key, act_key): the names given to non-dict observations and actions."""
    return self._obs_key, self._act_key

  @property
  def obs_space(self):
    return make_obs_space({key: _obs_space(space) for key, space in self._obs_spaces.items()})

  @property
  def act_space(self):
    return make_act_space({key: _act_space(space) for key, space in self._act_spaces.items()})

  def step(self, action):
    if action['reset'] or self._done:
      seed, self._seed = self._seed, None  # Seed only the first episode.
      obs, _ = self._env.reset(seed=seed)
      self._done = False
      return self._obs(obs, 0.0, is_first=True)
    if self._act_dict:
      gym_action = {
          key: _to_gym(space, action[key]) for key, space in self._act_spaces.items()}
    else:
      gym_action = _to_gym(self._act_spaces[self._act_key], action[self._act_key])
    obs, reward, terminated, truncated, _ = self._env.step(gym_action)
    self._done = bool(terminated or truncated)
    return self._obs(obs, reward, is_last=self._done, is_terminal=bool(terminated))

  def render(self):
    image = self._env.render()
    if image is None:
      raise ValueError(
          f"Gym env '{self._name}' rendered nothing: pass render_mode='rgb_array'.")
    return np.asarray(image)

  def close(self):
    self._env.close()

  def _obs(self, obs, reward, is_first=False, is_last=False, is_terminal=False):
    if not self._obs_dict:
      obs = {next(iter(self._obs_spaces)): obs}
    result = {
        key: _from_gym(space, obs[key]) for key, space in self._obs_spaces.items()}
    result['reward'] = np.float32(reward)
    result['is_first'] = is_first
    result['is_last'] = is_last
    result['is_terminal'] = is_terminal
    return result


def _make(env_id, **kwargs):
  try:
    return gymnasium.make(env_id, **kwargs)
  except (gymnasium.error.Error, ModuleNotFoundError) as e:
    raise ConfigError(f"Cannot make gym env '{env_id}': {e}") from e


def _named(space, key, name, what):
  """Returns {key: gym space}: the entries of a Dict, else one named entry."""
  if isinstance(space, gymnasium.spaces.Dict):
    spaces = dict(space.spaces)
  elif _is_image(space) and what == 'observation':
    spaces = {'image': space}
  else:
    spaces = {key: space}
  supported = (gymnasium.spaces.Box, gymnasium.spaces.Discrete, gymnasium.spaces.MultiBinary)
  for entry, inner in spaces.items():
    if not isinstance(inner, supported):
      raise NotImplementedError(
          f"Gym env '{name}' has {what} '{entry}' of type {type(inner).__name__}; "
          'only Box, Discrete, MultiBinary and a Dict of those are supported.')
  return spaces


def _is_image(space):
  return (isinstance(space, gymnasium.spaces.Box) and space.dtype == np.uint8
          and len(space.shape) == 3)


def _obs_space(space):
  if isinstance(space, gymnasium.spaces.Discrete):
    return Space(np.float32, (int(space.n),), 0, 1)
  if isinstance(space, gymnasium.spaces.MultiBinary):
    return Space(space.dtype, space.shape, 0, 1)
  if np.issubdtype(space.dtype, np.floating):
    return Space(np.float32, space.shape, space.low, space.high)
  return Space(space.dtype, space.shape, space.low, space.high)


def _from_gym(space, value):
  if isinstance(space, gymnasium.spaces.Discrete):
    onehot = np.zeros(int(space.n), np.float32)
    onehot[int(value) - int(space.start)] = 1
    return onehot
  value = np.asarray(value)
  if np.issubdtype(space.dtype, np.floating):
    return value.astype(np.float32)
  return value.astype(space.dtype)


def _act_space(space):
  if isinstance(space, gymnasium.spaces.Discrete):
    return Space(np.int32, (), 0, int(space.n) - 1)
  if isinstance(space, gymnasium.spaces.MultiBinary):
    return Space(np.float32, space.shape, 0, 1)
  return Space(np.float32, space.shape, space.low, space.high)


def _to_gym(space, value):
  if isinstance(space, gymnasium.spaces.Discrete):
    return int(value) + int(space.start)
  if isinstance(space, gymnasium.spaces.MultiBinary):
    return (np.asarray(value) > 0.5).astype(space.dtype)
  return np.asarray(value, space.dtype)
