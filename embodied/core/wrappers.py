"""Env wrappers: action conversions, time limit, image resize and output checks."""

import numpy as np

from embodied.core.base import Env, Space


class EnvError(ValueError):
  """An env returned an observation that breaks its declared spaces."""


class Wrapper(Env):
  """Forwards everything to the wrapped env; subclasses override what changes."""

  def __init__(self, env):
    self.env = env

  def __len__(self):
    return len(self.env)

  def __getattr__(self, name):
    if name.startswith('__') or name == 'env':
      raise AttributeError(name)
    return getattr(self.env, name)

  @property
  def obs_space(self):
    return self.env.obs_space

  @property
  def act_space(self):
    return self.env.act_space

  def step(self, action):
    return self.env.step(action)

  def render(self):
    return self.env.render()

  def close(self):
    self.env.close()


class OneHotAction(Wrapper):
  """Discrete int action -> float32 one-hot vector [n] for the agent.

  The argmax picks the action, so an all-zero vector (which the driver sends
  on is_last steps) means the first action.
  """

  def __init__(self, env, key='action'):
    super().__init__(env)
    space = env.act_space[key]
    if not space.discrete or space.shape != ():
      raise ValueError(f"OneHotAction needs a scalar int action '{key}', got {space}.")
    self._key = key
    self._low = int(space.low)
    self._count = int(space.high) - int(space.low) + 1

  @property
  def act_space(self):
    return {**self.env.act_space, self._key: Space(np.float32, (self._count,), 0, 1)}

  def step(self, action):
    onehot = np.asarray(action[self._key])
    if onehot.shape != (self._count,):
      raise ValueError(
          f"Action '{self._key}' must be a one-hot vector of shape ({self._count},), "
          f'got shape {onehot.shape}.')
    index = self._low + int(np.argmax(onehot))
    return self.env.step({**action, self._key: np.int32(index)})


class NormalizeAction(Wrapper):
  """Continuous action with finite bounds -> [-1, 1]; infinite dims pass through."""

  def __init__(self, env, key='action'):
    super().__init__(env)
    space = env.act_space[key]
    self._key = key
    self._mask = np.isfinite(space.low) & np.isfinite(space.high)
    self._low = np.where(self._mask, space.low, -1).astype(np.float32)
    self._high = np.where(self._mask, space.high, 1).astype(np.float32)

  @property
  def act_space(self):
    space = self.env.act_space[self._key]
    low = np.where(self._mask, -1, space.low)
    high = np.where(self._mask, 1, space.high)
    return {**self.env.act_space, self._key: Space(np.float32, space.shape, low, high)}

  def step(self, action):
    value = np.asarray(action[self._key], np.float32)
    original = (value + 1) / 2 * (self._high - self._low) + self._low
    original = np.where(self._mask, original, value).astype(np.float32)
    return self.env.step({**action, self._key: original})


class ClipAction(Wrapper):
  """Clips a continuous action to [low, high]; the caller keeps the unclipped one."""

  def __init__(self, env, key='action', low=-1, high=1):
    super().__init__(env)
    self._key = key
    self._low = low
    self._high = high

  def step(self, action):
    clipped = np.clip(np.asarray(action[self._key], np.float32), self._low, self._high)
    return self.env.step({**action, self._key: clipped})


class Discretize(Wrapper):
  """Continuous action [n] -> one int in [0, bins**n) indexing a grid of values.

  Applied before OneHotAction, so the agent sees a one-hot vector of
  bins**n joint actions; each dim takes `bins` evenly spaced values.
  """

  def __init__(self, env, key='action', bins=5):
    super().__init__(env)
    space = env.act_space[key]
    if space.discrete or not np.all(np.isfinite(space.low) & np.isfinite(space.high)):
      raise ValueError(f"Discretize needs a bounded float action '{key}', got {space}.")
    self._key = key
    self._dims = int(np.prod(space.shape))
    self._shape = space.shape
    if bins ** self._dims > 4096:
      raise ValueError(
          f"Discretizing action '{key}' of {self._dims} dims into {bins} bins gives "
          f'{bins ** self._dims} actions; use fewer bins (at most 4096 actions).')
    self._bins = bins
    self._values = np.linspace(space.low.ravel(), space.high.ravel(), bins, axis=-1)  # [n, bins]

  @property
  def act_space(self):
    space = Space(np.int32, (), 0, self._bins ** self._dims - 1)
    return {**self.env.act_space, self._key: space}

  def step(self, action):
    digits = np.unravel_index(int(action[self._key]), (self._bins,) * self._dims)
    value = self._values[np.arange(self._dims), digits].reshape(self._shape)
    return self.env.step({**action, self._key: value.astype(np.float32)})


