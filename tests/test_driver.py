"""Driver: step counting, resets after is_last, zeroed final actions, episodes, stats."""

import functools
import pathlib

import numpy as np
import pytest

from embodied.core.base import Space
from embodied.core.batch import BatchEnv
from embodied.core.config import Config, load_yaml
from embodied.core.driver import Driver
from embodied.core.random_agent import RandomAgent
from embodied.core.wrappers import OneHotAction
from embodied.envs.dummy import Dummy
from embodied.run.common import episode_metrics

ROOT = pathlib.Path(__file__).resolve().parent.parent
RUN = Config(load_yaml(ROOT / 'configs.yaml')['defaults']).run

LENGTH = 5  # Steps per Dummy episode: 1 reset step + LENGTH actions.


def make_dummy(seed, length=LENGTH):
  return OneHotAction(Dummy('disc', size=(8, 8), length=length, seed=seed))


class Recorder:
  """A BatchEnv that remembers every action dict it was sent."""

  def __init__(self, env):
    self.env = env
    self.sent = []

  def __len__(self):
    return len(self.env)

  def __getattr__(self, name):
    return getattr(self.env, name)

  def step(self, acts):
    self.sent.append({k: np.array(v) for k, v in acts.items()})
    return self.env.step(acts)


def make_env(amount=3, length=LENGTH):
  ctors = [functools.partial(make_dummy, seed, length) for seed in range(amount)]
  return Recorder(BatchEnv(ctors, parallel='none'))


def random_policy(env):
  return RandomAgent(env.obs_space, env.act_space).policy


def collect(driver):
  """Registers callbacks that store transitions and episodes per worker."""
  steps, episodes = [], []
  driver.on_step(lambda tran, worker: steps.append((worker, tran)))
  driver.on_episode(lambda ep, worker: episodes.append((worker, ep)))
  return steps, episodes


def test_steps_count_all_envs_and_round_up_to_whole_batches():
  env = make_env(amount=3)
  driver = Driver(env)
  steps, _ = collect(driver)
  driver(random_policy(env), steps=10)
  assert len(env.sent) == 4  # ceil(10 / 3) batched steps.
  assert len(steps) == 12
  assert [worker for worker, _ in steps[:6]] == [0, 1, 2, 0, 1, 2]


def test_episodes_stop_after_enough_episodes_end():
  env = make_env(amount=2)
  driver = Driver(env)
  _, episodes = collect(driver)
  driver(random_policy(env), episodes=3)
  # Both envs end their episodes on the same batched step, so 4 end together.
  assert len(episodes) == 4
  assert len(env.sent) == 2 * (LENGTH + 1)


def test_reset_on_first_step_and_after_is_last_with_zero_action():
  env = make_env(amount=2)
  driver = Driver(env)
  steps, _ = collect(driver)
  driver(random_policy(env), steps=2 * 3 * (LENGTH + 1))
  sent = env.sent
  assert sent[0]['reset'].all() and not sent[0]['action'].any()
  for t in range(1, len(sent)):
    obs_last = np.array([tran['is_last'] for w, tran in steps[2 * (t - 1): 2 * t]])
    np.testing.assert_array_equal(sent[t]['reset'], obs_last)
    for worker in range(2):
      action = sent[t]['action'][worker]
      if obs_last[worker]:
        assert not action.any()
      else:
        assert action.sum() == 1 and set(np.unique(action)) == {0, 1}
  assert sum(tran['is_last'] for _, tran in steps) == 2 * 3


def test_transition_holds_obs_and_action_chosen_from_it():
  env = make_env(amount=1)
  driver = Driver(env)
  steps, _ = collect(driver)
  seen = []

  def policy(obs, state):
    seen.append(obs['vector'].copy())
    action = np.zeros((1, 5), np.float32)
    action[0, len(seen) % 5] = 1
    return {'action': action, 'extra': np.full(1, len(seen))}, state

  driver(policy, steps=LENGTH + 1)
  for t, (_, tran) in enumerate(steps):
    np.testing.assert_array_equal(tran['vector'], seen[t][0])
    assert tran['extra'] == t + 1  # Other policy outputs are stored too.
    if tran['is_last']:
      assert not tran['action'].any()
    else:
      assert tran['action'][(t + 1) % 5] == 1
      # The env receives the same action on the next step.
      np.testing.assert_array_equal(env.sent[t + 1]['action'][0], tran['action'])


