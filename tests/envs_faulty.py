"""Small gymnasium envs for the reliability tests, usable from the command line:

  python dreamerv3/train.py --task gym_tests.envs_faulty:NanEnv-v0 ...

Gymnasium imports this module (the part before ':') in every process that
builds one of these envs, which registers them.

  Cycle-v0     deterministic and without memory across episodes: the
               observation at step t of an episode is a fixed function of t,
               the reward depends only on (t, action), episodes have
               CYCLE_LENGTH actions. A run resumed at an episode boundary sees
               exactly what an uninterrupted run sees.
  NanEnv-v0    finite observations, except a NaN in 'vector' at step NAN_STEP
               of every episode.
  DieOnce-v0   os._exit(DIE_EXITCODE)s at step DIE_STEP of its episode, once per
               marker file: the first env to reach that step creates the file
               named by $DIE_ONCE_MARKER and dies; every later env (restarts,
               other envs, reruns) lives.
"""

import os

import gymnasium
import numpy as np

CYCLE_LENGTH = 9
NAN_STEP = 30
DIE_STEP = 50
DIE_EXITCODE = 3
MARKER_VAR = 'DIE_ONCE_MARKER'


class _Base(gymnasium.Env):
  """A 3-vector observation, 2 discrete actions, reward 1 for action t % 2."""

  observation_space = gymnasium.spaces.Box(-1, 1, (3,), np.float32)
  action_space = gymnasium.spaces.Discrete(2)

  def __init__(self, length=1000):
    self._length = length
    self._t = 0

  def reset(self, seed=None, options=None):
    super().reset(seed=seed)
    self._t = 0
    return self._obs(), {}

  def step(self, action):
    reward = float(int(action) == self._t % 2)
    self._t += 1
    return self._obs(), reward, False, self._t >= self._length, {}

  def _obs(self):
    phase = 2 * np.pi * self._t / 7
    return np.array([np.sin(phase), np.cos(phase), self._t % 2], np.float32)


class Cycle(_Base):

  def __init__(self):
    super().__init__(CYCLE_LENGTH)


class NanEnv(_Base):

  def _obs(self):
    obs = super()._obs()
    if self._t == NAN_STEP:
      obs[0] = np.nan
    return obs


class DieOnce(_Base):

  def step(self, action):
    if self._t + 1 == DIE_STEP and _claim(os.environ.get(MARKER_VAR)):
      os._exit(DIE_EXITCODE)   # Like a simulator crash: no cleanup, no exception.
    return super().step(action)


def _claim(marker):
  """True for exactly one caller per marker path (atomic exclusive create)."""
  if not marker:
    return False
  try:
    os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    return True
  except FileExistsError:
    return False


for _name, _cls in (('Cycle-v0', Cycle), ('NanEnv-v0', NanEnv), ('DieOnce-v0', DieOnce)):
  if _name not in gymnasium.registry:
    gymnasium.register(_name, entry_point=f'{__name__}:{_cls.__name__}')