class TimeLimit(Wrapper):
  """Ends an episode after `duration` steps: is_last without is_terminal.

  reset=True starts a fresh episode afterwards. reset=False continues the
  env from where it is: the next observation repeats the last one as the
  first of a new episode (unless the env itself ended). duration 0 is off.
  """

  def __init__(self, env, duration, reset=True):
    super().__init__(env)
    self._duration = duration
    self._reset = reset
    self._step = 0
    self._env_done = True  # The env itself ended, so it needs a real reset.
    self._last = None

  def step(self, action):
    if not self._duration:
      return self.env.step(action)
    limit_hit = self._step >= self._duration
    if action['reset'] or self._env_done or limit_hit:
      self._step = 0
      if limit_hit and not self._reset and not self._env_done:
        obs = {**self._last, 'reward': np.float32(0), 'is_first': True,
               'is_last': False, 'is_terminal': False}
      else:
        obs = self.env.step({**action, 'reset': True})
        self._env_done = bool(obs['is_last'])
    else:
      obs = self.env.step(action)
      self._env_done = bool(obs['is_last'])
      self._step += 1
      if self._step >= self._duration:
        obs = {**obs, 'is_last': True}
    self._last = obs
    return obs


class ResizeImage(Wrapper):
  """Resizes uint8 rank-3 observations to `size` (H, W) by nearest neighbour."""

  def __init__(self, env, size=(64, 64)):
    super().__init__(env)
    self._size = tuple(size)
    self._keys = [
        key for key, space in env.obs_space.items()
        if len(space.shape) == 3 and space.dtype == np.uint8
        and space.shape[:2] != self._size]

  @property
  def obs_space(self):
    spaces = dict(self.env.obs_space)
    for key in self._keys:
      spaces[key] = Space(np.uint8, self._size + spaces[key].shape[2:])
    return spaces

  def step(self, action):
    obs = self.env.step(action)
    if self._keys:
      obs = {**obs, **{key: self._resize(obs[key]) for key in self._keys}}
    return obs

  def _resize(self, image):
    # Nearest neighbour by index lookup; same result as PIL's NEAREST.
    image = np.asarray(image)
    rows = (np.arange(self._size[0]) + 0.5) * image.shape[0] / self._size[0]
    cols = (np.arange(self._size[1]) + 0.5) * image.shape[1] / self._size[1]
    return image[rows.astype(np.int64)][:, cols.astype(np.int64)]


class CheckFinite(Wrapper):
  """Cheap always-on check: float observations and the reward must be finite."""

  def __init__(self, env, name=None):
    super().__init__(env)
    self._name = name or _env_name(env)
    self._float_keys = [
        key for key, space in env.obs_space.items()
        if np.issubdtype(space.dtype, np.floating)]
    self._step = 0

  def step(self, action):
    obs = self.env.step(action)
    self._step = 0 if obs['is_first'] else self._step + 1
    for key in self._float_keys:
      _check_finite(self._name, key, obs[key], self._step)
    return obs


class CheckSpaces(Wrapper):
  """Checks every observation against obs_space: keys, dtype, shape, finite.

  Also checks that every action key is present with the declared shape.
  Raises EnvError naming the env, the key, the expected and the actual value.
  """

  def __init__(self, env, name=None):
    super().__init__(env)
    self._name = name or _env_name(env)
    self._step = 0

  def step(self, action):
    self._check_action(action)
    obs = self.env.step(action)
    self._step = 0 if obs.get('is_first') else self._step + 1
    spaces = self.env.obs_space
    missing = sorted(set(spaces) - set(obs))
    extra = sorted(set(obs) - set(spaces))
    if missing or extra:
      raise EnvError(
          f'Env {self._name} returned observation keys {sorted(obs)}, expected '
          f'{sorted(spaces)} (missing {missing}, unexpected {extra}).')
    for key, space in spaces.items():
      self._check_obs(key, space, obs[key])
    return obs

  def _check_action(self, action):
    for key, space in self.env.act_space.items():
      if key == 'reset':
        continue
      if key not in action:
        raise EnvError(
            f'Action for env {self._name} lacks key {key!r}; got keys {sorted(action)}, '
            f'expected {sorted(self.env.act_space)}.')
      shape = np.shape(action[key])
      if shape != space.shape:
        raise EnvError(
            f'Action {key!r} for env {self._name} has shape {shape}, '
            f'expected {space.shape} ({space}).')

  def _check_obs(self, key, space, value):
    value = np.asarray(value)
    if value.dtype != space.dtype:
      raise EnvError(
          f'Env {self._name} returned observation {key!r} with dtype {value.dtype}, '
          f'expected {space.dtype} ({space}).')
    if value.shape != space.shape:
      raise EnvError(
          f'Env {self._name} returned observation {key!r} with shape {value.shape}, '
          f'expected {space.shape} ({space}).')
    if np.issubdtype(value.dtype, np.floating):
      _check_finite(self._name, key, value, self._step)


def _check_finite(name, key, value, step):
  value = np.asarray(value)
  if not np.isfinite(value).all():
    bad = value[~np.isfinite(value)].ravel()[0] if value.ndim else value
    raise EnvError(
        f'Env {name} returned observation {key!r} that is not finite ({bad}) '
        f'at step {step} of the episode.')


def _env_name(env):
  while isinstance(env, Wrapper):
    env = env.env
  return type(env).__name__
