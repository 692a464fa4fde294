"""Tests of jaxagent.py: the Agent contract, compiling once, checkpoints, devices.

Tests that need several (simulated) devices run in a subprocess, because the
CPU device count is fixed when JAX starts.
"""

import contextlib
import io
import json
import os
import pathlib
import socket
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from embodied.core.base import Space
from embodied.core.basics import Counter
from embodied.core.config import load_config, load_yaml

from dreamerv3 import agent as agentlib
from dreamerv3 import jaxagent

ROOT = pathlib.Path(__file__).resolve().parent.parent
SMALL = ['--configs', 'debug', '--encoder.mlp_layers', '2', '--decoder.mlp_layers', '2',
         '--encoder.mlp_units', '64', '--decoder.mlp_units', '64']
OBS_SPACE = {
    'image': Space(np.uint8, (64, 64, 3)), 'vector': Space(np.float32, (3,)),
    'reward': Space(np.float32), 'is_first': Space(bool), 'is_last': Space(bool),
    'is_terminal': Space(bool), 'log_match': Space(np.float32)}
ACT_SPACE = {'action': Space(np.float32, (5,), 0, 1), 'reset': Space(bool)}


def make_config(*args):
  return load_config(load_yaml(ROOT / 'configs.yaml'), SMALL + list(args))[0]


def make_batch(batch, length, seed=0, episode_end=False):
  """Random numpy batch [B, T, ...]; episode_end puts an episode boundary inside it."""
  rng = np.random.default_rng(seed)
  data = {
      'image': rng.integers(0, 256, (batch, length, 64, 64, 3), dtype=np.uint8),
      'vector': rng.normal(size=(batch, length, 3)).astype(np.float32),
      'reward': rng.normal(size=(batch, length)).astype(np.float32),
      'is_first': np.zeros((batch, length), bool), 'is_last': np.zeros((batch, length), bool),
      'is_terminal': np.zeros((batch, length), bool),
      'action': np.eye(5, dtype=np.float32)[rng.integers(0, 5, (batch, length))],
      'log_match': np.zeros((batch, length), np.float32), 'id': np.zeros((batch, length), int)}
  data['is_first'][:, 0] = True
  if episode_end:
    data['is_last'][:, 4] = data['is_terminal'][:, 4] = True
    data['action'][:, 4] = 0
    data['is_first'][:, 5] = True
  return data


def observations(batch, seed=0, first=False):
  data = make_batch(batch, 1, seed)
  obs = {k: v[:, 0] for k, v in data.items() if k != 'action'}
  obs['is_first'][:] = first
  return obs


@pytest.fixture(scope='module')
def agent():
  """A small agent; `agent.summary` holds what the constructor printed."""
  printed = io.StringIO()
  with contextlib.redirect_stdout(printed):
    agent = jaxagent.JAXAgent(OBS_SPACE, ACT_SPACE, Counter(), make_config())
  agent.summary = printed.getvalue()
  return agent


def test_constructor_prints_keys_and_parameter_count(agent):
  assert "Encoder CNN keys: ['image'], MLP keys: ['vector']" in agent.summary
  assert "Decoder CNN keys: ['image'], MLP keys: ['vector']" in agent.summary
  count = sum(x.size for x in agent.params.values())
  assert f'Parameters: {count:,}' in agent.summary
  assert agent.dtype == np.float32   # The CPU computes in float32 whatever jax.precision says.


def test_train_and_policy_compile_once(agent):
  config = agent.config
  batches = [make_batch(config.batch_size, config.batch_length, seed, episode_end=seed == 1)
             for seed in range(3)]
  state = None
  for data in batches:
    outs, state, metrics = agent.train(data, state)
    assert outs == {}
  assert agent._train._cache_size() == 1
  assert all(isinstance(v, jax.Array) for v in metrics.values())   # Fetched when logged.
  assert all(np.isfinite(float(v)) for v in metrics.values())
  policy_state = None
  for step in range(4):
    obs = observations(3, seed=step, first=step in (0, 2))
    outs, policy_state = agent.policy(obs, policy_state, mode='train')
    assert outs['action'].shape == (3, 5) and isinstance(outs['action'], np.ndarray)
    np.testing.assert_array_equal(outs['action'].sum(-1), 1)
  assert agent._policy._cache_size() == 1
  with pytest.raises(ValueError, match="mode must be 'train', 'explore' or 'eval'"):
    agent.policy(obs, policy_state, mode='greedy')


def test_policy_randomness_comes_from_a_counter(agent):
  obs = observations(64, first=True)
  first, _ = agent.policy(obs)
  second, _ = agent.policy(obs)
  assert not np.array_equal(first['action'], second['action'])   # Always samples.
  tree = agent.save()
  agent._policy_count -= 1
  again, _ = agent.policy(obs)
  np.testing.assert_array_equal(again['action'], second['action'])
  agent.load(tree)


