"""The optional env suites, run for real: DMC (MuJoCo, rendered), Atari (ALE),
Memory Maze and bsuite; and the message for suites without an adapter.

Tests of a suite are skipped when its packages are not installed: pip install
.[dmc] / .[atari] (plus libosmesa6 for DMC on a CPU machine), or
scripts/install-memmaze.sh / scripts/install-bsuite.sh.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from embodied.core.config import ConfigError, load_config, load_yaml
from embodied.envs import load_env, make_envs, registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = load_yaml(os.path.join(ROOT, 'configs.yaml'))


def config_for(*argv):
  config, _ = load_config(CONFIGS, list(argv))
  return config


def reset_act(env):
  act = {key: np.zeros(space.shape, space.dtype) for key, space in env.act_space.items()}
  return {**act, 'reset': True}


def random_act(env, rng):
  """A random agent-side action: uniform in [-1, 1] (normalised) or one-hot (discrete)."""
  space = env.act_space['action']
  if np.all(space.low == -1):
    action = rng.uniform(-1, 1, space.shape).astype(np.float32)
  else:
    action = np.eye(space.shape[0], dtype=np.float32)[rng.integers(space.shape[0])]
  return {'action': action, 'reset': False}


# DMC ------------------------------------------------------------------------

@pytest.fixture(scope='module')
def dmc():
  pytest.importorskip('dm_control')
  try:
    from embodied.envs import dmc
  except ImportError as e:
    if 'OSMesa' not in str(e):
      raise
    pytest.skip(str(e))  # No libosmesa6 on this machine (CI installs it).
  return dmc


def test_dmc_vision_config_env_spaces_and_steps(dmc):
  config = config_for('--task', 'dmc_walker_walk', '--configs', 'dmc_vision')
  env = load_env(config.task, config)
  try:
    obs_space, act_space = env.obs_space, env.act_space
    assert set(obs_space) == {
        'orientations', 'height', 'velocity', 'image',
        'reward', 'is_first', 'is_last', 'is_terminal'}
    assert obs_space['orientations'].shape == (14,)
    assert obs_space['height'].shape == (1,)  # A scalar observation as a vector.
    assert obs_space['image'].shape == (64, 64, 3) and obs_space['image'].dtype == np.uint8
    # Walker's 6 motors, normalised to [-1, 1] for the agent.
    assert act_space['action'].shape == (6,)
    assert np.all(act_space['action'].low == -1) and np.all(act_space['action'].high == 1)

    obs = env.step(reset_act(env))
    assert obs['is_first'] and not obs['is_last'] and obs['reward'] == 0
    rng = np.random.default_rng(0)
    images = [obs['image']]
    for _ in range(5):
      obs = env.step(random_act(env, rng))
      for key, space in obs_space.items():
        value = np.asarray(obs[key])
        assert value.dtype == space.dtype and value.shape == space.shape, key
      assert np.isfinite(obs['reward']) and 0 <= obs['reward'] <= 2  # Repeat 2 of [0, 1].
      assert not obs['is_first'] and not obs['is_last'] and not obs['is_terminal']
      images.append(obs['image'])
    assert images[-1].std() > 0  # A real rendering, not a blank frame.
    assert np.abs(images[-1].astype(int) - images[0]).max() > 0  # The walker moved.
  finally:
    env.close()


def test_dmc_task_names_split_at_known_domains(dmc):
  assert dmc.parse_task('walker_walk') == ('walker', 'walk')
  assert dmc.parse_task('ball_in_cup_catch') == ('ball_in_cup', 'catch')
  assert dmc.parse_task('cartpole_swingup_sparse') == ('cartpole', 'swingup_sparse')
  assert dmc.parse_task('point_mass_easy') == ('point_mass', 'easy')
  assert dmc.parse_task('humanoid_cmu_run') == ('humanoid_CMU', 'run')
  with pytest.raises(ValueError, match="Unknown DMC task 'walker_fly'.*walker_walk"):
    dmc.parse_task('walker_fly')


def test_dmc_time_limit_is_truncation_and_zero_discount_terminal(dmc):
  import dm_env
  obs = {'height': np.zeros(())}
  assert dmc.episode_flags(dm_env.transition(1.0, obs)) == (False, False)
  # dm_control ends an episode at its time limit with discount 1.
  assert dmc.episode_flags(dm_env.truncation(1.0, obs)) == (True, False)
  assert dmc.episode_flags(dm_env.termination(1.0, obs)) == (True, True)


def test_dmc_action_repeat_sums_rewards_and_seed_reproduces(dmc):
  def rollout(repeat, seed):
    env = dmc.DMC('cartpole_balance', repeat=repeat, size=(16, 16), seed=seed)
    env.step({'action': np.zeros(1, np.float32), 'reset': True})
    rewards = [env.step({'action': np.full(1, 0.3, np.float32), 'reset': False})
               for _ in range(4)]
    env.close()
    return [obs['reward'] for obs in rewards], rewards[-1]['position']

  single, position = rollout(1, seed=3)
  double, _ = rollout(2, seed=3)
  again, position_again = rollout(1, seed=3)
  assert single == again and np.array_equal(position, position_again)
  # Two physics steps per agent step: the sum of the single-step rewards.
  np.testing.assert_allclose(double[:2], [single[0] + single[1], single[2] + single[3]],
                             rtol=1e-6)


def test_dmc_quadruped_default_camera_and_explicit_camera(dmc):
  default = dmc.DMC('quadruped_walk', size=(24, 32), seed=0)
  fixed = dmc.DMC('quadruped_walk', size=(24, 32), camera=0, seed=0)
  try:
    first = default.step({'action': np.zeros(12, np.float32), 'reset': True})['image']
    second = fixed.step({'action': np.zeros(12, np.float32), 'reset': True})['image']
    assert first.shape == (24, 32, 3)
    assert not np.array_equal(first, second)  # Camera 2 (default) differs from camera 0.
  finally:
    default.close()
    fixed.close()


@pytest.mark.slow
def test_dmc_full_episode_ends_by_time_limit(dmc):
  config = config_for('--task', 'dmc_walker_walk', '--configs', 'dmc_vision')
  env = load_env(config.task, config)
  rng = np.random.default_rng(0)
  env.step(reset_act(env))
  flags = [(obs['is_last'], obs['is_terminal'])
           for obs in (env.step(random_act(env, rng)) for _ in range(500))]
  env.close()
  # 1000 control steps / repeat 2: the 500th step is the last, and not terminal.
  assert flags[:-1] == [(False, False)] * 499 and flags[-1] == (True, False)


def test_dmc_process_envs_step_and_close(dmc):
  config = config_for(
      '--task', 'dmc_cartpole_swingup', '--configs', 'dmc_vision',
      '--envs.amount', '2', '--env.dmc.size', '32,32')
  envs = make_envs(config)
  try:
    acts = {'action': np.zeros((2, 1), np.float32), 'reset': np.ones(2, bool)}
    obs = envs.step(acts)
    assert obs['image'].shape == (2, 32, 32, 3) and obs['is_first'].all()
    obs = envs.step({**acts, 'reset': np.zeros(2, bool)})
    assert not obs['is_first'].any()
    # Different seeds per env: the initial poles differ.
    assert not np.array_equal(obs['position'][0], obs['position'][1])
  finally:
    envs.close()


def test_dmc_process_exits_without_output_on_stderr(dmc):
  # Neither close() nor interpreter exit may print render-context errors.
  code = (
      'import numpy as np\n'
      'from embodied.envs.dmc import DMC\n'
      'for close in (True, False):\n'
      '  env = DMC("walker_walk", seed=0)\n'
      '  env.step({"action": np.zeros(6, np.float32), "reset": True})\n'
      '  env.step({"action": np.ones(6, np.float32), "reset": False})\n'
      '  if close:\n'
      '    env.close()\n')
  result = subprocess.run(
      [sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  assert result.stderr == ''


# Atari ----------------------------------------------------------------------

@pytest.fixture(scope='module')
def atari():
  pytest.importorskip('ale_py')
  pytest.importorskip('cv2')
  from embodied.envs import atari
  return atari


def play(env, actions, reset_every_last=True):
  """Steps raw Atari env with int actions; returns the observations after the reset."""
  observations = [env.step({'action': 0, 'reset': True})]
  for action in actions:
    if observations[-1]['is_last'] and reset_every_last:
      observations.append(env.step({'action': 0, 'reset': True}))
    observations.append(env.step({'action': action, 'reset': False}))
  return observations


def test_atari_config_env_image_and_actions(atari):
  config = config_for('--configs', 'atari', '--envs.amount', '1')
  env = load_env(config.task, config)
  assert env.obs_space['image'].shape == (64, 64, 3)
  assert env.act_space['action'].shape == (18,)  # actions: all, one-hot for the agent.
  rng = np.random.default_rng(0)
  obs = env.step(reset_act(env))
  assert obs['image'].shape == (64, 64, 3) and obs['image'].dtype == np.uint8
  for _ in range(3):
    obs = env.step(random_act(env, rng))
    assert obs['image'].shape == (64, 64, 3) and np.isfinite(obs['reward'])
  env.close()

  config = config_for('--configs', 'atari100k')
  assert load_env(config.task, config).act_space['action'].shape == (6,)  # Pong's needed.


def test_atari_gray_and_action_sets(atari):
  gray = atari.Atari('pong', gray=True, seed=0)
  assert gray.obs_space['image'].shape == (64, 64, 1)
  assert play(gray, [0])[-1]['image'].shape == (64, 64, 1)
  assert atari.Atari('pong', actions='all').act_space['action'].high == 17
  assert atari.Atari('pong', actions='needed').act_space['action'].high == 5
  with pytest.raises(ValueError, match="lives='never'.*unused, discount, reset"):
    atari.Atari('pong', lives='never')


def test_atari_max_pool_of_last_two_frames(atari):
  frames = [np.array([[9, 0]]), np.array([[1, 5]]), np.array([[3, 2]])]
  np.testing.assert_array_equal(atari.max_pool(frames), [[3, 5]])  # Not the first frame.
  np.testing.assert_array_equal(atari.max_pool(frames[:1]), [[9, 0]])


def test_atari_step_pools_the_last_two_of_its_repeated_frames(atari):
  # At full resolution there is no resize: each repeat-3 image must be the
  # maximum of frames 2 and 3 that a repeat-1 env sees for the same actions.
  kwargs = dict(size=(210, 160), sticky=False, actions='needed', seed=0)
  actions = np.random.default_rng(1).integers(0, 4, 30)
  pooled = play(atari.Atari('breakout', repeat=3, **kwargs), actions)
  single = play(atari.Atari('breakout', repeat=1, **kwargs), np.repeat(actions, 3))
  frames = np.stack([obs['image'] for obs in single[1:]]).reshape(30, 3, 210, 160, 3)
  expected = np.maximum(frames[:, 1], frames[:, 2])
  assert np.array_equal(np.stack([obs['image'] for obs in pooled[1:]]), expected)
  assert not np.array_equal(expected, frames[:, 2])  # Pooling changed some frames.


def test_atari_resize_methods_keep_content(atari):
  flat = np.full((210, 160), 77, np.uint8)
  ramp = np.broadcast_to(np.linspace(0, 255, 160).astype(np.uint8), (210, 160))
  for method in ('opencv', 'pillow'):
    assert np.all(atari.resize(flat, (64, 48), method) == 77)
    resized = atari.resize(ramp, (64, 48), method)
    assert resized.shape == (64, 48) and resized.dtype == np.uint8
    assert np.all(np.diff(resized.astype(int), axis=1) > 0)  # Still a left-right ramp.
    np.testing.assert_allclose(resized.mean(), ramp.mean(), atol=2)
  with pytest.raises(ValueError, match="resize='cubic' is not one of opencv, pillow"):
    atari.Atari('pong', resize='cubic')


def test_atari_seed_reproduces_with_and_without_sticky_actions(atari):
  actions = np.random.default_rng(0).integers(0, 4, 60)

  def images(seed, sticky):
    env = atari.Atari('breakout', sticky=sticky, actions='needed', seed=seed)
    return np.stack([obs['image'] for obs in play(env, actions)])

  assert np.array_equal(images(1, False), images(1, False))
  assert np.array_equal(images(1, False), images(2, False))  # Deterministic game.
  assert np.array_equal(images(1, True), images(1, True))
  assert not np.array_equal(images(1, True), images(2, True))  # Sticky draws differ.


def test_atari_noops_randomise_the_start(atari):
  def image_after(noops, seed):
    env = atari.Atari('pong', sticky=False, noops=noops, seed=seed)
    return play(env, [0] * 20)[-1]['image'].tobytes()

  assert len({image_after(0, seed) for seed in range(4)}) == 1
  assert len({image_after(30, seed) for seed in range(4)}) > 1


def test_atari_lives_modes(atari):
  # Breakout with FIRE only: the ball launches and the unmoving paddle misses
  # it five times; sticky actions off, so every mode plays the same game.
  def episodes(lives):
    env = atari.Atari('breakout', sticky=False, lives=lives, seed=0)
    steps, episodes, terminals = 0, [[]], 0
    obs = env.step({'action': 1, 'reset': True})
    while True:
      obs = env.step({'action': 1, 'reset': False})
      episodes[-1].append(obs['image'])
      terminals += obs['is_terminal']
      if obs['is_last']:
        if not obs['is_terminal'] or len(episodes) == 5 or lives != 'reset':
          return episodes, terminals
        first = env.step({'action': 1, 'reset': True})
        assert first['is_first'] and np.array_equal(first['image'], obs['image'])
        episodes.append([])
      steps += 1
      assert steps < 5000

  unused, unused_terminals = episodes('unused')
  discount, discount_terminals = episodes('discount')
  reset, reset_terminals = episodes('reset')
  assert len(unused) == len(discount) == 1 and len(reset) == 5
  assert unused_terminals == 1 and discount_terminals == 5 and reset_terminals == 5
  # The same game, cut into five episodes at the life losses.
  assert np.array_equal(np.stack(unused[0]), np.stack(discount[0]))
  assert np.array_equal(np.stack(unused[0]), np.concatenate(reset))


def test_atari_frame_limit_is_truncation(atari):
  env = atari.Atari('pong', repeat=4, length=100, sticky=False, seed=0)
  observations = play(env, [0] * 25, reset_every_last=False)
  flags = [(obs['is_last'], obs['is_terminal']) for obs in observations[1:]]
  assert flags == [(False, False)] * 24 + [(True, False)]  # 25 steps of 4 frames.
  assert env.step({'action': 0, 'reset': False})['is_first']  # Then a new game.


def test_atari_game_names(atari):
  assert atari.rom_name('ms_pacman') == 'ms_pacman'
  assert atari.rom_name('MsPacman') == 'ms_pacman'
  with pytest.raises(ValueError, match="Unknown Atari game 'pongg'.*Did you mean pong"):
    atari.rom_name('pongg')


# Memory Maze ----------------------------------------------------------------

@pytest.fixture(scope='module')
def memmaze():
  pytest.importorskip('memory_maze')  # Its package import also needs the legacy gym.
  from embodied.envs import memmaze
  return memmaze


def test_memmaze_spaces_steps_and_seeds(memmaze):
  # Building a maze takes seconds, so this test builds only three.
  config = config_for('--task', 'memmaze_9x9', '--seed', '5')
  env = load_env(config.task, config)
  try:
    assert env.obs_space['image'].shape == (64, 64, 3)
    assert env.obs_space['target_color'].shape == (3,)
    assert env.act_space['action'].shape == (6,)  # One-hot of 6 discrete actions.
    rng = np.random.default_rng(0)
    first = env.step(reset_act(env))
    assert first['is_first'] and first['image'].dtype == np.uint8 and first['image'].std() > 0
    for _ in range(5):
      obs = env.step(random_act(env, rng))
      assert not obs['is_last'] and np.isfinite(obs['reward'])
  finally:
    env.close()

  def first_image(seed):
    env = memmaze.MemMaze('9x9', seed=seed)
    image = env.step({'action': 0, 'reset': True})['image']
    env.close()
    return image

  seed = registry.env_seed(5, 0)  # The seed load_env gave env 0 of run seed 5.
  assert np.array_equal(first_image(seed), first['image'])
  assert not np.array_equal(first_image(seed + 1), first['image'])  # Another maze.
  with pytest.raises(ValueError, match="Unknown Memory Maze task '8x8'.*9x9, 11x11"):
    memmaze.MemMaze('8x8')


@pytest.mark.slow
def test_memmaze_episode_ends_by_time_limit(memmaze):
  env = memmaze.MemMaze('9x9', seed=0)
  env.step({'action': 0, 'reset': True})
  flags = [(obs['is_last'], obs['is_terminal'])
           for obs in (env.step({'action': 1, 'reset': False}) for _ in range(1000))]
  env.close()
  assert flags[:-1] == [(False, False)] * 999 and flags[-1] == (True, False)


# bsuite ---------------------------------------------------------------------

@pytest.fixture(scope='module')
def bsuite_env():
  pytest.importorskip('bsuite')
  from embodied.envs import bsuite
  return bsuite


def test_bsuite_catch_episode_through_load_env(bsuite_env):
  config = config_for('--configs', 'bsuite', '--task', 'bsuite_catch/0')
  env = load_env(config.task, config)
  assert env.obs_space['vector'].shape == (50,)  # The 10x5 board, flattened.
  assert env.act_space['action'].shape == (3,)
  obs = env.step(reset_act(env))
  assert obs['is_first'] and obs['vector'].sum() == 2  # Ball and paddle.
  stay = {'action': np.eye(3, dtype=np.float32)[1], 'reset': False}
  episode = [env.step(stay) for _ in range(9)]
  # The ball falls 9 rows; only the last step is rewarded (+1 or -1) and terminal.
  assert [obs['is_last'] for obs in episode] == [False] * 8 + [True]
  assert episode[-1]['is_terminal'] and abs(episode[-1]['reward']) == 1
  assert all(obs['reward'] == 0 for obs in episode[:-1])
  assert env.step(stay)['is_first']


def test_bsuite_ids(bsuite_env):
  assert bsuite_env.BSuite('cartpole/0').num_episodes == 1000
  with pytest.raises(ValueError, match="Unknown bsuite id 'catch/99'.*catch, catch_noise"):
    bsuite_env.BSuite('catch/99')


# Suites without an adapter --------------------------------------------------

@pytest.mark.parametrize('suite', ['dmlab', 'minecraft', 'procgen', 'loconav'])
def test_uninstalled_suite_points_to_its_install_script(suite):
  config = config_for()
  with pytest.raises(ConfigError, match=rf'scripts/install-{suite}\.sh') as info:
    load_env(f'{suite}_task', config)
  script = os.path.join(ROOT, 'scripts', f'install-{suite}.sh')
  assert os.path.exists(script), info.value
