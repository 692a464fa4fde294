"""End-to-end reliability of dreamerv3/train.py (docs/reliability.md, issue 5).

Every test runs the real entry point in a subprocess, as a user would, with a
tiny MLP-only DreamerV3 on CPU. Compiled XLA programs are shared between the
runs through JAX's persistent compilation cache (the suite's private one, set
in conftest.py), so only the first session pays the compile time.
"""

import hashlib
import json
import os
import pathlib
import pickle
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
import zipfile

import numpy as np
import pytest

import envs_faulty
from embodied.core.checkpoint import read_tree
from embodied.replay import Uniform
from embodied.core.logger import truncate_metrics
from embodied.run.common import NonfiniteError, SignalStop, Updates

ROOT = pathlib.Path(__file__).resolve().parent.parent
TESTS = ROOT / 'tests'
TRAIN = ROOT / 'dreamerv3' / 'train.py'
INJECT_NAN = TESTS / 'inject_nan_batches.py'
BATCH, LENGTH = 2, 8   # Prefill: B * T = 16 items of one worker = 23 steps.
PREFILL_STEPS = BATCH * LENGTH + LENGTH - 1
EPISODE_STEPS = envs_faulty.CYCLE_LENGTH + 1   # is_first + CYCLE_LENGTH actions.
CYCLE = 'gym_envs_faulty:Cycle-v0'
# A tiny model (165K parameters) on one in-process env; nothing logged on the
# clock or saved on the clock unless a test asks for it.
FLAGS = (
    '--configs', 'debug', '--task', CYCLE, '--envs.amount', '1', '--envs.parallel', 'none',
    '--encoder.mlp_units', '32', '--decoder.mlp_units', '32', '--encoder.mlp_layers', '1',
    '--decoder.mlp_layers', '1', '--batch_size', str(BATCH), '--batch_length', str(LENGTH),
    '--run.train_ratio', '16', '--run.log_every', '1e9', '--run.save_every', '1e9',
    '--run.outputs', 'terminal', 'jsonl', '--jax.jit', 'True')


ENV = {
    **os.environ,
    'PYTHONPATH': os.pathsep.join([str(TESTS), os.environ.get('PYTHONPATH', '')]),
    'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0',
    'JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES': '0',
    'PYTHONUNBUFFERED': '1',
}


def command(logdir, steps, *flags, script=TRAIN):
  return [sys.executable, str(script), *FLAGS, '--run.logdir', str(logdir),
          '--run.steps', str(steps), *flags]


def train(logdir, steps, *flags, script=TRAIN, env=None):
  result = subprocess.run(
      command(logdir, steps, *flags, script=script), cwd=ROOT, env={**ENV, **(env or {})},
      capture_output=True, text=True, timeout=600)
  result.output = result.stdout + result.stderr
  return result


def assert_ok(result):
  assert result.returncode == 0, result.output[-3000:]


def assert_clear_error(result, *patterns):
  """Exit code 2, an 'Error:' message matching every pattern, and no traceback."""
  assert result.returncode == 2, result.output[-3000:]
  assert 'Traceback' not in result.output, result.output[-3000:]
  errors = [line for line in result.stderr.splitlines() if line.startswith('Error: ')]
  assert len(errors) == 1, result.stderr[-3000:]
  message = result.stderr[result.stderr.index('Error: '):]
  for pattern in patterns:
    assert re.search(pattern, message), (pattern, message)
  return message


def checkpoint_step(logdir):
  return int(read_tree(logdir)['step']['value'])


def metric_steps(logdir):
  return [json.loads(line)['step'] for line in (logdir / 'metrics.jsonl').read_text().splitlines()]


