import gymnasium
import numpy as np
import pytest

from embodied.core import wrappers
from embodied.core.base import Env, Space, make_act_space, make_obs_space
from embodied.core.config import Config, ConfigError, load_yaml
from embodied.envs import SUITES, load_env, make_envs, registry
from embodied.envs.crafter import Crafter
from embodied.envs.dummy import Dummy
from embodied.envs.gym import Gym

CONFIG = Config(load_yaml('configs.yaml')['defaults'])


class DictObsEnv(gymnasium.Env):
  """Dict observations (image, vector, discrete, multibinary), MultiBinary actions."""

  observation_space = gymnasium.spaces.Dict({
      'pixels': gymnasium.spaces.Box(0, 255, (16, 16, 3), np.uint8),
      'position': gymnasium.spaces.Box(-np.inf, np.inf, (2,), np.float64),
      'room': gymnasium.spaces.Discrete(3, start=1),
      'switches': gymnasium.spaces.MultiBinary(4),
  })
  action_space = gymnasium.spaces.MultiBinary(3)

  def reset(self, seed=None, options=None):
    super().reset(seed=seed)
    self.t = 0
    return self._obs(), {}

  def step(self, action):
    self.last_action = action
    self.t += 1
    return self._obs(), float(action.sum()), self.t >= 4, False, {}

  def _obs(self):
    return {
        'pixels': np.full((16, 16, 3), self.t, np.uint8),
        'position': self.np_random.normal(size=2),
        'room': 1 + self.t % 3,
        'switches': np.array([1, 0, self.t % 2, 1], np.int8)}


class NanEnv(Env):
  """Emits a NaN reward at step 30 of every episode."""

  def __init__(self, task):
    self._step = 0

  @property
  def obs_space(self):
    return make_obs_space({})

  @property
  def act_space(self):
    return make_act_space({'action': Space(np.float32, (1,), -1, 1)})

  def step(self, action):
    self._step = 0 if action['reset'] else self._step + 1
    reward = np.nan if self._step == 30 else 0.0
    return {'reward': np.float32(reward), 'is_first': self._step == 0, 'is_last': False,
            'is_terminal': False}


# `module:EnvName-v0` tasks import this module, which registers the env.
gymnasium.register('DictObs-v0', entry_point=f'{__name__}:DictObsEnv')
DICT_TASK = f'gym_{__name__}:DictObs-v0'


def run_episode(env, policy, limit=10000):
  """Steps from a reset until is_last; returns the list of observations."""
  space = env.act_space['action']
  obs = [env.step({'action': np.zeros(space.shape, space.dtype), 'reset': True})]
  while not obs[-1]['is_last'] and len(obs) <= limit:
    obs.append(env.step({'action': policy(obs[-1]), 'reset': False}))
  return obs


def assert_obs_in_space(obs, spaces):
  assert set(obs) == set(spaces)
  for key, space in spaces.items():
    value = np.asarray(obs[key])
    assert value.dtype == space.dtype and value.shape == space.shape, key
    assert np.all(value >= space.low) and np.all(value <= space.high), key


@pytest.mark.parametrize('task', ['disc', 'cont'])
def test_dummy_obeys_contract_and_rewards_matching_the_target(task):
  env = Dummy(task, seed=1)
  assert env.obs_space['image'].shape == (64, 64, 3)
  assert env.act_space['action'] == (
      Space(np.int32, (), 0, 4) if task == 'disc' else Space(np.float32, (2,), -1, 1))

  def target(obs):  # Read the target from the vector observation.
    if task == 'disc':
      return np.int32(round(np.arctan2(obs['vector'][1], obs['vector'][0]) / (2 * np.pi) * 5) % 5)
    return obs['vector'][:2].copy()

  good = run_episode(env, target)
  assert len(good) == 101 and good[0]['is_first'] and good[-1]['is_last']
  assert good[0]['reward'] == 0
  assert not any(o['is_terminal'] for o in good) and not any(o['is_last'] for o in good[:-1])
  for obs in good:
    assert_obs_in_space(obs, env.obs_space)
  np.testing.assert_allclose([o['reward'] for o in good[1:]], 1, rtol=1e-6)
  wrong = (lambda o: np.int32((target(o) + 1) % 5)) if task == 'disc' else (
      lambda o: -np.sign(target(o)))
  bad = run_episode(Dummy(task, seed=1), wrong)
  assert np.mean([o['reward'] for o in bad[1:]]) < 0.5
  images = np.stack([o['image'] for o in good])
  assert len(np.unique(images.reshape(101, -1), axis=0)) > 1  # The image shows the target.


def test_dummy_is_deterministic_per_seed():
  act = {'action': np.int32(0), 'reset': True}
  first = [Dummy('disc', seed=s).step(act)['vector'] for s in (3, 3, 4)]
  np.testing.assert_array_equal(first[0], first[1])
  assert not np.array_equal(first[0], first[2])


