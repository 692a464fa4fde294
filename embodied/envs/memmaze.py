"""Adapter for Memory Maze (memmaze_9x9 ... memmaze_15x15), a dm_control 3D maze."""

import numpy as np

from embodied.core.base import Env, Space, make_act_space, make_obs_space
# Before memory_maze, which would otherwise set MUJOCO_GL=egl: the dmc module
# defaults it to osmesa and frees render contexts at exit.
from embodied.envs.dmc import close_at_exit, episode_flags

import memory_maze.tasks  # isort: skip  (its package also imports the legacy gym)

_MAZES = {
    '9x9': memory_maze.tasks.memory_maze_9x9,
    '11x11': memory_maze.tasks.memory_maze_11x11,
    '13x13': memory_maze.tasks.memory_maze_13x13,
    '15x15': memory_maze.tasks.memory_maze_15x15,
}


class MemMaze(Env):
  """A Memory Maze task: 64x64 egocentric `image`, 6 discrete actions.

  `target_color` (float32 [3]) is the color of the current target, which the
  image also shows in its border. Episodes end at the maze's time limit
  (1000 to 4000 steps), a truncation: is_last without is_terminal.
  """

  def __init__(self, task='9x9', seed=None):
    if task not in _MAZES:
      raise ValueError(
          f"Unknown Memory Maze task '{task}': use memmaze_<size> with size one of "
          f"{', '.join(_MAZES)}.")
    self._env = _MAZES[task](seed=seed)
    self._done = True
    close_at_exit(self)

  @property
  def obs_space(self):
    spec = self._env.observation_spec()
    return make_obs_space({
        'image': Space(np.uint8, spec['image'].shape),
        'target_color': Space(np.float32, spec['target_color'].shape)})

  @property
  def act_space(self):
    spec = self._env.action_spec()
    return make_act_space({'action': Space(np.int32, (), 0, spec.num_values - 1)})

  def step(self, action):
    if action['reset'] or self._done:
      self._done = False
      return self._obs(self._env.reset(), is_first=True)
    timestep = self._env.step(int(action['action']))
    is_last, is_terminal = episode_flags(timestep)
    self._done = is_last
    return self._obs(timestep, is_last=is_last, is_terminal=is_terminal)

  def render(self):
    return self._image

  def close(self):
    self._env.physics.free()

  def _obs(self, timestep, is_first=False, is_last=False, is_terminal=False):
    self._image = timestep.observation['image']
    return {
        'image': self._image,
        'target_color': np.asarray(timestep.observation['target_color'], np.float32),
        'reward': np.float32(0.0 if is_first else timestep.reward),
        'is_first': is_first,
        'is_last': is_last,
        'is_terminal': is_terminal,
    }
