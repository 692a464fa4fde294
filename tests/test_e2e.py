"""End to end: the documented commands, run as subprocesses on real envs.

A training run costs one compilation of the train step, a minute or more on a
busy 2-core CPU, so every run that trains is `slow` and runs the documented
command verbatim (CI runs them as separate commands). The fast checks run the
same entry points without an update (run.train_ratio 0, run.pretrain 0) or
stop at a configuration error. SMALL shrinks the MLP encoder and decoder,
which the debug block leaves at 5 x 1024 units.
"""

import json
import math
import os
import pathlib
import struct
import subprocess
import sys

import pytest

from test_inference import SMALL, save_untrained_logdir

from embodied.core.config import load_config, load_yaml
from dreamerv3 import jaxagent

ROOT = pathlib.Path(__file__).resolve().parent.parent
TRAIN = [sys.executable, 'dreamerv3/train.py']
TRAIN_MODULE = [sys.executable, '-m', 'dreamerv3.train']
CARTPOLE = ['--configs', 'debug', '--task', 'gym_CartPole-v1']


def run(command, timeout=900, check=True):
  """Runs a command from the repository root; on failure shows its output."""
  result = subprocess.run(
      command, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
      env={**os.environ, 'PYTHONUNBUFFERED': '1'})
  if check and result.returncode != 0:
    pytest.fail(
        f'{" ".join(map(str, command))} exited with {result.returncode}:\n'
        f'{result.stdout[-3000:]}\n{result.stderr[-3000:]}')
  return result


def read_metrics(logdir):
  lines = (pathlib.Path(logdir) / 'metrics.jsonl').read_text().splitlines()
  return [json.loads(line) for line in lines if line.strip()]


def keys(metrics):
  return {key for record in metrics for key in record}


def values(metrics, prefix):
  return [v for record in metrics for k, v in record.items() if k.startswith(prefix)]


def read_event_tags(logdir):
  """{tag: 'scalar' | 'image'} of the TensorBoard event files in logdir."""
  from tensorboardX.proto.event_pb2 import Event
  tags = {}
  for path in pathlib.Path(logdir).glob('events.out.tfevents.*'):
    data, offset = path.read_bytes(), 0
    while offset < len(data):  # TFRecords: length u64, crc u32, data, crc u32.
      (length,) = struct.unpack('<Q', data[offset:offset + 8])
      event = Event.FromString(data[offset + 12:offset + 12 + length])
      for value in event.summary.value:
        tags[value.tag] = 'image' if value.HasField('image') else 'scalar'
      offset += 12 + length + 4
  return tags


def assert_trained(logdir, episodes=True):
  """Finite losses were logged, episodes ended, and a checkpoint exists."""
  metrics = read_metrics(logdir)
  losses = values(metrics, 'train/loss/')
  assert losses and all(math.isfinite(v) for v in losses), losses
  if episodes:
    assert values(metrics, 'episode/score'), keys(metrics)
  assert list((pathlib.Path(logdir) / 'checkpoint').glob('ckpt-*/arrays.npz'))
  return metrics


# Evaluating a saved agent.

def test_eval_only_logs_scores_and_trains_nothing(tmp_path):
  source, _ = save_untrained_logdir(tmp_path / 'trained')
  logdir = tmp_path / 'eval'
  result = run([
      *TRAIN_MODULE, *CARTPOLE, *SMALL, '--envs.parallel', 'none', '--run.script', 'eval_only',
      '--run.from_checkpoint', str(source), '--run.eval_eps', '2', '--run.logdir', str(logdir)])
  assert f'Loaded agent from {source / "checkpoint"}' in result.stdout
  metrics = read_metrics(logdir)
  assert values(metrics, 'episode/score') and values(metrics, 'episode/length')
  assert not [key for key in keys(metrics) if key.startswith(('train/', 'report/'))]
  assert not (logdir / 'checkpoint').exists() and not (logdir / 'replay').exists()


@pytest.mark.slow   # 15 s: train.py builds the env and agent before this check.
def test_eval_only_without_checkpoint_is_a_config_error(tmp_path):
  result = run([*TRAIN, *CARTPOLE, '--run.script', 'eval_only', '--run.logdir',
                str(tmp_path)], check=False)
  assert result.returncode == 2 and 'run.from_checkpoint' in result.stderr
  assert 'Traceback' not in result.stderr


# Gymnasium tasks.

