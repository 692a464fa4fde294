"""Adapter for the Crafter benchmark (crafter_reward, crafter_noreward)."""

import crafter
import numpy as np

from embodied.core.base import Env, Space, make_act_space, make_obs_space


class Crafter(Env):
  """Crafter with 64x64 images and achievements as `log_achievement_*` keys.

  The agent sees only the image and, for task 'reward', the reward; for
  'noreward' the reward is 0 but the true one is still logged as log_reward.
  An episode ends when the player dies (is_terminal) or after `length` steps
  (a time limit: is_last without is_terminal).
  """

  def __init__(self, task='reward', size=(64, 64), length=10000, seed=None):
    if task not in ('reward', 'noreward'):
      raise ValueError(f"Crafter task must be 'reward' or 'noreward', got '{task}'.")
    self._reward = task == 'reward'
    self._env = crafter.Env(size=tuple(size), length=length, seed=seed)
    self._achievements = list(crafter.constants.achievements)
    self._done = True

  @property
  def obs_space(self):
    spaces = make_obs_space({'image': Space(np.uint8, tuple(self._env.observation_space.shape))})
    spaces['log_reward'] = Space(np.float32)
    for name in self._achievements:
      spaces[f'log_achievement_{name}'] = Space(np.int32, (), 0)
    return spaces

  @property
  def act_space(self):
    return make_act_space({'action': Space(np.int32, (), 0, self._env.action_space.n - 1)})

  def step(self, action):
    if action['reset'] or self._done:
      self._done = False
      image = self._env.reset()
      return self._obs(image, 0.0, {}, is_first=True)
    image, reward, self._done, info = self._env.step(int(action['action']))
    reward = reward if self._reward else 0.0
    return self._obs(
        image, reward, info, is_last=self._done,
        is_terminal=info['discount'] == 0)

  def render(self):
    return self._env.render()

  def _obs(self, image, reward, info, is_first=False, is_last=False, is_terminal=False):
    achievements = info.get('achievements', {})
    obs = {
        'image': image,
        'reward': np.float32(reward),
        'is_first': is_first,
        'is_last': is_last,
        'is_terminal': is_terminal,
        'log_reward': np.float32(info.get('reward', 0.0)),
    }
    for name in self._achievements:
      obs[f'log_achievement_{name}'] = np.int32(achievements.get(name, 0))
    return obs
