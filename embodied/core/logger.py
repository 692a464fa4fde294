"""Logger: collects metrics and sends them to terminal, JSONL, TensorBoard, WandB.

A summary is a tuple (step, name, value) where value is a NumPy array: rank 0
for scalars, [H, W, C] uint8 for images and [T, H, W, C] uint8 for videos.
An output is any callable that takes a sequence of summaries.
"""

import io
import json
import os
import pathlib
import re
import time

import numpy as np

from embodied.core.basics import format_number
from embodied.core.config import ConfigError

OUTPUTS = ('terminal', 'jsonl', 'tensorboard', 'wandb')


class Logger:
  """Accumulates summaries at the current step and writes them to the outputs.

    logger = Logger(step, [TerminalOutput(), JSONLOutput(logdir)])
    logger.add({'loss': 0.5, 'openl_image': video}, prefix='train')
    logger.write(fps=True)
  """

  def __init__(self, step, outputs, multiplier=1, now=time.monotonic):
    self.step = step  # Counter-like: int(step) is the current env step.
    self._now = now
    self._outputs = list(outputs)
    self._multiplier = multiplier
    self._summaries = []
    self._last = None  # (step, time) of the previous write(fps=True).

  def resume(self, step):
    """Tells the outputs that can forget (metrics.jsonl, TensorBoard) that the run
    continues from `step`, so what a killed run logged after its checkpoint is dropped."""
    for output in self._outputs:
      if hasattr(output, 'resume'):
        output.resume(step)

  def add(self, mapping, prefix=None):
    """Adds scalars (rank 0), images (rank 2, 3) and videos (rank 4, or 5 as a grid)."""
    for name, value in dict(mapping).items():
      name = f'{prefix}/{name}' if prefix else name
      value = np.asarray(value)
      if value.ndim == 0:
        self.scalar(name, value)
      elif value.ndim in (2, 3):
        self.image(name, value)
      elif value.ndim == 4:
        self.video(name, value)
      elif value.ndim == 5:
        self.video(name, video_grid(value))
      else:
        raise ValueError(
            f"Metric '{name}' has shape {value.shape}; the logger takes scalars, "
            'images [H, W, C], videos [T, H, W, C] or video batches [B, T, H, W, C]. '
            'Reduce it to one of these before logging.')

  def scalar(self, name, value):
    try:
      value = float(value)
    except (TypeError, ValueError):
      raise ValueError(f"Metric '{name}' must be a number, got {value!r}.") from None
    self._summaries.append((self._step(), name, np.asarray(value, np.float64)))

  def image(self, name, value):
    value = to_uint8(value)  # [H, W, C]
    if value.ndim == 2:
      value = value[..., None]
    self._summaries.append((self._step(), name, value))

  def video(self, name, value):
    self._summaries.append((self._step(), name, to_uint8(value)))  # [T, H, W, C]

  def write(self, fps=False):
    """Sends the accumulated summaries to every output and clears them.

    With fps=True, also logs 'fps/env': env steps per second since the
    previous write(fps=True).
    """
    if fps:
      now, step = self._now(), self._step()
      if self._last is not None and now > self._last[1]:
        self.scalar('fps/env', (step - self._last[0]) / (now - self._last[1]))
      self._last = (step, now)
    summaries = tuple(self._summaries)
    self._summaries.clear()
    for output in self._outputs:
      output(summaries)

  def close(self):
    for output in self._outputs:
      if hasattr(output, 'close'):
        output.close()

  def _step(self):
    return int(self.step) * self._multiplier


def to_uint8(value):
  """Images and videos as uint8; floats are taken to lie in [0, 1]."""
  value = np.asarray(value)
  if value.dtype == np.uint8:
    return value
  if np.issubdtype(value.dtype, np.floating):
    value = np.clip(np.nan_to_num(value), 0, 1) * 255
  return np.clip(value, 0, 255).astype(np.uint8)


def video_grid(videos):
  """[B, T, H, W, C] -> [T, H, B * W, C]: the batch side by side."""
  return np.concatenate(list(videos), axis=2)


