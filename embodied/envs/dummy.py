"""A tiny, fast env with every observation type, for tests and debug runs."""

import numpy as np

from embodied.core.base import Env, Space, make_act_space, make_obs_space


class Dummy(Env):
  """Match a target shown in the observation; pure NumPy.

  Each step draws a random target from the seeded generator and shows it in
  the image (a bright block) and the vector. The reward for arriving at step
  t+1 scores the action taken at step t against the target shown at step t,
  so a reactive policy can learn it:
  - 'disc': 5 actions; reward 1 if the action equals the target, else 0.
  - 'cont': 2-dim actions in [-1, 1]; reward 1 - mean|action - target| / 2.
  Episodes last `length` steps and end by time limit (is_terminal stays False).
  """

  def __init__(self, task='disc', size=(64, 64), length=100, seed=None):
    if task not in ('disc', 'cont'):
      raise ValueError(f"Dummy task must be 'disc' or 'cont', got '{task}'.")
    self._task = task
    self._size = tuple(size)
    self._length = length
    self._rng = np.random.default_rng(seed)
    self._step = 0
    self._target = None
    self._done = True

  @property
  def obs_space(self):
    return {**make_obs_space({'image': Space(np.uint8, self._size + (3,)),
                              'vector': Space(np.float32, (3,), -1, 1)}),
            'log_match': Space(np.float32)}

  @property
  def act_space(self):
    if self._task == 'disc':
      action = Space(np.int32, (), 0, 4)
    else:
      action = Space(np.float32, (2,), -1, 1)
    return make_act_space({'action': action})

  def step(self, action):
    if action['reset'] or self._done:
      self._step = 0
      self._done = False
      self._target = self._draw_target()
      return self._obs(0.0, is_first=True)
    reward = self._score(np.asarray(action['action']))
    self._step += 1
    self._done = self._step >= self._length
    self._target = self._draw_target()
    return self._obs(reward, is_last=self._done)

  def render(self):
    return self._image()

  def _draw_target(self):
    if self._task == 'disc':
      return int(self._rng.integers(0, 5))
    return self._rng.uniform(-1, 1, 2).astype(np.float32)  # [2]

  def _score(self, action):
    if self._task == 'disc':
      return float(int(action) == self._target)
    clipped = np.clip(action.astype(np.float32), -1, 1)
    return float(1 - np.abs(clipped - self._target).mean() / 2)

  def _obs(self, reward, is_first=False, is_last=False):
    return {
        'image': self._image(),
        'vector': self._vector(),
        'reward': np.float32(reward),
        'is_first': is_first,
        'is_last': is_last,
        'is_terminal': False,
        'log_match': np.float32(reward),
    }

  def _position(self):
    """Top-left corner of the target block, in [0, 1] of the image size."""
    if self._task == 'disc':
      return self._target / 5, self._target / 5
    return (self._target[0] + 1) / 2 * 0.8, (self._target[1] + 1) / 2 * 0.8

  def _image(self):
    h, w = self._size
    image = np.zeros((h, w, 3), np.uint8)  # [H, W, 3]
    y, x = self._position()
    y, x = int(y * h), int(x * w)
    image[y: y + h // 5, x: x + w // 5] = (255, 128, 64)
    return image

  def _vector(self):
    progress = 2 * self._step / self._length - 1
    if self._task == 'disc':
      angle = 2 * np.pi * self._target / 5
      return np.array([np.cos(angle), np.sin(angle), progress], np.float32)
    return np.array([*self._target, progress], np.float32)