def test_episode_is_stacked_steps_of_one_worker():
  env = make_env(amount=2)
  driver = Driver(env)
  steps, episodes = collect(driver)
  driver(random_policy(env), episodes=2)
  assert len(episodes) == 2
  for worker, episode in episodes:
    own = [tran for w, tran in steps if w == worker]
    assert len(own) == LENGTH + 1
    assert episode['image'].shape == (LENGTH + 1, 8, 8, 3)
    assert episode['is_first'][0] and not episode['is_first'][1:].any()
    assert episode['is_last'][-1] and not episode['is_last'][:-1].any()
    for key in episode:
      np.testing.assert_array_equal(episode[key], np.stack([t[key] for t in own]))


def test_policy_state_is_kept_across_calls_and_cleared_by_reset():
  env = make_env(amount=2)
  driver = Driver(env)
  states = []

  def policy(obs, state):
    states.append(state)
    return {'action': np.eye(5, dtype=np.float32)[[0, 1]]}, (state or 0) + 1

  driver(policy, steps=2)
  driver(policy, steps=2)
  driver.reset()
  driver(policy, steps=2)
  assert states == [None, 1, None]
  assert env.sent[-1]['reset'].all()


def test_missing_action_key_is_an_error_naming_it():
  env = make_env(amount=1)
  driver = Driver(env)
  with pytest.raises(KeyError, match='action'):
    driver(lambda obs, state: ({}, state), steps=1)


class Scripted:
  """One env whose is_first / is_last flags follow a script (an env restart)."""

  def __init__(self, flags):
    self._flags = iter(flags)

  def __len__(self):
    return 1

  @property
  def act_space(self):
    return {'action': Space(np.float32, (2,), -1, 1), 'reset': Space(bool)}

  def step(self, acts):
    first, last = next(self._flags)
    return {'reward': np.ones(1, np.float32), 'is_first': np.array([first]),
            'is_last': np.array([last]), 'is_terminal': np.zeros(1, bool)}


def test_new_episode_without_is_last_drops_the_partial_one():
  flags = [(1, 0), (0, 0), (1, 0), (0, 0), (0, 1)]
  driver = Driver(Scripted(flags))
  _, episodes = collect(driver)
  driver(lambda obs, state: ({'action': np.ones((1, 2), np.float32)}, state), steps=5)
  assert len(episodes) == 1
  assert len(episodes[0][1]['reward']) == 3


def test_episode_metrics_score_length_and_log_keys():
  env = make_env(amount=1)
  driver = Driver(env)
  _, episodes = collect(driver)
  driver(random_policy(env), episodes=4)
  args = RUN.update(log_keys_sum='^log_match$', log_keys_mean='^log_', log_keys_max='^log_m',
                    log_keys_video=['image'], log_zeros=True)
  for _, episode in episodes:
    metrics = episode_metrics(episode, args)
    # Dummy's log_match equals the reward, so its sum is the score.
    assert metrics['score'] == pytest.approx(episode['reward'].sum())
    assert metrics['length'] == LENGTH
    assert metrics['sum_match'] == pytest.approx(metrics['score'])
    assert metrics['mean_match'] == pytest.approx(episode['log_match'].mean())
    assert metrics['max_match'] == episode['log_match'].max()
    assert metrics['policy_image'].shape == (LENGTH + 1, 8, 8, 3)


def test_episode_metrics_skip_zeros_and_unmatched_keys():
  episode = {'reward': np.zeros(4, np.float32), 'log_zero': np.zeros(4),
             'log_one': np.ones(4), 'image': np.zeros((4, 2, 2, 3), np.uint8)}
  args = RUN.update(log_keys_sum='^log_', log_keys_mean='^$', log_keys_max='^log_one',
                    log_keys_video=[], log_zeros=False)
  metrics = episode_metrics(episode, args)
  assert metrics == {'score': 0.0, 'length': 3, 'sum_one': 4.0, 'max_one': 1.0}
  metrics = episode_metrics(episode, args.update(log_zeros=True))
  assert metrics['sum_zero'] == 0.0 and 'max_zero' not in metrics