@pytest.mark.slow
@pytest.mark.parametrize('task', ['gym_CartPole-v1', 'gym_Pendulum-v1'])
def test_gym_debug_command(task, tmp_path):
  """issue 3: the documented 1500-step debug runs, verbatim."""
  run([*TRAIN, '--configs', 'debug', '--task', task, '--run.steps', '1500',
       '--run.logdir', str(tmp_path)])
  assert_trained(tmp_path)


# Devices.

@pytest.mark.slow
def test_data_parallel_over_two_logical_cpus(tmp_path):
  result = run([
      *TRAIN, *CARTPOLE, '--jax.parallel', 'True', '--jax.logical_cpus', '2',
      '--batch_size', '4', '--run.steps', '300', '--run.logdir', str(tmp_path)])
  assert 'Devices: 2 x cpu' in result.stdout
  assert_trained(tmp_path)


@pytest.mark.parametrize('entry', [TRAIN, TRAIN_MODULE], ids=['script', 'module'])
def test_batch_not_divisible_by_devices_is_a_clear_error(entry, tmp_path):
  result = run([
      *entry, *CARTPOLE, '--jax.parallel', 'True', '--jax.logical_cpus', '2',
      '--batch_size', '3', '--run.logdir', str(tmp_path)], check=False)
  assert result.returncode == 2, result.stderr
  assert 'batch_size 3' in result.stderr and 'multiple of 2' in result.stderr
  assert 'Traceback' not in result.stderr


# example.py.

def test_example_runs_without_updates(tmp_path):
  """example.py wires env, replay, logger, agent and checkpoint; no train step."""
  result = run([
      sys.executable, 'example.py', '--configs', 'debug', *SMALL, '--run.train_ratio', '0',
      '--run.pretrain', '0', '--run.steps', '120', '--run.logdir', str(tmp_path)])
  assert 'Step 120/120' in result.stdout
  restarts = result.stdout.count('Restarting with transparent huge pages')
  config = load_config(load_yaml(ROOT / 'configs.yaml'), ['--configs', 'debug'])[0]
  assert restarts == (0 if jaxagent.huge_pages_environ(config) is None else 1), result.stdout
  metrics = read_metrics(tmp_path)
  assert max(record['step'] for record in metrics) == 120
  assert list((tmp_path / 'checkpoint').glob('ckpt-*/arrays.npz'))
  assert (tmp_path / 'config.yaml').exists()


@pytest.mark.slow
def test_example_documented_command(tmp_path):
  run([sys.executable, 'example.py', '--configs', 'debug', '--run.steps', '500',
       '--run.logdir', str(tmp_path)])
  assert_trained(tmp_path)


# Image suites: TensorBoard scalars and the open-loop video.

def assert_image_run(logdir, episodes=True):
  """Trained, with TensorBoard scalars and the open-loop video (and episode videos)."""
  metrics = assert_trained(logdir, episodes)
  tags = read_event_tags(logdir)
  assert tags.get('report/openl_image') == 'image', sorted(tags)
  assert tags.get('train/loss/image') == 'scalar', sorted(tags)
  if episodes:
    assert tags.get('episode/score') == 'scalar' and tags.get('episode/policy_image') == 'image'
  return metrics


@pytest.mark.slow
def test_crafter_debug_run_writes_tensorboard_and_openloop_video(tmp_path):
  pytest.importorskip('crafter')
  run([*TRAIN, '--configs', 'crafter', 'debug', '--batch_size', '8',
       '--run.train_every', '32', '--run.steps', '600', '--run.logdir', str(tmp_path)])
  assert_image_run(tmp_path)


# In 300 steps no episode ends: the driver restarts the episodes after the
# random prefill (120 steps over 2 envs), and wrapper.length is 100.

@pytest.mark.slow
def test_dmc_vision_trains_briefly(tmp_path):
  pytest.importorskip('dm_control')
  run([*TRAIN, '--configs', 'dmc_vision', 'debug', '--task', 'dmc_walker_walk',
       '--run.steps', '300', '--run.logdir', str(tmp_path)])
  assert_image_run(tmp_path, episodes=False)


@pytest.mark.slow
def test_atari_trains_briefly(tmp_path):
  pytest.importorskip('ale_py')
  run([*TRAIN, '--configs', 'atari', 'debug', '--task', 'atari_pong',
       '--run.steps', '300', '--run.logdir', str(tmp_path)])
  assert_image_run(tmp_path, episodes=False)