def test_save_and_load_resume_the_same_updates(agent):
  data = make_batch(agent.config.batch_size, agent.config.batch_length, seed=5)
  saved = agent.save()
  assert all(isinstance(v, np.ndarray) for v in saved.values())
  assert 'params/rssm/gru/kernel' in saved
  # Each optimiser keeps its moments as one flat vector over its parameters.
  model_size = sum(v.size for k, v in saved.items() if k.startswith('params/') and
                   k.split('/')[1] in agentlib.MODEL)
  assert saved['opt/model/opt/1/mu'].shape == (model_size,)
  agent.train(data)
  agent.train(data)
  first = agent.save()
  agent.load(saved)
  for key, value in saved.items():
    np.testing.assert_array_equal(agent.save()[key], value)
  agent.train(data)
  agent.train(data)
  second = agent.save()
  assert int(second['step']) == int(saved['step']) + 2
  for key, value in first.items():
    np.testing.assert_array_equal(second[key], value, err_msg=key)


def test_load_refuses_a_checkpoint_of_another_config(agent):
  config = make_config('--rssm.deter', '32', '--jax.platform', 'gpu')
  with pytest.warns(UserWarning, match="jax.platform is 'gpu'"), \
       contextlib.redirect_stdout(io.StringIO()):
    other = jaxagent.JAXAgent(OBS_SPACE, ACT_SPACE, Counter(), config)
  assert other.platform == 'cpu' and other.dtype == np.float32
  tree = agent.save()
  with pytest.raises(jaxagent.CheckpointMismatchError) as error:
    other.load(tree)
  message = str(error.value)
  assert 'params/rssm/gru/kernel: checkpoint (128, 192) vs agent (96, 96)' in message
  assert 'new logdir' in message and '--run.from_checkpoint' in message
  assert isinstance(error.value, ValueError)
  del tree['params/actor/out/bias']
  tree['params/extra'] = np.zeros(3)
  with pytest.raises(jaxagent.CheckpointMismatchError) as error:
    agent.load(tree)
  assert error.value.missing == ['params/actor/out/bias']
  assert error.value.unexpected == ['params/extra']


def test_dataset_prefetches_device_batches(agent):
  config = agent.config
  batches = [make_batch(config.batch_size, config.batch_length, seed) for seed in range(3)]
  items = list(agent.dataset(iter(batches)))
  assert len(items) == 3
  assert sorted(items[0]) == ['action', 'image', 'is_first', 'is_last', 'is_terminal',
                              'reward', 'vector']
  assert all(isinstance(v, jax.Array) for v in items[0].values())
  np.testing.assert_array_equal(items[2]['image'], batches[2]['image'])

  def broken():
    yield batches[0]
    raise OSError('replay went away')

  dataset = agent.dataset(broken())
  next(dataset)
  with pytest.raises(OSError, match='replay went away'):
    next(dataset)


def test_report_has_open_loop_videos(agent):
  config = agent.config
  data = make_batch(config.batch_size, config.batch_length)
  report = agent.report(data)
  video = report['openl_image']
  assert video.dtype == np.uint8 and video.shape == (6, config.batch_length, 3 * 64, 64, 3)
  truth = video[:, :, :64].astype(int)
  assert np.abs(truth - data['image'][:6]).max() <= 1
  for key in ('loss/image', 'loss/vector', 'loss/reward', 'openl_loss/image'):
    assert np.isfinite(report[key]), key


def test_logical_cpus_after_jax_started_is_a_clear_error(agent):
  with pytest.raises(RuntimeError, match='must be set before JAX starts'):
    jaxagent.configure_jax(make_config('--jax.logical_cpus', '3'))


# Several devices and processes (subprocesses: the device count is fixed at JAX start).

# What a subprocess needs, and the suite's compile cache (conftest.py).
MINIMAL_ENV = {'PYTHONPATH': str(ROOT), 'PATH': '/usr/bin:/bin', **{
    key: os.environ[key] for key in ['JAX_COMPILATION_CACHE_DIR'] if key in os.environ}}


def run_python(code, *args, timeout=600):
  result = subprocess.run(
      [sys.executable, '-c', textwrap.dedent(code), *args], cwd=ROOT, capture_output=True,
      text=True, timeout=timeout, env=MINIMAL_ENV)
  return result


PRELUDE = '''
import contextlib, io, json, sys
import numpy as np
sys.path.insert(0, 'tests')
from test_jaxagent import ACT_SPACE, OBS_SPACE, make_batch, make_config
from embodied.core.basics import Counter
from dreamerv3 import agent as agentlib
from dreamerv3 import jaxagent
'''