def test_gym_cartpole_discrete_terminal_and_truncation():
  env = Gym('CartPole-v1', seed=0)
  assert env.act_space['action'] == Space(np.int32, (), 0, 1)
  assert env.obs_space['vector'].shape == (4,) and env.obs_space['vector'].dtype == np.float32
  obs = run_episode(env, lambda o: np.int32(0))  # Always pushing left drops the pole.
  assert len(obs) < 50 and obs[-1]['is_terminal'] and obs[-1]['is_last']
  for o in obs:
    assert_obs_in_space({k: v for k, v in o.items() if k != 'vector'},
                        {k: v for k, v in env.obs_space.items() if k != 'vector'})
  assert obs[1]['reward'] == np.float32(1.0) and obs[1]['reward'].dtype == np.float32
  short = Gym('CartPole-v1', seed=0, max_episode_steps=5)  # Gym's own TimeLimit.
  obs = run_episode(short, lambda o: np.int32(o['vector'][2] > 0))
  assert len(obs) == 6 and obs[-1]['is_last'] and not obs[-1]['is_terminal']
  assert obs[-1]['is_last'] and short.step({'action': np.int32(0), 'reset': False})['is_first']


def test_gym_seed_makes_first_episode_reproducible():
  firsts = [Gym('CartPole-v1', seed=s).step({'action': 0, 'reset': True})['vector']
            for s in (5, 5, 6)]
  np.testing.assert_array_equal(firsts[0], firsts[1])
  assert not np.array_equal(firsts[0], firsts[2])


def test_pendulum_actions_normalised_clipped_and_truncated_at_200():
  env = load_env('gym_Pendulum-v1', CONFIG)
  assert env.act_space['action'] == Space(np.float32, (1,), -1, 1)
  pendulum = env.gym_env.unwrapped
  obs = [env.step({'action': np.zeros(1, np.float32), 'reset': True})]
  for value, torque in [(0.5, 1.0), (-1.0, -2.0), (3.0, 2.0), (-7.0, -2.0)]:
    obs.append(env.step({'action': np.array([value], np.float32), 'reset': False}))
    np.testing.assert_allclose(pendulum.last_u, torque)
  while not obs[-1]['is_last']:
    obs.append(env.step({'action': np.zeros(1, np.float32), 'reset': False}))
  assert len(obs) == 201 and not obs[-1]['is_terminal']


def test_gym_dict_observations_and_multibinary_actions():
  env = Gym(f'{__name__}:DictObs-v0', seed=0)
  assert env.obs_space['pixels'] == Space(np.uint8, (16, 16, 3), 0, 255)
  assert env.obs_space['position'].dtype == np.float32
  assert env.obs_space['room'] == Space(np.float32, (3,), 0, 1)  # One-hot.
  assert env.obs_space['switches'] == Space(np.int8, (4,), 0, 1)
  assert env.act_space['action'] == Space(np.float32, (3,), 0, 1)
  obs = run_episode(env, lambda o: np.array([0.9, 0.2, 0.6], np.float32))
  assert len(obs) == 5 and obs[-1]['is_terminal']
  for o in obs:
    assert_obs_in_space(o, env.obs_space)
  np.testing.assert_array_equal(obs[1]['room'], [0, 1, 0])  # Room 2 of rooms 1..3.
  np.testing.assert_array_equal(env.gym_env.unwrapped.last_action, [1, 0, 1])
  assert obs[1]['reward'] == 2


def test_gym_image_observation_is_named_image():
  gym_env = gymnasium.make(f'{__name__}:DictObs-v0')
  pixels_only = gymnasium.wrappers.TransformObservation(
      gym_env, lambda obs: obs['pixels'], gym_env.observation_space['pixels'])
  env = Gym(pixels_only)
  assert 'image' in env.obs_space and 'vector' not in env.obs_space
  assert env.step({'action': np.zeros(3), 'reset': True})['image'].shape == (16, 16, 3)


def test_gym_module_form_in_a_spawned_process():
  config = CONFIG.update({'task': DICT_TASK, 'envs.amount': 1, 'envs.parallel': 'process'})
  env = make_envs(config)
  try:
    assert env.act_space['action'] == Space(np.float32, (3,), -1, 1)  # Normalised.
    obs = env.step({'action': np.ones((1, 3), np.float32), 'reset': np.ones(1, bool)})
    obs = env.step({'action': np.ones((1, 3), np.float32), 'reset': np.zeros(1, bool)})
    assert obs['pixels'].shape == (1, 64, 64, 3)  # Resized for the agent's CNN.
    assert obs['room'].shape == (1, 3)
    assert obs['reward'][0] == 3
  finally:
    env.close()


