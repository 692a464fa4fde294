"""Logger and its outputs: JSONL lines, the 80-column terminal, TensorBoard events."""

import io
import json
import struct

import numpy as np
import pytest

from embodied.core.basics import Counter
from embodied.core.config import ConfigError
from embodied.core.logger import (
    JSONLOutput, Logger, TensorBoardOutput, TerminalOutput, duration, make_outputs,
    video_grid, wrap)


class Capture:
  """An output that keeps every list of summaries it receives."""

  def __init__(self):
    self.writes = []

  def __call__(self, summaries):
    self.writes.append(list(summaries))


class FakeTime:

  def __init__(self):
    self.now = 100.0

  def __call__(self):
    return self.now


def test_add_sorts_values_into_scalars_images_and_videos():
  capture = Capture()
  step = Counter(7)
  logger = Logger(step, [capture], multiplier=2)
  logger.add({
      'loss': np.float32(0.5), 'count': 3, 'flag': True,
      'gray': np.zeros((4, 5)), 'rgb': np.ones((4, 5, 3), np.float32),
      'clip': np.zeros((6, 4, 5, 3), np.uint8),
      'openl': np.zeros((2, 6, 4, 5, 3), np.uint8)}, prefix='train')
  logger.write()
  (summaries,) = capture.writes
  values = {name: value for _, name, value in summaries}
  assert {s for s, _, _ in summaries} == {14}  # step * multiplier
  assert float(values['train/loss']) == 0.5 and float(values['train/flag']) == 1.0
  assert values['train/gray'].shape == (4, 5, 1)
  assert values['train/rgb'].dtype == np.uint8 and values['train/rgb'].max() == 255
  assert values['train/clip'].shape == (6, 4, 5, 3)
  assert values['train/openl'].shape == (6, 4, 10, 3)
  logger.write()
  assert capture.writes[1] == []  # write() clears what it sent.


def test_add_rejects_vectors_and_strings_with_the_metric_name():
  logger = Logger(Counter(), [])
  with pytest.raises(ValueError, match="'train/hist'.*shape \\(3,\\)"):
    logger.add({'hist': np.zeros(3)}, prefix='train')
  with pytest.raises(ValueError, match="'note'"):
    logger.scalar('note', 'hello')


def test_video_grid_puts_the_batch_side_by_side():
  videos = np.arange(2 * 3 * 2 * 2 * 1).reshape(2, 3, 2, 2, 1)
  grid = video_grid(videos)  # [T, H, B * W, C]
  assert grid.shape == (3, 2, 4, 1)
  np.testing.assert_array_equal(grid[:, :, :2], videos[0])
  np.testing.assert_array_equal(grid[:, :, 2:], videos[1])


def test_write_fps_is_env_steps_per_second_between_writes():
  capture, clock, step = Capture(), FakeTime(), Counter()
  logger = Logger(step, [capture], now=clock)
  logger.write(fps=True)
  step.increment(300)
  clock.now += 10
  logger.write(fps=True)
  assert capture.writes[0] == []
  ((_, name, value),) = capture.writes[1]
  assert name == 'fps/env' and float(value) == pytest.approx(30)