def hash_tree(directory):
  return {str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
          for path in sorted(directory.rglob('*')) if path.is_file()}


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A logdir trained for 40 steps; tests copy it before changing anything."""
  logdir = tmp_path_factory.mktemp('trained') / 'run'
  assert_ok(train(logdir, 40))
  return logdir


def copy_of(logdir, tmp_path, name='run'):
  target = tmp_path / name
  shutil.copytree(logdir, target)
  return target


# 1. Resume.

def test_sigkill_then_rerun_with_more_steps_continues(trained, tmp_path):
  logdir = copy_of(trained, tmp_path, 'logdir with spaces; $(touch pwned) `touch pwned2`')
  assert checkpoint_step(logdir) == 40
  kills = kill_and_rerun(
      logdir, 90, kills=2, seed=0, flags=('--run.save_every', '0'), max_delay=8.0)
  assert all(kill['loadable'] for kill in kills)
  result = train(logdir, 90)
  assert_ok(result)
  resumed = int(re.search(r'Resumed training at step (\d+)', result.stdout).group(1))
  assert resumed == kills[-1]['step'] >= 40
  assert checkpoint_step(logdir) == 90
  steps = metric_steps(logdir)
  assert steps == sorted(steps) and 40 in steps and steps[-1] == 90
  # The logdir name was used as a path, never run through a shell.
  assert not list(tmp_path.rglob('pwned*')) and not (ROOT / 'pwned').exists()


@pytest.mark.slow
def test_resume_at_an_episode_boundary_equals_an_uninterrupted_run(tmp_path):
  # Cycle-v0 episodes do not depend on earlier ones, and the first run stops
  # right after an is_last: the resumed run then sees what the uninterrupted
  # run sees, so every array of the final checkpoints must be identical.
  stop = PREFILL_STEPS + 4 * EPISODE_STEPS
  final = 2 * stop
  interrupted, uninterrupted = tmp_path / 'interrupted', tmp_path / 'uninterrupted'
  assert_ok(train(interrupted, stop))
  (chunk,) = (interrupted / 'replay').glob('*.npz')
  with np.load(chunk, allow_pickle=False) as stored:
    assert len(stored['is_last']) == stop and stored['is_last'][-1]   # On a boundary.
  at_stop = read_tree(interrupted)['agent']
  assert_ok(train(interrupted, final))
  assert_ok(train(uninterrupted, final))
  resumed, straight = read_tree(interrupted), read_tree(uninterrupted)
  assert resumed['step'] == straight['step'] == {'value': final}
  assert resumed['should_train'] == straight['should_train']
  for key in ('rng', 'stamp', 'items'):
    assert resumed['replay'][key] == straight['replay'][key], key
  assert resumed['agent'].keys() == straight['agent'].keys()
  assert differing(resumed['agent'], straight['agent']) == []
  assert len(differing(at_stop, resumed['agent'])) > 20   # It trained after the resume.
  assert_same_replay(interrupted / 'replay', uninterrupted / 'replay')
  # Stopped mid-episode, the env restarts its episode on resume: not identical.
  midway = tmp_path / 'midway'
  assert_ok(train(midway, stop + 3))
  assert_ok(train(midway, final))
  assert len(differing(read_tree(midway)['agent'], straight['agent'])) > 20


def differing(first, second):
  return [key for key in first if not np.array_equal(first[key], second[key])]


def assert_same_replay(first, second):
  def steps(directory):
    files = sorted(directory.glob('*.npz'))
    assert len(files) == 1   # One worker, fewer steps than a chunk.
    with np.load(files[0], allow_pickle=False) as npz:
      return {key: npz[key] for key in npz.files}
  a, b = steps(first), steps(second)
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


# 2. SIGKILL at any moment.

def kill_and_rerun(logdir, steps, kills, seed, flags=(), max_delay=14.0):
  """Starts the run `kills` times and SIGKILLs it at a random moment each time.

  Kills alternate between a random delay, a moment a checkpoint write is in
  progress (a .tmp-* dir in checkpoint/) and a moment a replay chunk write is
  (a *.tmp file in replay/). After each kill the newest checkpoint must load
  (read_tree) and the replay must load from it; each rerun must resume from
  exactly that checkpoint. Returns one dict per kill.
  """
  rng = random.Random(seed)
  records, expected = [], checkpoint_or_none(logdir)
  for index in range(kills):
    when = ('random', 'checkpoint', 'replay')[index % 3]
    log = logdir.parent / f'kill-{index}.log'
    leftovers = partial_writes(logdir)
    with open(log, 'w') as out:
      process = subprocess.Popen(
          command(logdir, steps, *flags), cwd=ROOT, env=ENV, stdout=out, stderr=subprocess.STDOUT)
      try:
        landed = wait_for_moment(process, logdir, when, rng, max_delay)
      finally:
        process.kill()
        process.wait()
    output = log.read_text()
    started = re.search(r'(Started|Resumed) training at step (\d+)', output)
    if started:   # The kill came after the checkpoint was read.
      assert int(started.group(2)) == (expected or 0), output[-2000:]
      assert (started.group(1) == 'Resumed') == (expected is not None)
    assert 'Traceback' not in output, output[-3000:]
    new = {kind: paths - leftovers[kind] for kind, paths in partial_writes(logdir).items()}
    record = {'when': when, 'landed': landed, 'loadable': True, 'step': None,
              'checkpoint_write': bool(new['checkpoint']), 'replay_write': bool(new['replay'])}
    if list(logdir.glob('checkpoint/ckpt-*')):
      try:
        record['step'] = checkpoint_step(logdir)
        load_replay(logdir)
      except Exception as e:   # Counted; the test asserts there are none.
        record['loadable'], record['error'] = False, repr(e)
        records.append(record)
        continue
      assert expected is None or record['step'] >= expected   # The step never goes back.
      expected = record['step']
    records.append(record)
  return records


def partial_writes(logdir):
  """Temporary files of writes in progress (or cut short by a kill), by kind."""
  return {'checkpoint': set((logdir / 'checkpoint').glob('.tmp-*')),
          'replay': set((logdir / 'replay').glob('*.tmp'))}


def checkpoint_or_none(logdir):
  return checkpoint_step(logdir) if list(logdir.glob('checkpoint/ckpt-*')) else None


def wait_for_moment(process, logdir, when, rng, max_delay, limit=60.0):
  """Returns once it is time to kill: after a random delay, or during a write of
  the kind `when`, skipping a random number (0-7) of such writes first so that
  the run makes progress between kills."""
  if when == 'random':
    time.sleep(rng.uniform(1.0, max_delay))
    return 'random'
  skip = rng.randrange(8)
  start, seen, old = time.monotonic(), set(), partial_writes(logdir)[when]
  while time.monotonic() - start < limit and process.poll() is None:
    seen |= partial_writes(logdir)[when] - old
    if len(seen) > skip:
      time.sleep(rng.uniform(0, 0.002))
      return when
    time.sleep(0.0005)
  return 'timeout'


def load_replay(logdir):
  tree = read_tree(logdir)
  replay = Uniform(LENGTH, 500, logdir / 'replay')
  with warnings.catch_warnings(record=True):
    warnings.simplefilter('always')
    replay.load(tree['replay'])
  return replay


@pytest.mark.slow
def test_twenty_one_sigkills_at_random_moments_then_the_run_finishes(tmp_path):
  logdir = tmp_path / 'run'
  steps = 3000   # More than 21 short sessions reach, so that every kill hits a live run.
  kills = kill_and_rerun(
      logdir, steps, kills=21, seed=1, flags=('--run.save_every', '0'), max_delay=10.0)
  torn = list((logdir / 'replay').glob('*.tmp'))
  result = train(logdir, steps, '--run.save_every', '0')
  assert_ok(result)
  assert checkpoint_step(logdir) == steps
  if torn:   # Chunk files cut short by a kill are skipped with a warning.
    assert 'a write was interrupted' in result.output
  metrics = metric_steps(logdir)
  assert metrics == sorted(metrics) and metrics[-1] == steps
  summary = {
      'kills': len(kills), 'unloadable': sum(not k['loadable'] for k in kills),
      'during_checkpoint_write': sum(k['checkpoint_write'] for k in kills),
      'during_replay_write': sum(k['replay_write'] for k in kills),
      'torn_replay_files': len(torn), 'steps': [k['step'] for k in kills]}
  print('SIGKILL summary:', json.dumps(summary))
  assert summary['unloadable'] == 0
  assert summary['during_checkpoint_write'] >= 1 and summary['during_replay_write'] >= 1
  progress = [k['step'] for k in kills if k['step'] is not None]
  assert progress == sorted(progress) and 0 < progress[-1] < steps


@pytest.mark.parametrize('signum', [
    signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.slow)])
def test_sigterm_or_ctrl_c_saves_a_checkpoint_and_exits_130(trained, tmp_path, signum):
  logdir = copy_of(trained, tmp_path)
  log = tmp_path / 'out.log'
  with open(log, 'w') as out:
    process = subprocess.Popen(
        command(logdir, 10 ** 6), cwd=ROOT, env=ENV, stdout=out, stderr=subprocess.STDOUT)
    try:
      deadline = time.monotonic() + 300
      while ('Resumed training' not in log.read_text() and time.monotonic() < deadline
             and process.poll() is None):
        time.sleep(0.1)
      time.sleep(3.0)   # Into the training loop.
      process.send_signal(signum)
      assert process.wait(timeout=120) == 130, log.read_text()[-3000:]
    finally:
      process.kill()
      process.wait()
  output = log.read_text()
  saved = re.search(r'Stopped at step (\d+) \(KeyboardInterrupt\); saved checkpoint', output)
  assert saved and int(saved.group(1)) > 40, output[-2000:]
  assert checkpoint_step(logdir) == int(saved.group(1))
  assert 'Interrupted. Rerun the same command to continue' in output
  assert 'Traceback' not in output


# 3. Incompatible checkpoint.

def test_changed_model_size_is_refused_and_the_checkpoint_left_untouched(trained, tmp_path):
  logdir = copy_of(trained, tmp_path)
  config_before = (logdir / 'config.yaml').read_text()
  checkpoint_before = hash_tree(logdir / 'checkpoint')
  replay_before = hash_tree(logdir / 'replay')
  result = train(logdir, 80, '--rssm.deter', '32')
  message = assert_clear_error(
      result, r'differ from its config\.yaml: rssm\.deter \(64 -> 32\)\.\n',
      r'params/rssm/initial: checkpoint \(64,\) vs agent \(32,\)', r'new logdir',
      r'--run\.from_checkpoint', r'left untouched')
  assert message.index('rssm.deter') < message.index('params/')   # The cause comes first.
  assert hash_tree(logdir / 'checkpoint') == checkpoint_before
  assert hash_tree(logdir / 'replay') == replay_before
  assert (logdir / 'config.yaml').read_text() == config_before


# 4. Bad environment output and crashing envs.

def test_nan_observation_stops_with_env_key_and_step(tmp_path):
  result = train(tmp_path / 'run', 200, '--task', 'gym_envs_faulty:NanEnv-v0',
                 '--run.train_fill', '100')
  assert_clear_error(
      result, r'Env gym_envs_faulty:NanEnv-v0', r"observation 'vector'",
      r'not finite \(nan\)', rf'at step {envs_faulty.NAN_STEP} of the episode')


def test_env_process_that_dies_is_restarted_and_the_run_finishes(tmp_path):
  marker = tmp_path / 'died'
  result = train(
      tmp_path / 'run', 130, '--task', 'gym_envs_faulty:DieOnce-v0', '--envs.amount', '2',
      '--envs.parallel', 'process', '--envs.restart', 'True', '--run.train_fill', '100',
      env={envs_faulty.MARKER_VAR: str(marker)})
  assert_ok(result)
  assert marker.exists()   # It did die.
  assert re.search(rf'process died \(exit code {envs_faulty.DIE_EXITCODE}\); restarting it',
                   result.stderr)
  assert checkpoint_step(tmp_path / 'run') >= 130


def test_env_process_that_dies_without_restart_stops_with_a_checkpoint(tmp_path):
  marker = tmp_path / 'died'
  result = train(
      tmp_path / 'run', 130, '--task', 'gym_envs_faulty:DieOnce-v0', '--envs.amount', '2',
      '--envs.parallel', 'process', '--envs.restart', 'False', '--run.train_fill', '100',
      env={envs_faulty.MARKER_VAR: str(marker)})
  assert_clear_error(result, rf'process died \(exit code {envs_faulty.DIE_EXITCODE}\)',
                     r'envs\.restart True')
  saved = re.search(r'Stopped at step (\d+) \(EnvProcessDied\); saved checkpoint', result.stdout)
  assert saved, result.stdout[-2000:]
  # The checkpoint holds the steps taken before the crash (2 envs x 49 steps).
  assert checkpoint_step(tmp_path / 'run') == int(saved.group(1)) >= 2 * (envs_faulty.DIE_STEP - 1)
  print('Steps in the checkpoint after the crash:', saved.group(1))
  load_replay(tmp_path / 'run')


# 5. Non-finite updates.

def test_nonfinite_updates_stop_with_checkpoint_and_offending_batch(tmp_path):
  logdir = tmp_path / 'run'
  result = train(logdir, 200, '--run.nonfinite_limit', '3', script=INJECT_NAN)
  assert_clear_error(result, r'3 consecutive updates had non-finite gradients',
                     r'run\.nonfinite_limit 3', r'nonfinite_batch\.npz')
  assert re.search(r'Warning: 1 update\(s\) in a row had non-finite gradients', result.stderr)
  with np.load(logdir / 'nonfinite_batch.npz', allow_pickle=False) as batch:
    assert batch['vector'].shape == (BATCH, LENGTH, 3) and np.isnan(batch['vector']).all()
  assert re.search(r'Stopped at step \d+ \(NonfiniteError\); saved checkpoint', result.stdout)
  agent = read_tree(logdir)['agent']
  assert int(agent['nonfinite']) >= 3   # The skipped updates are counted ...
  floats = {k: v for k, v in agent.items() if np.issubdtype(np.asarray(v).dtype, np.floating)}
  assert any(k.startswith('params/') for k in floats)
  assert all(np.isfinite(v).all() for v in floats.values())   # ... not applied.


class ScriptedAgent:
  """Reports a scripted 'nonfinite' count per update; records the batches it gets."""

  def __init__(self, counts, **metrics):
    self.counts, self.metrics, self.batches = list(counts), metrics, []

  def dataset(self, generator):
    return generator

  def train(self, data, state=None):
    self.batches.append(data)
    return {}, None, {'nonfinite': np.int32(self.counts.pop(0)), **self.metrics}


def scripted_updates(tmp_path, counts, limit, **metrics):
  replay = Uniform(4, 100)
  for index in range(10):
    replay.add({'vector': np.full(3, index, np.float32), 'is_first': index == 0})
  agent = ScriptedAgent(counts, **metrics)
  return agent, Updates(agent, replay, 2, limit, tmp_path / 'bad.npz')


def test_nonfinite_guard_warns_then_stops_at_the_limit_with_that_batch(tmp_path, capsys):
  agent, updates = scripted_updates(tmp_path, [0, 1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 10)
  for _ in range(12):
    updates()
  updates.flush()   # The 12th update's count (9) is checked here.
  warnings_ = capsys.readouterr().err.splitlines()
  assert [line.split(' update')[0] for line in warnings_] == ['Warning: 1'] * 2
  updates()
  with pytest.raises(NonfiniteError, match=r'10 consecutive updates.*bad\.npz'):
    updates.flush()
  assert 'Warning: 10 update(s) in a row' in capsys.readouterr().err
  with np.load(tmp_path / 'bad.npz', allow_pickle=False) as saved:
    np.testing.assert_array_equal(saved['vector'], agent.batches[-1]['vector'])


def test_nonfinite_guard_tolerates_short_streaks_with_loss_scaling(tmp_path, capsys):
  _, updates = scripted_updates(tmp_path, [1, 2, 3, 0, 1], 0, model_loss_scale=np.float32(2))
  for _ in range(5):
    updates()
  updates.flush()   # Limit 0: never stops.
  assert capsys.readouterr().err == ''
  assert not (tmp_path / 'bad.npz').exists()


def test_truncate_metrics_drops_steps_past_the_checkpoint_and_torn_lines(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  path.write_text('{"step": 10}\n{"step": 20}\n{"step": 30}\n{"step": 40}\n')
  assert truncate_metrics(path, 20) == 2
  assert path.read_text() == '{"step": 10}\n{"step": 20}\n'
  path.write_text('{"step": 10}\n{"step": 2')   # Killed while writing.
  assert truncate_metrics(path, 99) == 1 and path.read_text() == '{"step": 10}\n'
  assert truncate_metrics(tmp_path / 'missing.jsonl', 5) == 0


def test_signal_stop_defers_the_first_signal_to_a_safe_point():
  previous = signal.getsignal(signal.SIGTERM)
  with SignalStop() as stop:
    stop.check()   # Nothing received yet.
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.01)   # The handler only records it ...
    with pytest.raises(KeyboardInterrupt, match='SIGTERM'):
      stop.check()     # ... and the loop raises at its next check.
    with pytest.raises(KeyboardInterrupt, match='twice'):
      os.kill(os.getpid(), signal.SIGTERM)   # A second signal raises at once.
      time.sleep(1)
  assert signal.getsignal(signal.SIGTERM) is previous


# 6. Resources.

def test_replay_that_cannot_fit_into_ram_is_refused_before_compiling(tmp_path):
  result = train(tmp_path / 'run', 100, '--replay_size', '1e12')
  assert_clear_error(result, r'Replay capacity 1,000,000,000,000 steps',
                     r'set replay_size <= [\d,]+', r'--run\.check_memory False')
  assert 'Parameters:' not in result.stdout   # Refused before the agent was built.


def test_unwritable_logdir_is_a_one_line_error(tmp_path):
  blocker = tmp_path / 'file'
  blocker.write_text('not a directory')
  result = train(blocker / 'logdir', 100)
  message = assert_clear_error(result, r'Cannot write to run\.logdir', r'writable --run\.logdir')
  assert len(message.strip().splitlines()) == 1


# 7. Bad config input.

@pytest.mark.parametrize('flags, patterns', [
    (('--configs', 'nosuchblock'), [r"Unknown config block 'nosuchblock'", 'Available blocks']),
    (('--rssm.detr', '32'), [r"Unknown config key 'rssm\.detr'", r'rssm\.deter']),
    (('--batch_size', 'many'), [r'batch_size', r'many']),
    (('--task', 'nosuite_task'), [r"Unknown task 'nosuite_task'", 'gym']),
])
def test_bad_config_input_is_a_short_clear_error(tmp_path, flags, patterns):
  result = subprocess.run(
      [sys.executable, str(TRAIN), '--run.logdir', str(tmp_path / 'run'), *flags], cwd=ROOT,
      env=ENV, capture_output=True, text=True, timeout=300)
  result.output = result.stdout + result.stderr
  message = assert_clear_error(result, *patterns)
  assert len(message.strip().splitlines()) <= 2


# 8. Security.

class _Payload:
  """Unpickling it would create the file `path` (a stand-in for running code)."""

  def __init__(self, path):
    self.path = path

  def __reduce__(self):
    return (os.mkdir, (self.path,))


def test_checkpoint_replaced_by_a_pickle_is_refused_without_running_it(trained, tmp_path):
  logdir = copy_of(trained, tmp_path)
  marker = tmp_path / 'code-ran'
  (newest,) = (logdir / 'checkpoint').glob('ckpt-*')
  names = zipfile.ZipFile(newest / 'arrays.npz').namelist()
  with zipfile.ZipFile(newest / 'arrays.npz', 'w') as archive:
    for name in names:   # Same names, so only the content is malicious.
      with archive.open(name, 'w') as member:
        np.lib.format.write_array(
            member, np.array([_Payload(str(marker))], dtype=object), allow_pickle=True)
  assert pickle.loads(pickle.dumps(_Payload(str(tmp_path / 'probe')))) is None   # It works.
  assert (tmp_path / 'probe').exists()
  result = train(logdir, 80)
  assert_clear_error(result, r'Refusing to load checkpoint', r'plain arrays and JSON')
  assert not marker.exists()


def test_no_code_runs_commands_through_a_shell():
  pattern = re.compile(r'shell\s*=\s*True|os\.system\(|os\.popen\(|commands\.getoutput')
  found = []
  for directory in ('embodied', 'dreamerv3', 'scripts'):
    for path in (ROOT / directory).rglob('*.py'):
      for number, line in enumerate(path.read_text().splitlines(), 1):
        if pattern.search(line):
          found.append(f'{path.relative_to(ROOT)}:{number}: {line.strip()}')
  assert (ROOT / 'embodied' / 'core' / 'batch.py').exists()   # The search looks somewhere.
  assert not found, found