def test_batch_that_does_not_divide_over_devices_is_refused():
  code = PRELUDE + '''
config = make_config('--jax.parallel', 'True', '--jax.logical_cpus', '2', '--batch_size', '3')
jaxagent.configure_jax(config)
try:
  jaxagent.JAXAgent(OBS_SPACE, ACT_SPACE, Counter(), config)
except jaxagent.ConfigError as e:
  print('ERROR:', e)
'''
  result = run_python(code)
  assert 'ERROR: batch_size 3 does not divide over 2 devices; choose a multiple of 2.' in (
      result.stdout), result.stderr[-3000:]


@pytest.mark.slow
def test_two_devices_give_the_same_update_as_one():
  code = PRELUDE + '''
import jax
config = make_config('--jax.logical_cpus', '2', '--batch_size', '4')
jaxagent.configure_jax(config)
assert len(jax.devices()) == 2
trees = []
for parallel in (False, True):
  with contextlib.redirect_stdout(io.StringIO()):
    agent = jaxagent.JAXAgent(
        OBS_SPACE, ACT_SPACE, Counter(), config.update({'jax.parallel': parallel}))
  state = None
  for seed in range(2):
    _, state, _ = agent.train(make_batch(4, config.batch_length, seed), state)
  trees.append(agent.save())
  if parallel:
    assert len(agent.params['rssm/gru/kernel'].sharding.device_set) == 2
diffs = {k: float(np.abs(trees[0][k] - trees[1][k]).max() / (1e-3 + np.abs(trees[0][k]).max()))
         for k in trees[0] if k.startswith('params/')}
print('RESULT', json.dumps(diffs))
'''
  result = run_python(code)
  assert 'RESULT' in result.stdout, result.stderr[-3000:]
  diffs = json.loads(result.stdout.split('RESULT')[1])
  assert len(diffs) > 50
  worst = max(diffs, key=diffs.get)
  assert diffs[worst] < 1e-3, (worst, diffs[worst])


def free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_end_with_identical_parameters(tmp_path):
  code = PRELUDE + '''
process, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
config = make_config(
    '--jax.parallel', 'True', '--batch_size', '2', '--jax.coordinator_address',
    f'localhost:{port}', '--jax.num_processes', '2', '--jax.process_id', str(process))
jaxagent.configure_jax(config)
agent = jaxagent.JAXAgent(OBS_SPACE, ACT_SPACE, Counter(), config)
state = None
for step in range(3):   # Each process feeds its own half of the batch.
  _, state, metrics = agent.train(make_batch(2, config.batch_length, 10 * step + process), state)
np.savez(out, **{k.replace('/', '.'): v for k, v in agent.save().items()})
print('DONE', float(metrics['model_loss']))
'''
  port = free_port()
  procs = [subprocess.Popen(
      [sys.executable, '-c', textwrap.dedent(code), str(i), str(port), str(tmp_path / f'{i}.npz')],
      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      env=MINIMAL_ENV) for i in range(2)]
  outputs = [p.communicate(timeout=600) for p in procs]
  for proc, (stdout, stderr) in zip(procs, outputs):
    assert proc.returncode == 0 and 'DONE' in stdout, stderr[-3000:]
  first, second = np.load(tmp_path / '0.npz'), np.load(tmp_path / '1.npz')
  assert int(first['step']) == 3
  for key in first.files:
    np.testing.assert_array_equal(first[key], second[key], err_msg=key)
  assert not np.array_equal(first['params.rssm.gru.kernel'], np.zeros(1))


# jax.huge_pages: rerunning the command with malloc on transparent huge pages.

@pytest.fixture
def execs(monkeypatch):
  """Records os.execve calls instead of replacing the test process."""
  calls = []
  monkeypatch.setattr(jaxagent.os, 'execve', lambda *args: calls.append(args))
  monkeypatch.setattr(jaxagent, 'huge_pages_available', lambda: True)
  monkeypatch.delenv('GLIBC_TUNABLES', raising=False)
  return calls


def test_restart_with_huge_pages_reruns_the_same_command_once(execs, monkeypatch, capsys):
  monkeypatch.setenv('GLIBC_TUNABLES', 'glibc.malloc.arena_max=2')
  jaxagent.restart_with_huge_pages(make_config())
  [(path, argv, environ)] = execs
  assert (path, argv) == (sys.executable, sys.orig_argv)
  assert environ['GLIBC_TUNABLES'] == 'glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1'
  assert environ['PATH'] == jaxagent.os.environ['PATH']
  assert 'Restarting with transparent huge pages' in capsys.readouterr().out
  assert not jaxagent.huge_pages_in_use()
  monkeypatch.setenv('GLIBC_TUNABLES', environ['GLIBC_TUNABLES'])   # As in the rerun process.
  assert jaxagent.huge_pages_in_use()
  jaxagent.restart_with_huge_pages(make_config())
  assert len(execs) == 1


