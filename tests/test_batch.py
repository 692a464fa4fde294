import functools
import os
import signal
import time

import numpy as np
import pytest

from embodied.core.batch import BatchEnv, EnvProcessDied
from embodied.core.config import Config, load_yaml
from embodied.envs import make_envs
from embodied.envs.dummy import Dummy


class FailingDummy(Dummy):
  """Raises a LookupError (a type the parent must see again) on step `fail_at`."""

  def __init__(self, fail_at, seed=None):
    super().__init__('disc', seed=seed)
    self._fail_at = fail_at
    self._count = 0

  def step(self, action):
    self._count += 1
    if self._count == self._fail_at:
      raise LookupError(f'broken on call {self._count}')
    return super().step(action)


def broken_ctor():
  raise RuntimeError('cannot build this env')


def dummy_ctors(amount):
  return [functools.partial(Dummy, 'disc', seed=i) for i in range(amount)]


def acts(amount, reset, rng):
  return {'action': rng.integers(0, 5, amount).astype(np.int32),
          'reset': np.full(amount, reset)}


def rollout(env, steps, seed=0):
  rng = np.random.default_rng(seed)
  result = [env.step(acts(len(env), True, rng))]
  for _ in range(steps):
    result.append(env.step(acts(len(env), False, rng)))
  return result


def test_modes_give_the_same_observations():
  rollouts = {}
  for parallel in ('none', 'thread', 'process'):
    env = BatchEnv(dummy_ctors(3), parallel)
    try:
      assert len(env) == 3 and env.act_space == Dummy('disc').act_space
      assert env.obs_space == Dummy('disc').obs_space
      rollouts[parallel] = rollout(env, 120)
    finally:
      env.close()
  for parallel in ('thread', 'process'):
    for ours, theirs in zip(rollouts['none'], rollouts[parallel]):
      assert ours.keys() == theirs.keys()
      for key in ours:
        np.testing.assert_array_equal(ours[key], theirs[key])
  first = rollouts['none'][0]
  assert first['image'].shape == (3, 64, 64, 3) and first['is_first'].all()
  targets = np.stack([obs['vector'][:, :2] for obs in rollouts['none']])  # [T, N, 2]
  assert not np.array_equal(targets[:, 0], targets[:, 1])  # Seeded per env.
  assert rollouts['none'][100]['is_last'].all()  # Dummy episodes last 100 steps.


def test_killed_process_is_restarted_and_the_batch_continues(capfd):
  env = BatchEnv(dummy_ctors(2), 'process', restart=True)
  try:
    rng = np.random.default_rng(0)
    env.step(acts(2, True, rng))
    env.step(acts(2, False, rng))
    pid = env._workers[1]._process.pid
    os.kill(pid, signal.SIGKILL)
    obs = env.step(acts(2, False, rng))
    np.testing.assert_array_equal(obs['is_first'], [False, True])
    assert obs['reward'][1] == 0 and env.restarts == 1
    assert env._workers[1]._process.pid != pid
    assert 'Env 1 process died (exit code -9); restarting it' in capfd.readouterr().err
    for _ in range(3):
      obs = env.step(acts(2, False, rng))
      assert not obs['is_first'].any()
  finally:
    env.close()


def test_killed_process_without_restart_raises_a_clear_error():
  env = BatchEnv(dummy_ctors(2), 'process', restart=False)
  try:
    rng = np.random.default_rng(0)
    env.step(acts(2, True, rng))
    os.kill(env._workers[0]._process.pid, signal.SIGKILL)
    with pytest.raises(EnvProcessDied) as info:
      env.step(acts(2, False, rng))
    assert str(info.value) == (
        'Env 0 process died (exit code -9). Set envs.restart True to restart crashed envs.')
  finally:
    env.close()


@pytest.mark.parametrize('parallel', ['none', 'thread', 'process'])
def test_env_exception_is_reraised_with_env_index(parallel):
  ctors = [functools.partial(Dummy, 'disc'), functools.partial(FailingDummy, 3)]
  env = BatchEnv(ctors, parallel, restart=True)  # Exceptions are not restarts.
  try:
    rng = np.random.default_rng(0)
    env.step(acts(2, True, rng))
    env.step(acts(2, False, rng))
    with pytest.raises(LookupError, match='broken on call 3') as info:
      env.step(acts(2, False, rng))
    notes = '\n'.join(getattr(info.value, '__notes__', []))
    assert 'env 1' in notes
    if parallel == 'process':
      assert 'Traceback' in notes and "raise LookupError(f'broken on call" in notes
  finally:
    env.close()


def test_constructor_error_in_process_is_raised():
  with pytest.raises(RuntimeError, match='cannot build this env') as info:
    BatchEnv([broken_ctor], 'process')
  assert 'Raised by env 0' in '\n'.join(info.value.__notes__)


def test_close_ends_processes_and_is_idempotent():
  env = BatchEnv(dummy_ctors(2), 'process')
  processes = [worker._process for worker in env._workers]
  assert all(p.is_alive() for p in processes)
  env.close()
  env.close()
  assert not any(p.is_alive() for p in processes)


def test_wrong_batch_size_and_mode_are_rejected():
  env = BatchEnv(dummy_ctors(2), 'none')
  with pytest.raises(ValueError, match="'action' has 3 entries but there are 2 envs"):
    env.step({'action': np.zeros(3, np.int32), 'reset': np.ones(3, bool)})
  with pytest.raises(ValueError, match="parallel must be 'none', 'thread' or 'process'"):
    BatchEnv(dummy_ctors(1), 'processes')


def test_make_envs_builds_wrapped_envs_from_config():
  config = Config(load_yaml('configs.yaml')['defaults']).update(
      {'envs.amount': 3, 'envs.parallel': 'thread', 'task': 'dummy_cont'})
  env = make_envs(config)
  try:
    assert len(env) == 3 and env.act_space['action'].shape == (2,)
    obs = env.step({'action': np.full((3, 2), 5.0, np.float32), 'reset': np.ones(3, bool)})
    assert obs['vector'].shape == (3, 3)
    assert len({row.tobytes() for row in obs['vector']}) == 3  # Seeded per index.
  finally:
    env.close()


@pytest.mark.slow
def test_process_overhead_per_step_is_small():
  env = BatchEnv(dummy_ctors(4), 'process')
  local = BatchEnv(dummy_ctors(4), 'none')
  try:
    rng = np.random.default_rng(0)
    timings = []
    for batch in (env, local):
      batch.step(acts(4, True, rng))
      start = time.perf_counter()
      for _ in range(300):
        batch.step(acts(4, False, rng))
      timings.append((time.perf_counter() - start) / 300)
    assert timings[0] - timings[1] < 2e-3, timings
  finally:
    env.close()


def exiting_ctor():
  os._exit(3)


def test_process_dying_while_building_its_env_is_reported():
  message = r'Env 1 process died while building its env \(exit code 3\)'
  with pytest.raises(EnvProcessDied, match=message):
    BatchEnv([functools.partial(Dummy, 'disc'), exiting_ctor], 'process')