def make_outputs(logdir, names, filter='.*', total_steps=None, config=None):
  """Builds the outputs named in run.outputs (terminal, jsonl, tensorboard, wandb)."""
  unknown = [name for name in names if name not in OUTPUTS]
  if unknown:
    raise ConfigError(
        f"Config key 'run.outputs' has unknown output(s) {unknown}; valid outputs "
        f"are {list(OUTPUTS)}.")
  outputs = []
  for name in names:
    if name == 'terminal':
      outputs.append(TerminalOutput(filter, total_steps))
    elif name == 'jsonl':
      outputs.append(JSONLOutput(logdir))
    elif name == 'tensorboard':
      outputs.append(TensorBoardOutput(logdir))
    elif name == 'wandb':
      outputs.append(WandBOutput(logdir, config))
  return outputs


class TerminalOutput:
  """Prints a progress line and the scalars matching `pattern`, within 80 columns.

    Step 12.3K/1M (1.2%) | 23.4 fps | 2.1 upd/s | ETA 3h12m | score 12.5
    episode/length 500  replay/size 12.3K  train/loss 1.23 ...

  Env FPS and ETA come from the step and time deltas between calls; upd/s is
  the 'fps/train' scalar when the run loop logs it; score is the last
  'episode/score' seen.
  """

  WIDTH = 80
  HEADER = ('episode/score', 'fps/env', 'fps/train')

  def __init__(self, pattern='.*', total_steps=None, now=time.monotonic):
    self._pattern = re.compile(pattern)
    self._now = now
    self._total = total_steps
    self._last = None  # (step, time) of the previous call.
    self._score = None

  def __call__(self, summaries):
    if not summaries:
      return
    scalars = {name: float(value) for _, name, value in summaries if value.ndim == 0}
    step = max(step for step, _, _ in summaries)
    if 'episode/score' in scalars:
      self._score = scalars['episode/score']
    lines = [self._header(step, scalars.get('fps/train'))]
    items = [
        f'{name} {format_number(value)}' for name, value in sorted(scalars.items())
        if name not in self.HEADER and self._pattern.search(name)]
    lines += wrap(items, self.WIDTH)
    print('\n'.join(lines), flush=True)

  def _header(self, step, train_fps):
    now = self._now()
    fps = None
    if self._last is not None and now > self._last[1]:
      fps = (step - self._last[0]) / (now - self._last[1])
    self._last = (step, now)
    parts = [f'Step {format_number(step)}']
    if self._total:
      parts[0] += f'/{format_number(self._total)} ({100 * step / self._total:.1f}%)'
    if fps is not None:
      parts.append(f'{format_number(fps)} fps')
    if train_fps is not None:
      parts.append(f'{format_number(train_fps)} upd/s')
    if self._total and fps:
      parts.append(f'ETA {duration(max(0, self._total - step) / fps)}')
    if self._score is not None:
      parts.append(f'score {format_number(self._score)}')
    return ' | '.join(parts)[:self.WIDTH]


def duration(seconds):
  """Seconds as a short duration: 45s, 12m30s, 3h12m, 2d5h."""
  seconds = int(seconds)
  days, rest = divmod(seconds, 86400)
  hours, rest = divmod(rest, 3600)
  minutes, seconds = divmod(rest, 60)
  if days:
    return f'{days}d{hours}h'
  if hours:
    return f'{hours}h{minutes:02d}m'
  if minutes:
    return f'{minutes}m{seconds:02d}s'
  return f'{seconds}s'


def wrap(items, width):
  """Joins items with two spaces into lines of at most `width` characters."""
  lines, line = [], ''
  for item in items:
    item = item[:width]
    if line and len(line) + 2 + len(item) > width:
      lines.append(line)
      line = ''
    line = f'{line}  {item}' if line else item
  if line:
    lines.append(line)
  return lines


class JSONLOutput:
  """Appends one JSON object {"step": int, name: float, ...} per step per write.

  Only scalars are written. The file is opened in append mode for every write,
  so a resumed run continues the same file.
  """

  def __init__(self, logdir, filename='metrics.jsonl', pattern='.*'):
    self._path = pathlib.Path(logdir) / filename
    self._path.parent.mkdir(parents=True, exist_ok=True)
    self._pattern = re.compile(pattern)

  def resume(self, step):
    truncate_metrics(self._path, step)

  def __call__(self, summaries):
    by_step = {}
    for step, name, value in summaries:
      if value.ndim == 0 and self._pattern.search(name):
        by_step.setdefault(step, {})[name] = float(value)
    if not by_step:
      return
    with self._path.open('a') as f:
      for step, scalars in sorted(by_step.items()):
        f.write(json.dumps({'step': step, **scalars}) + '\n')


