"""Adapter for the Behaviour Suite for RL (bsuite_<experiment>/<setting>, e.g. bsuite_catch/0)."""

import bsuite.bsuite
import bsuite.sweep
import numpy as np

from embodied.core.base import Env, Space, make_act_space, make_obs_space


class BSuite(Env):
  """A bsuite environment by its id; the observation is a flat float32 `vector`.

  The id fixes every setting of the experiment, its seed included, as the
  bsuite protocol requires, so this env takes no seed. bsuite's own episode
  count for the id (`num_episodes`) is what its analysis expects a run to play.
  A zero discount is terminal; bsuite has no time limits of its own.
  The mnist experiments download MNIST at construction.
  """

  def __init__(self, task='catch/0'):
    separator = bsuite.sweep.SEPARATOR
    if task not in bsuite.sweep.SETTINGS:
      experiments = sorted({name.split(separator)[0] for name in bsuite.sweep.SWEEP})
      raise ValueError(
          f"Unknown bsuite id '{task}': use bsuite_<experiment>/<setting>, e.g. "
          f"bsuite_catch/0, with experiment one of {', '.join(experiments)}.")
    experiment = task.split(separator)[0]
    self._env = bsuite.bsuite.load(experiment, bsuite.sweep.SETTINGS[task])
    self.num_episodes = int(self._env.bsuite_num_episodes)
    self._done = True

  @property
  def obs_space(self):
    size = int(np.prod(self._env.observation_spec().shape))
    return make_obs_space({'vector': Space(np.float32, (size,))})

  @property
  def act_space(self):
    spec = self._env.action_spec()
    return make_act_space({'action': Space(np.int32, (), 0, spec.num_values - 1)})

  def step(self, action):
    if action['reset'] or self._done:
      self._done = False
      return self._obs(self._env.reset(), is_first=True)
    timestep = self._env.step(int(action['action']))
    self._done = bool(timestep.last())
    return self._obs(
        timestep, is_last=self._done, is_terminal=self._done and timestep.discount == 0)

  def close(self):
    self._env.close()

  def _obs(self, timestep, is_first=False, is_last=False, is_terminal=False):
    return {
        'vector': np.asarray(timestep.observation, np.float32).ravel(),
        'reward': np.float32(0.0 if is_first else timestep.reward),
        'is_first': is_first,
        'is_last': is_last,
        'is_terminal': is_terminal,
    }