@pytest.mark.parametrize('case', ['config off', 'user chose', 'unavailable'])
def test_restart_with_huge_pages_does_nothing_when_it_should_not(case, execs, monkeypatch):
  config = make_config('--jax.huge_pages', 'False' if case == 'config off' else 'True')
  if case == 'user chose':
    monkeypatch.setenv('GLIBC_TUNABLES', 'glibc.malloc.hugetlb=0')
    assert not jaxagent.huge_pages_in_use()
  if case == 'unavailable':
    monkeypatch.setattr(jaxagent, 'huge_pages_available', lambda: False)
  jaxagent.restart_with_huge_pages(config)
  assert execs == [] and jaxagent.huge_pages_environ(config) is None


@pytest.mark.parametrize('libc, mode, expected', [
    (('glibc', '2.36'), 'always [madvise] never\n', True),
    (('glibc', '2.39'), '[always] madvise never\n', True),
    (('glibc', '2.36'), 'always madvise [never]\n', False),
    (('glibc', '2.34'), 'always [madvise] never\n', False),   # No hugetlb tunable before 2.35.
    (('', ''), 'always [madvise] never\n', False),           # musl, macOS.
    (('glibc', '2.36'), None, False),                          # No THP in this kernel.
])
def test_huge_pages_available(libc, mode, expected, monkeypatch, tmp_path):
  monkeypatch.setattr(jaxagent.platform, 'libc_ver', lambda: libc)
  path = tmp_path / 'enabled'
  if mode is not None:
    path.write_text(mode)
  monkeypatch.setattr(jaxagent, 'THP_MODE', path)
  assert jaxagent.huge_pages_available() is expected


# jax.compile_cache: JAX's persistent cache of compiled programs.

def test_compile_cache_dir_is_private_and_named_after_the_cpu(tmp_path, monkeypatch):
  path = jaxagent.compile_cache_dir(str(tmp_path / 'cache'))
  assert path == str(tmp_path / 'cache' / f'{jaxagent.platform.machine()}-'
                     f'{jaxagent.cpu_fingerprint()}')
  assert os.stat(path).st_mode & 0o777 == 0o700
  assert jaxagent.compile_cache_dir(str(tmp_path / 'cache')) == path   # Reused as it is.
  # Another CPU model (other instruction-set flags) gets another directory.
  cpuinfo = tmp_path / 'cpuinfo'
  cpuinfo.write_text('processor\t: 0\nmodel name\t: Other CPU\nflags\t\t: fpu sse2\n')
  monkeypatch.setattr(jaxagent, 'CPUINFO', cpuinfo)
  other = jaxagent.compile_cache_dir(str(tmp_path / 'cache'))
  assert other != path and pathlib.Path(other).parent == pathlib.Path(path).parent


def test_compile_cache_dir_refuses_a_directory_others_can_write(tmp_path):
  path = pathlib.Path(jaxagent.compile_cache_dir(str(tmp_path)))
  path.chmod(0o777)
  with pytest.warns(UserWarning, match=r'writable by others \(mode 777\); compiling without '
                    r'the cache. Make it yours with mode 700'):
    assert jaxagent.compile_cache_dir(str(tmp_path)) is None
  blocker = tmp_path / 'file'
  blocker.write_text('')
  with pytest.warns(UserWarning, match=r'cannot create .*file/.*--jax.compile_cache ""'):
    assert jaxagent.compile_cache_dir(str(blocker)) is None


def test_configure_jax_caches_compiled_programs_unless_told_otherwise(tmp_path):
  code = '''
import os, sys
sys.path.insert(0, 'tests')
import jax, jax.numpy as jnp
from test_jaxagent import make_config
from dreamerv3 import jaxagent
jaxagent.configure_jax(make_config('--jax.compile_cache', sys.argv[1]))
print('DIR', jax.config.jax_compilation_cache_dir)
jax.jit(lambda x: jnp.sin(x) @ x)(jnp.ones((8, 8))).block_until_ready()
'''
  root = tmp_path / 'cache'
  env = {**MINIMAL_ENV, 'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0'}
  env.pop('JAX_COMPILATION_CACHE_DIR', None)

  def run(argument, **extra):
    result = subprocess.run([sys.executable, '-c', textwrap.dedent(code), argument], cwd=ROOT,
                            capture_output=True, text=True, timeout=300, env={**env, **extra})
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.split('DIR ')[1].strip()

  used = run(str(root))
  assert pathlib.Path(used).parent == root and len(list(pathlib.Path(used).iterdir())) >= 1
  assert run('') == 'None'                                         # --jax.compile_cache ''
  assert run(str(root), JAX_COMPILATION_CACHE_DIR=str(tmp_path / 'mine')) == str(tmp_path / 'mine')
  assert list((tmp_path / 'mine').iterdir())