def test_jsonl_writes_one_object_per_write_and_appends_on_resume(tmp_path):
  step = Counter()
  logger = Logger(step, [JSONLOutput(tmp_path)])
  for _ in range(3):
    step.increment(5)
    logger.add({'loss': float(step) / 10, 'image': np.zeros((2, 2, 3), np.uint8)}, prefix='x')
    logger.write()
  logger = Logger(step, [JSONLOutput(tmp_path)])  # A resumed run.
  step.increment(5)
  logger.scalar('episode/score', 2.5)
  logger.write()
  logger.write()  # Nothing to write: no empty line.
  lines = [json.loads(line) for line in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  assert lines == [
      {'step': 5, 'x/loss': 0.5}, {'step': 10, 'x/loss': 1.0},
      {'step': 15, 'x/loss': 1.5}, {'step': 20, 'episode/score': 2.5}]


def test_jsonl_pattern_filters_names(tmp_path):
  output = JSONLOutput(tmp_path, filename='eval.jsonl', pattern='^eval_')
  output([(3, 'eval_episode/score', np.asarray(1.0)), (3, 'train/loss', np.asarray(2.0))])
  assert json.loads((tmp_path / 'eval.jsonl').read_text()) == {
      'step': 3, 'eval_episode/score': 1.0}


def test_terminal_fits_80_columns_and_shows_progress(capsys):
  clock = FakeTime()
  output = TerminalOutput(pattern='^(train|replay)/', total_steps=1e6, now=clock)
  scalars = {f'train/loss/{name}': 0.001234 * i for i, name in enumerate(
      ['image', 'reward', 'cont', 'dyn', 'rep', 'actor', 'critic', 'a_very_long_name' * 8])}
  scalars.update({'replay/size': 12345, 'episode/score': 12.5, 'other/hidden': 1.0})

  def summaries(step):
    return [(step, name, np.asarray(value, np.float64)) for name, value in scalars.items()]

  output(summaries(1000))
  clock.now += 100
  output(summaries(3000) + [(3000, 'fps/train', np.asarray(4.5)),
                            (3000, 'video', np.zeros((2, 4, 4, 3), np.uint8))])
  lines = capsys.readouterr().out.splitlines()
  assert all(len(line) <= 80 for line in lines)
  (header,) = [line for line in lines if line.startswith('Step 3K')]
  assert header.startswith('Step 3K/1M (0.3%) | 20 fps | 4.5 upd/s | ETA ')
  # ETA = (1e6 - 3000) steps / 20 fps = 13h50m.
  assert duration((1e6 - 3000) / 20) in header and header.endswith('score 12.5')
  text = '\n'.join(lines)
  assert 'train/loss/dyn 0.0037' in text and 'replay/size 12.3K' in text
  assert 'other/hidden' not in text and 'video' not in text


def test_terminal_without_total_and_before_any_score(capsys):
  output = TerminalOutput()
  output([(42, 'train/loss', np.asarray(1.0))])
  assert capsys.readouterr().out.splitlines() == ['Step 42', 'train/loss 1']


def test_duration_and_wrap():
  assert [duration(s) for s in (45, 750, 11520, 190000)] == ['45s', '12m30s', '3h12m', '2d4h']
  assert wrap(['aaaa', 'bbbb', 'cc'], 10) == ['aaaa  bbbb', 'cc']
  assert wrap(['x' * 20], 8) == ['x' * 8]


def read_events(logdir):
  """Parses the TFRecord event files that tensorboardX wrote."""
  from tensorboardX.proto.event_pb2 import Event
  events = []
  for path in sorted(logdir.glob('events.out.tfevents.*')):
    data = path.read_bytes()
    offset = 0
    while offset < len(data):
      (length,) = struct.unpack('<Q', data[offset: offset + 8])
      events.append(Event.FromString(data[offset + 12: offset + 12 + length]))
      offset += 12 + length + 4
  return events


def test_tensorboard_writes_scalars_images_and_gif_videos(tmp_path):
  from PIL import Image
  step = Counter(10)
  output = TensorBoardOutput(tmp_path, fps=10)
  logger = Logger(step, [output])
  video = np.zeros((5, 8, 8, 3), np.uint8)
  video[np.arange(5), np.arange(5), np.arange(5)] = 255  # A dot moving diagonally.
  logger.add({'loss': 1.5, 'frame': video[0], 'policy_image': video}, prefix='episode')
  logger.write()
  step.increment(10)
  logger.scalar('episode/loss', 0.5)
  logger.write()
  logger.close()
  values = [(e.step, v) for e in read_events(tmp_path) for v in e.summary.value]
  scalars = [(s, v.tag, v.simple_value) for s, v in values if v.HasField('simple_value')]
  assert scalars == [(10, 'episode/loss', 1.5), (20, 'episode/loss', 0.5)]
  images = {v.tag: v.image for _, v in values if v.HasField('image')}
  assert set(images) == {'episode/frame', 'episode/policy_image'}
  gif = images['episode/policy_image'].encoded_image_string
  assert gif.startswith(b'GIF89a')
  decoded = Image.open(io.BytesIO(gif))
  assert decoded.n_frames == 5 and decoded.size == (8, 8)
  decoded.seek(3)
  frame = np.asarray(decoded.convert('RGB'))
  assert frame[3, 3, 0] > 200 and frame[2, 2, 0] < 50


def test_make_outputs_builds_named_outputs_and_rejects_unknown(tmp_path):
  outputs = make_outputs(tmp_path, ['terminal', 'jsonl'], '.*', 100)
  assert [type(o) for o in outputs] == [TerminalOutput, JSONLOutput]
  with pytest.raises(ConfigError, match="run.outputs.*'csv'.*terminal"):
    make_outputs(tmp_path, ['terminal', 'csv'])


def test_wandb_output_without_wandb_says_how_to_install(tmp_path):
  try:  # wandb is not a dependency; skip when someone installed it.
    import wandb  # noqa: F401
    pytest.skip('wandb is installed')
  except ImportError:
    pass
  with pytest.raises(ConfigError, match='pip install wandb'):
    make_outputs(tmp_path, ['wandb'])


def test_resumed_tensorboard_purges_what_a_killed_run_logged_past_the_checkpoint(tmp_path):
  from tensorboardX.proto.event_pb2 import SessionLog
  step = Counter(10)
  first = Logger(step, [TensorBoardOutput(tmp_path)])
  for _ in range(3):   # Steps 10, 20, 30; then a kill, and the checkpoint is at 20.
    first.scalar('loss', float(step))
    first.write()
    step.increment(10)
  resumed = Logger(Counter(20), [TensorBoardOutput(tmp_path)])
  resumed.resume(20)
  resumed.close()
  starts = [e.step for e in read_events(tmp_path)
            if e.HasField('session_log') and e.session_log.status == SessionLog.START]
  # TensorBoard drops earlier events at steps >= a START event's step.
  assert starts == [21]