def truncate_metrics(path, step):
  """Drops the lines of a JSONL metrics file past `step` (and a torn last line).

  A run killed after its last checkpoint logged steps that the resumed run
  repeats; dropping them keeps the file's steps non-decreasing. Returns the
  number of lines dropped.
  """
  try:
    with open(path, 'rb') as f:
      lines = f.readlines()
  except FileNotFoundError:
    return 0
  kept, size = 0, 0
  for line in lines:
    try:
      if not line.endswith(b'\n') or json.loads(line)['step'] > step:
        break
    except (ValueError, KeyError, TypeError):
      break
    kept, size = kept + 1, size + len(line)
  if kept < len(lines):
    os.truncate(path, size)
  return len(lines) - kept


class TensorBoardOutput:
  """Scalars, images and videos (as animated GIFs) in TensorBoard event files."""

  def __init__(self, logdir, fps=20):
    import tensorboardX
    self._make = lambda purge_step=None: tensorboardX.SummaryWriter(
        str(logdir), max_queue=1000, purge_step=purge_step)
    self._writer = self._make()
    self._fps = fps

  def resume(self, step):
    """Hides the events that a killed run wrote past `step`, the checkpoint that
    training continues from, so TensorBoard's curves do not go back in steps."""
    self._writer.close()
    self._writer = self._make(purge_step=int(step) + 1)

  def __call__(self, summaries):
    for step, name, value in summaries:
      if value.ndim == 0:
        self._writer.add_scalar(name, float(value), step)
      elif value.ndim == 3:
        self._writer.add_image(name, value, step, dataformats='HWC')
      elif value.ndim == 4:
        self._video(name, value, step)
    self._writer.flush()

  def close(self):
    self._writer.close()

  def _video(self, name, video, step):
    # tensorboardX encodes videos through moviepy, which is often missing or
    # incompatible; encoding the GIF with Pillow works everywhere.
    from tensorboardX.proto.summary_pb2 import Summary
    _, height, width, channels = video.shape
    image = Summary.Image(
        height=height, width=width, colorspace=channels,
        encoded_image_string=encode_gif(video, self._fps))
    summary = Summary(value=[Summary.Value(tag=name, image=image)])
    self._writer._get_file_writer().add_summary(summary, step)


def encode_gif(video, fps):
  """[T, H, W, C] uint8 with C in (1, 3) -> bytes of a looping animated GIF."""
  from PIL import Image
  if video.shape[-1] == 1:
    frames = [Image.fromarray(frame[..., 0], 'L') for frame in video]
  else:
    frames = [Image.fromarray(frame[..., :3], 'RGB') for frame in video]
  buffer = io.BytesIO()
  frames[0].save(
      buffer, format='GIF', save_all=True, append_images=frames[1:],
      duration=max(1, round(1000 / fps)), loop=0)
  return buffer.getvalue()


class WandBOutput:
  """Weights & Biases; only available when the wandb package is installed."""

  def __init__(self, logdir, config=None, project='dreamerv3'):
    try:
      import wandb
    except ImportError:
      raise ConfigError(
          "Logger output 'wandb' requested but wandb is not installed: "
          'pip install wandb') from None
    self._wandb = wandb
    logdir = pathlib.Path(logdir)
    wandb.init(
        project=project, name=logdir.name, dir=str(logdir), resume='allow',
        config=dict(config.flat) if config is not None else None)

  def __call__(self, summaries):
    by_step = {}
    for step, name, value in summaries:
      if value.ndim == 0:
        value = float(value)
      elif value.ndim == 3:
        value = self._wandb.Image(value)
      else:
        value = self._wandb.Video(value.transpose(0, 3, 1, 2), fps=20)  # [T, C, H, W]
      by_step.setdefault(step, {})[name] = value
    for step, values in sorted(by_step.items()):
      self._wandb.log(values, step=step)

  def close(self):
    self._wandb.finish()
