"""Adapter for the DeepMind Control Suite (dmc_<domain>_<task>, e.g. dmc_walker_walk)."""

import concurrent.futures.thread  # noqa: F401  (its exit hook must be registered before ours)
import os
import threading
import weakref

# MuJoCo picks its OpenGL backend when dm_control is first imported. OSMesa
# renders on any CPU (Debian: libosmesa6); a user who set MUJOCO_GL=egl for a
# GPU machine keeps it.
os.environ.setdefault('MUJOCO_GL', 'osmesa')

import numpy as np  # noqa: E402

try:
  from dm_control import suite  # noqa: E402
except ModuleNotFoundError:
  raise
except Exception as error:
  # dm_control sets up the renderer on import; without the GL library (no
  # libOSMesa on a fresh CPU machine) that fails deep inside PyOpenGL.
  raise ImportError(
      f"dm_control is installed but could not set up MuJoCo's renderer "
      f"MUJOCO_GL={os.environ['MUJOCO_GL']} ({type(error).__name__}: {error}). "
      'On a CPU machine install OSMesa (Debian/Ubuntu: apt-get install libosmesa6); '
      'on a GPU machine set MUJOCO_GL=egl.') from error

from embodied.core.base import Env, Space, make_act_space, make_obs_space  # noqa: E402

# Domains whose default camera is not camera 0 (quadruped's 0 is a fixed, far view).
_DEFAULT_CAMERAS = {'quadruped': 2}

# Envs whose render contexts are freed before interpreter exit, if still alive.
_OPEN = weakref.WeakSet()


class DMC(Env):
  """A dm_control suite task with proprio keys and a rendered `image`.

  Each dm_control observation becomes its own float32 key (scalars as shape
  (1,)); `image` is a [H, W, 3] uint8 frame from `camera` (-1: the domain's
  default). Every agent step repeats the action `repeat` times and sums the
  rewards. The suite's time limit (1000 physics-control steps for most tasks)
  is a truncation: is_last without is_terminal; a discount of 0 is terminal.
  """

  def __init__(self, env='walker_walk', repeat=2, size=(64, 64), camera=-1, seed=None):
    if repeat < 1:
      raise ValueError(f'DMC action repeat must be at least 1, got {repeat}.')
    domain, task = parse_task(env)
    task_kwargs = {} if seed is None else {'random': int(seed)}
    self._env = suite.load(domain, task, task_kwargs=task_kwargs)
    self._repeat = int(repeat)
    self._size = tuple(int(x) for x in size)
    self._camera = _DEFAULT_CAMERAS.get(domain, 0) if camera == -1 else int(camera)
    self._done = True
    close_at_exit(self)

  @property
  def obs_space(self):
    spaces = {
        key: Space(np.float32, _vector_shape(spec.shape))
        for key, spec in self._env.observation_spec().items()}
    return make_obs_space({**spaces, 'image': Space(np.uint8, self._size + (3,))})

  @property
  def act_space(self):
    spec = self._env.action_spec()
    return make_act_space({'action': Space(np.float32, spec.shape, spec.minimum, spec.maximum)})

  def step(self, action):
    if action['reset'] or self._done:
      self._done = False
      timestep = self._env.reset()
      return self._obs(timestep, 0.0, is_first=True)
    value = np.asarray(action['action'], np.float64)
    reward = 0.0
    for _ in range(self._repeat):
      timestep = self._env.step(value)
      reward += timestep.reward or 0.0
      if timestep.last():
        break
    is_last, is_terminal = episode_flags(timestep)
    self._done = is_last
    return self._obs(timestep, reward, is_last=is_last, is_terminal=is_terminal)

  def render(self):
    return self._env.physics.render(*self._size, camera_id=self._camera)

  def close(self):
    """Frees the OpenGL and MuJoCo render contexts; rendering again recreates them."""
    self._env.physics.free()

  def _obs(self, timestep, reward, is_first=False, is_last=False, is_terminal=False):
    obs = {
        key: np.asarray(value, np.float32).reshape(_vector_shape(np.shape(value)))
        for key, value in timestep.observation.items()}
    obs['image'] = self.render()
    obs['reward'] = np.float32(reward)
    obs['is_first'] = is_first
    obs['is_last'] = is_last
    obs['is_terminal'] = is_terminal
    return obs


def parse_task(name):
  """'walker_walk' -> ('walker', 'walk'); 'ball_in_cup_catch' -> ('ball_in_cup', 'catch').

  The domain is found among the suite's domain names, so multi-word domains
  and tasks split correctly; case is ignored (humanoid_cmu_run works).
  """
  tasks = {f'{domain}_{task}'.lower(): (domain, task) for domain, task in suite.ALL_TASKS}
  if name.lower() not in tasks:
    known = ', '.join(sorted(f'{domain}_{task}' for domain, task in suite.ALL_TASKS))
    raise ValueError(
        f"Unknown DMC task '{name}': use dmc_<domain>_<task> with one of: {known}.")
  return tasks[name.lower()]


def episode_flags(timestep):
  """(is_last, is_terminal) of a dm_env timestep: only a zero discount is terminal."""
  is_last = bool(timestep.last())
  return is_last, is_last and timestep.discount == 0


def _vector_shape(shape):
  return tuple(shape) if len(shape) else (1,)


def close_at_exit(env):
  """Calls env.close() before interpreter exit (holding no reference); close() is idempotent."""
  _OPEN.add(env)


def _close_all():
  for env in list(_OPEN):
    env.close()


# dm_control renders on a worker thread whose executor refuses work once the
# interpreter has begun to shut down, before `atexit` callbacks run; its own
# exit hook then prints tracebacks. Freeing the contexts from a threading exit
# hook makes the exit clean: these hooks run in reverse order of registration,
# so ours, registered after the executors' (imported above), runs first.
threading._register_atexit(_close_all)
