import numpy as np
import pytest
from PIL import Image

from embodied.core import wrappers
from embodied.core.base import Env, Space


class Recorder(Env):
  """Records the actions it receives; observations come from `make_obs(step)`."""

  def __init__(self, act_space, make_obs=None, obs_space=None, length=1000):
    self._act_space = {**act_space, 'reset': Space(bool)}
    self._obs_space = obs_space or {
        'vector': Space(np.float32, (2,)), 'reward': Space(np.float32),
        'is_first': Space(bool), 'is_last': Space(bool), 'is_terminal': Space(bool)}
    self._make_obs = make_obs or self._default_obs
    self._length = length
    self.actions = []
    self.resets = 0
    self.step_count = 0

  @property
  def obs_space(self):
    return self._obs_space

  @property
  def act_space(self):
    return self._act_space

  def step(self, action):
    self.actions.append(action)
    if action['reset']:
      self.resets += 1
      self.step_count = 0
    else:
      self.step_count += 1
    return self._make_obs(self.step_count)

  def _default_obs(self, step):
    return {
        'vector': np.array([step, self.resets], np.float32),
        'reward': np.float32(step), 'is_first': step == 0,
        'is_last': step >= self._length, 'is_terminal': step >= self._length}


def test_onehot_action_maps_argmax_and_zero_vector_to_index():
  inner = Recorder({'action': Space(np.int32, (), 2, 5)})
  env = wrappers.OneHotAction(inner)
  assert env.act_space['action'] == Space(np.float32, (4,), 0, 1)
  env.step({'action': np.array([0, 0, 1, 0], np.float32), 'reset': False})
  assert inner.actions[-1]['action'] == 4
  env.step({'action': np.array([0.1, 0.7, 0.2, 0.0], np.float32), 'reset': False})
  assert inner.actions[-1]['action'] == 3
  env.step({'action': np.zeros(4, np.float32), 'reset': True})  # Driver's is_last action.
  assert inner.actions[-1]['action'] == 2
  with pytest.raises(ValueError, match=r'shape \(4,\), got shape \(3,\)'):
    env.step({'action': np.zeros(3), 'reset': False})


def test_onehot_action_rejects_continuous_space():
  with pytest.raises(ValueError, match='scalar int action'):
    wrappers.OneHotAction(Recorder({'action': Space(np.float32, (2,), -1, 1)}))


def test_normalize_action_maps_unit_range_to_bounds():
  space = Space(np.float32, (3,), [0, -4, -np.inf], [10, 2, np.inf])
  inner = Recorder({'action': space})
  env = wrappers.NormalizeAction(inner)
  np.testing.assert_array_equal(env.act_space['action'].low, [-1, -1, -np.inf])
  np.testing.assert_array_equal(env.act_space['action'].high, [1, 1, np.inf])
  for value, expected in [(-1, [0, -4]), (1, [10, 2]), (0, [5, -1]), (0.5, [7.5, 0.5])]:
    env.step({'action': np.array([value, value, 7], np.float32), 'reset': False})
    np.testing.assert_allclose(inner.actions[-1]['action'], expected + [7], rtol=1e-6)


def test_clip_action_clips_only_what_the_env_sees():
  inner = Recorder({'action': Space(np.float32, (2,), -1, 1)})
  env = wrappers.ClipAction(inner, 'action', -1, 1)
  action = np.array([-3.0, 0.25], np.float32)
  env.step({'action': action, 'reset': False})
  np.testing.assert_array_equal(inner.actions[-1]['action'], [-1, 0.25])
  np.testing.assert_array_equal(action, [-3.0, 0.25])  # The caller's copy is kept.


def test_discretize_indexes_a_grid_of_values():
  inner = Recorder({'action': Space(np.float32, (2,), [-1, 0], [1, 4])})
  env = wrappers.Discretize(inner, 'action', 3)
  assert env.act_space['action'] == Space(np.int32, (), 0, 8)
  for index in range(9):
    env.step({'action': np.int32(index), 'reset': False})
    first, second = divmod(index, 3)
    expected = [[-1, 0, 1][first], [0, 2, 4][second]]
    np.testing.assert_allclose(inner.actions[-1]['action'], expected)
  onehot = wrappers.OneHotAction(env)
  onehot.step({'action': np.eye(9)[5], 'reset': False})
  np.testing.assert_allclose(inner.actions[-1]['action'], [0, 4])


def test_time_limit_ends_episode_without_terminal_and_resets():
  inner = Recorder({'action': Space(np.float32, (1,))})
  env = wrappers.TimeLimit(inner, 3)
  act = {'action': np.zeros(1, np.float32), 'reset': False}
  obs = [env.step({**act, 'reset': True})] + [env.step(act) for _ in range(4)]
  assert [o['is_first'] for o in obs] == [True, False, False, False, True]
  assert [o['is_last'] for o in obs] == [False, False, False, True, False]
  assert not any(o['is_terminal'] for o in obs)
  assert inner.resets == 2  # Forced although the caller sent reset=False.


def test_time_limit_without_reset_continues_the_env():
  inner = Recorder({'action': Space(np.float32, (1,))})
  env = wrappers.TimeLimit(inner, 2, reset=False)
  act = {'action': np.zeros(1, np.float32), 'reset': False}
  obs = [env.step({**act, 'reset': True})] + [env.step(act) for _ in range(2)]
  assert obs[-1]['is_last']
  first = env.step({**act, 'reset': True})  # What the driver sends after is_last.
  assert first['is_first'] and not first['is_last'] and first['reward'] == 0
  np.testing.assert_array_equal(first['vector'], obs[-1]['vector'])
  assert inner.resets == 1
  after = env.step(act)
  assert after['vector'][0] == 3  # The inner env kept counting its steps.


