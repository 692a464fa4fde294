"""RandomAgent: the agent contract in NumPy, for prefill and for tests without JAX."""

import numpy as np

from embodied.core.base import Agent


class RandomAgent(Agent):
  """Acts uniformly at random; 'trains' by counting updates.

  Float actions with bounds [0, 1] of shape (n,) are the one-hot actions of
  the OneHotAction wrapper, so they are sampled as one-hot vectors; other
  bounded floats (the normalised [-1, 1] actions) uniformly; ints and bools
  uniformly over their range.
  """

  def __init__(self, obs_space, act_space, step=None, config=None):
    self.obs_space = obs_space
    self.act_space = {k: v for k, v in act_space.items() if k != 'reset'}
    seed = getattr(config, 'seed', 0) if config is not None else 0
    seed += int(step) if step is not None else 0  # A resumed run draws fresh actions.
    self._rng = np.random.default_rng(seed)
    self.updates = 0

  def dataset(self, generator):
    return generator

  def policy(self, obs, state=None, mode='train'):
    amount = len(obs['is_first'])
    outs = {key: self._sample(space, amount) for key, space in self.act_space.items()}
    return outs, state

  def train(self, data, state=None):
    self.updates += 1
    metrics = {'loss': np.float32(np.mean(data['reward']))}  # Cheap and data-dependent.
    return {}, state, metrics

  def report(self, data):
    return {'reward_mean': np.float32(np.mean(data['reward']))}

  def save(self):
    return {'updates': np.int64(self.updates)}

  def load(self, data):
    self.updates = int(data['updates'])

  def _sample(self, space, amount):
    """Returns [amount, *space.shape] samples of the space."""
    shape = (amount,) + space.shape
    if _is_onehot(space):
      indices = self._rng.integers(0, space.shape[0], amount)
      return np.eye(space.shape[0], dtype=space.dtype)[indices]
    if space.dtype == bool:
      return self._rng.random(shape) < 0.5
    if np.issubdtype(space.dtype, np.integer):
      return self._rng.integers(space.low, space.high, shape, endpoint=True).astype(space.dtype)
    low = np.maximum(space.low, -1e6)  # Unbounded dims: a wide finite range.
    high = np.minimum(space.high, 1e6)
    return self._rng.uniform(low, high, shape).astype(space.dtype)


def _is_onehot(space):
  return (
      np.issubdtype(space.dtype, np.floating) and len(space.shape) == 1
      and np.all(space.low == 0) and np.all(space.high == 1))
