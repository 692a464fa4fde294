"""The three contracts everything else is written against: Space, Env, Agent."""

import numpy as np


class Space:
  """A typed array shape with optional bounds: Space(np.float32, (4,), -1, 1).

  Discrete spaces are integer spaces with bounds; the one-hot action wrapper
  turns them into float32 vectors for the agent.
  """

  def __init__(self, dtype, shape=(), low=None, high=None):
    self.dtype = np.dtype(dtype)
    self.shape = tuple(int(x) for x in (shape if hasattr(shape, '__len__') else (shape,)))
    if low is None:
      low = _dtype_min(self.dtype)
    if high is None:
      high = _dtype_max(self.dtype)
    self.low = np.broadcast_to(np.asarray(low, self.dtype), self.shape)
    self.high = np.broadcast_to(np.asarray(high, self.dtype), self.shape)

  @property
  def discrete(self):
    return np.issubdtype(self.dtype, np.integer) or self.dtype == bool

  def __repr__(self):
    low = self.low.min() if self.low.size else None
    high = self.high.max() if self.high.size else None
    return f'Space(dtype={self.dtype.name}, shape={self.shape}, low={low}, high={high})'

  def __eq__(self, other):
    return (isinstance(other, Space) and self.dtype == other.dtype and
            self.shape == other.shape and np.array_equal(self.low, other.low)
            and np.array_equal(self.high, other.high))

  def contains(self, value):
    value = np.asarray(value)
    if value.shape != self.shape:
      return False
    if value.dtype != self.dtype:
      return False
    return bool(np.all(value >= self.low) and np.all(value <= self.high))

  def sample(self, rng=np.random):
    if self.dtype == bool:
      return rng.uniform(size=self.shape) < 0.5
    if np.issubdtype(self.dtype, np.integer):
      return rng.randint(self.low, self.high + 1, self.shape).astype(self.dtype)
    low = np.maximum(self.low, -1e6)
    high = np.minimum(self.high, 1e6)
    return rng.uniform(low, high, self.shape).astype(self.dtype)


def _dtype_min(dtype):
  if dtype == bool:
    return False
  if np.issubdtype(dtype, np.integer):
    return np.iinfo(dtype).min
  return -np.inf


def _dtype_max(dtype):
  if dtype == bool:
    return True
  if np.issubdtype(dtype, np.integer):
    return np.iinfo(dtype).max
  return np.inf


def make_obs_space(sensors):
  """An Env.obs_space: the sensor spaces plus reward, is_first, is_last, is_terminal."""
  return {**sensors, 'reward': Space(np.float32), 'is_first': Space(bool),
          'is_last': Space(bool), 'is_terminal': Space(bool)}


def make_act_space(actions):
  """An Env.act_space: the action spaces plus reset."""
  return {**actions, 'reset': Space(bool)}


class Env:
  """One environment. Observations are dicts of numpy arrays.

  obs_space must contain 'reward' (float32), 'is_first', 'is_last',
  'is_terminal' (bool) besides the sensor keys; keys starting with 'log_' are
  for logging only. act_space must contain 'reset' (bool) besides the actions.
  make_obs_space and make_act_space add these keys to the sensors and actions.
  step({'action': ..., 'reset': True}) starts a new episode and returns an
  observation with is_first=True and reward 0.
  """

  def __len__(self):
    return 0  # Not batched.

  def __repr__(self):
    return f'{type(self).__name__}(obs_space={self.obs_space}, act_space={self.act_space})'

  @property
  def obs_space(self):
    raise NotImplementedError('Returns: dict of Space')

  @property
  def act_space(self):
    raise NotImplementedError('Returns: dict of Space')

  def step(self, action):
    raise NotImplementedError('Returns: dict of observation arrays')

  def render(self):
    raise NotImplementedError('Returns: image array')

  def close(self):
    pass


class Agent:
  """The agent contract, batched over envs (see docs/architecture.md)."""

  def __init__(self, obs_space, act_space, step, config):
    pass

  def dataset(self, generator):
    """Returns an iterator of device-ready batches from a generator of numpy batches."""
    raise NotImplementedError

  def policy(self, obs, state=None, mode='train'):
    """Returns (outs, state); outs holds 'action' (and other act keys) for every env."""
    raise NotImplementedError

  def train(self, data, state=None):
    """One update on a batch [B, T, ...]. Returns (outs, state, metrics)."""
    raise NotImplementedError

  def report(self, data):
    """Diagnostics on a batch, including open-loop video predictions. Returns metrics."""
    raise NotImplementedError

  def save(self):
    """Returns a tree of numpy arrays with everything needed to resume."""
    raise NotImplementedError

  def load(self, data):
    """Restores the tree returned by save()."""
    raise NotImplementedError