def test_time_limit_resets_when_the_env_ends_first_and_zero_is_off():
  inner = Recorder({'action': Space(np.float32, (1,))}, length=2)
  env = wrappers.TimeLimit(inner, 10, reset=False)
  act = {'action': np.zeros(1, np.float32), 'reset': False}
  obs = [env.step({**act, 'reset': True}), env.step(act), env.step(act), env.step(act)]
  assert obs[2]['is_last'] and obs[2]['is_terminal']
  assert obs[3]['is_first'] and inner.resets == 2
  off = wrappers.TimeLimit(Recorder({'action': Space(np.float32, (1,))}), 0)
  off.step({**act, 'reset': True})
  assert not any(off.step(act)['is_last'] for _ in range(50))


def test_resize_image_matches_pil_nearest():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 255, (30, 50, 3), dtype=np.uint8)
  obs_space = {
      'image': Space(np.uint8, (30, 50, 3)), 'small': Space(np.uint8, (8, 8, 3)),
      'reward': Space(np.float32), 'is_first': Space(bool), 'is_last': Space(bool),
      'is_terminal': Space(bool)}

  def make_obs(step):
    return {'image': image, 'small': image[:8, :8], 'reward': np.float32(0),
            'is_first': True, 'is_last': False, 'is_terminal': False}

  for size in [(8, 8), (64, 40)]:
    env = wrappers.ResizeImage(Recorder({}, make_obs, obs_space), size)
    assert env.obs_space['image'] == Space(np.uint8, size + (3,))
    obs = env.step({'reset': True})
    expected = np.asarray(Image.fromarray(image).resize(size[::-1], Image.NEAREST))
    np.testing.assert_array_equal(obs['image'], expected)
    if size == (8, 8):  # Images of the right size are left alone.
      assert env.obs_space['small'] == obs_space['small']
      np.testing.assert_array_equal(obs['small'], image[:8, :8])


def _faulty_env(fault_step, fault):
  """An env whose observation at `fault_step` is changed by `fault(obs)`."""
  obs_space = {
      'vector': Space(np.float32, (4,)), 'count': Space(np.int32, ()),
      'reward': Space(np.float32), 'is_first': Space(bool), 'is_last': Space(bool),
      'is_terminal': Space(bool)}

  def make_obs(step):
    obs = {'vector': np.zeros(4, np.float32), 'count': np.int32(step),
           'reward': np.float32(1), 'is_first': step == 0, 'is_last': False,
           'is_terminal': False}
    return fault(obs) if step == fault_step else obs

  return Recorder({'action': Space(np.float32, (2,))}, make_obs, obs_space)


def _run(env, steps):
  act = {'action': np.zeros(2, np.float32), 'reset': True}
  for _ in range(steps + 1):
    env.step(act)
    act = {**act, 'reset': False}


@pytest.mark.parametrize('fault, message', [
    (lambda o: {**o, 'vector': np.zeros(3, np.float32)},
     r"Env gym_Test-v0 returned observation 'vector' with shape \(3,\), expected "
     r"\(4,\) \(Space\(dtype=float32, shape=\(4,\)"),
    (lambda o: {**o, 'vector': np.zeros(4, np.float64)},
     r"'vector' with dtype float64, expected float32"),
    (lambda o: {**o, 'count': np.int64(3)}, r"'count' with dtype int64, expected int32"),
    (lambda o: {**o, 'reward': np.float32(np.nan)},
     r"'reward' that is not finite \(nan\) at step 30 of the episode"),
    (lambda o: {**o, 'vector': np.array([0, np.inf, 0, 0], np.float32)},
     r"'vector' that is not finite \(inf\) at step 30"),
    (lambda o: {k: v for k, v in o.items() if k != 'count'}, r"missing \['count'\]"),
    (lambda o: {**o, 'extra': 1}, r"unexpected \['extra'\]"),
])
def test_check_spaces_names_env_key_expected_and_actual(fault, message):
  env = wrappers.CheckSpaces(_faulty_env(30, fault), 'gym_Test-v0')
  _run(env, 29)  # Steps before the fault pass.
  with pytest.raises(wrappers.EnvError, match=message):
    env.step({'action': np.zeros(2, np.float32), 'reset': False})


def test_check_spaces_checks_action_keys_and_shapes():
  env = wrappers.CheckSpaces(_faulty_env(-1, None))
  with pytest.raises(wrappers.EnvError, match=r"lacks key 'action'"):
    env.step({'reset': True})
  with pytest.raises(wrappers.EnvError, match=r"'action' for env Recorder has shape \(3,\)"):
    env.step({'action': np.zeros(3), 'reset': True})


def test_check_finite_catches_nan_at_its_step_and_ignores_ints():
  env = wrappers.CheckFinite(_faulty_env(7, lambda o: {**o, 'reward': np.float32(np.nan)}))
  _run(env, 6)
  with pytest.raises(wrappers.EnvError, match=r"Env Recorder .*'reward'.*\(nan\) at step 7"):
    env.step({'action': np.zeros(2, np.float32), 'reset': False})
  assert issubclass(wrappers.EnvError, ValueError)


def test_wrappers_forward_spaces_close_and_attributes():
  inner = Recorder({'action': Space(np.int32, (), 0, 2)})
  inner.closed = False
  inner.close = lambda: setattr(inner, 'closed', True)
  env = wrappers.CheckFinite(wrappers.TimeLimit(wrappers.OneHotAction(inner), 5))
  assert env.obs_space == inner.obs_space
  assert env.act_space['action'].shape == (3,)
  assert env.resets == 0  # Unknown attributes reach the inner env.
  env.close()
  assert inner.closed