@pytest.mark.parametrize('task', ['reward', 'noreward'])
def test_crafter_observations_rewards_and_achievements(task):
  env = Crafter(task, seed=0)
  names = [k for k in env.obs_space if k.startswith('log_achievement_')]
  assert len(names) == 22 and 'log_achievement_collect_wood' in names
  assert env.act_space['action'] == Space(np.int32, (), 0, 16)
  rng = np.random.default_rng(0)
  obs = run_episode(env, lambda o: np.int32(rng.integers(0, 17)), limit=300)
  for o in obs:
    assert_obs_in_space(o, env.obs_space)
  rewards = np.array([o['reward'] for o in obs])
  true_rewards = np.array([o['log_reward'] for o in obs])
  assert np.any(true_rewards != 0)
  np.testing.assert_array_equal(rewards, true_rewards if task == 'reward' else 0)
  unlocked = sum(obs[-1][k] > 0 for k in names)
  assert unlocked >= 1 and unlocked == np.sum(true_rewards > 0.5)  # +1 per new kind.


def test_crafter_death_is_terminal_and_time_limit_is_not():
  env = Crafter('reward', length=5, seed=0)
  obs = run_episode(env, lambda o: np.int32(0))
  assert len(obs) == 6 and obs[-1]['is_last'] and not obs[-1]['is_terminal']
  env.step({'action': np.int32(0), 'reset': True})
  env._env._player.health = 0
  obs = env.step({'action': np.int32(0), 'reset': False})
  assert obs['is_last'] and obs['is_terminal']


def test_load_env_applies_action_wrappers_and_time_limit():
  config = CONFIG.update({'wrapper.length': 7})
  env = load_env('dummy_disc', config)
  assert env.act_space['action'] == Space(np.float32, (5,), 0, 1)
  obs = run_episode(env, lambda o: np.eye(5, dtype=np.float32)[2])
  assert len(obs) == 8 and not obs[-1]['is_terminal']
  cont = load_env('dummy_cont', CONFIG.update({'wrapper.discretize': 3}))
  assert cont.act_space['action'] == Space(np.float32, (9,), 0, 1)


def test_load_env_seeds_envs_by_index_and_mode():
  def targets(index, mode='train'):
    env = load_env('dummy_disc', CONFIG, index, mode)
    obs = run_episode(env, lambda o: np.zeros(5, np.float32))
    return np.stack([o['vector'][:2] for o in obs]).tobytes()
  assert targets(0) == targets(0)
  assert len({targets(i) for i in range(4)} | {targets(0, 'eval')}) == 5


def test_checks_flag_adds_check_spaces():
  env = load_env('dummy_disc', CONFIG.update({'wrapper.checks': True}))
  assert isinstance(env, wrappers.CheckSpaces)
  with pytest.raises(wrappers.EnvError, match="Action for env dummy_disc lacks key 'action'"):
    env.step({'reset': True})


@pytest.mark.parametrize('checks', [False, True])
def test_nan_reward_is_reported_at_its_step_even_without_checks(checks, monkeypatch):
  monkeypatch.setitem(SUITES, 'nan', f'{__name__}:NanEnv')
  env = load_env('nan_env', CONFIG.update({'wrapper.checks': checks}))
  act = {'action': np.zeros(1, np.float32), 'reset': True}
  for _ in range(30):
    env.step(act)
    act['reset'] = False
  with pytest.raises(wrappers.EnvError) as info:
    env.step(act)
  assert str(info.value) == (
      "Env nan_env returned observation 'reward' that is not finite (nan) "
      'at step 30 of the episode.')


def test_unknown_and_missing_suites_give_config_errors():
  with pytest.raises(ConfigError) as info:
    load_env('nosuite_foo', CONFIG)
  for suite in ('dummy', 'gym', 'crafter', 'dmc', 'atari'):
    assert suite in str(info.value)
  with pytest.raises(ConfigError, match=r"Suite 'dmlab' is not installed: .*scripts/install-dmlab\.sh"):
    load_env('dmlab_rooms', CONFIG)
  with pytest.raises(ConfigError, match="Cannot make gym env 'NoSuchEnv-v0'"):
    load_env('gym_NoSuchEnv-v0', CONFIG)


def test_suite_kwargs_come_from_env_config():
  kwargs = registry._suite_kwargs(CONFIG.flat, 'atari')
  assert kwargs['size'] == (64, 64) and kwargs['repeat'] == 4
  assert registry._suite_kwargs(CONFIG.flat, 'crafter') == {}


def test_space_helpers_add_the_step_keys_and_reset():
  obs = make_obs_space({'vector': Space(np.float32, (3,))})
  assert list(obs) == ['vector', 'reward', 'is_first', 'is_last', 'is_terminal']
  assert obs['vector'].shape == (3,) and obs['reward'] == Space(np.float32)
  assert all(obs[key] == Space(bool) for key in ('is_first', 'is_last', 'is_terminal'))
  act = make_act_space({'action': Space(np.int32, (), 0, 3)})
  assert list(act) == ['action', 'reset'] and act['reset'] == Space(bool)
