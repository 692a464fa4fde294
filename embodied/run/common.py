"""Pieces shared by the run loops: episode statistics, metric averaging, prefill,
agent updates with the non-finite guard, and what keeps a run resumable."""

import collections
import contextlib
import pathlib
import queue
import re
import signal
import sys
import threading
import time

import numpy as np

from embodied.core.basics import Ratio
from embodied.core.checkpoint import Checkpoint, CheckpointError, write_npz
from embodied.replay.memory import memory_report


def episode_metrics(episode, args):
  """Statistics of one episode (dict of [T, ...] arrays) for the logger.

  score: the sum of rewards. length: len(episode) - 1, the number of actions
  the env executed, since the first (reset) step carries no reward. For every
  `log_<key>`: sum_<key>, mean_<key>, max_<key> when the key matches the
  regex args.log_keys_sum / _mean / _max (matched from the start of the key);
  zero values are skipped unless args.log_zeros. Image keys named in
  args.log_keys_video become policy_<key> videos [T, H, W, C].
  """
  metrics = {
      'score': float(np.sum(episode['reward'], dtype=np.float64)),
      'length': len(episode['reward']) - 1,
  }
  reducers = (('sum', args.log_keys_sum, np.sum), ('mean', args.log_keys_mean, np.mean),
              ('max', args.log_keys_max, np.max))
  for key, value in episode.items():
    if not key.startswith('log_'):
      continue
    for name, pattern, reduce in reducers:
      if not re.match(pattern, key):
        continue
      stat = float(reduce(value.astype(np.float64)))
      if stat != 0 or args.log_zeros:
        metrics[f'{name}_{key[len("log_"):]}'] = stat
  for key in args.log_keys_video:
    if key in episode and episode[key].ndim == 4:
      metrics[f'policy_{key}'] = episode[key]
  return metrics


class Mean:
  """Averages scalar metrics over the additions since the last result().

  Non-scalars (images, videos) keep their latest value.
  """

  def __init__(self):
    self._sums, self._counts, self._latest = {}, {}, {}

  def add(self, metrics):
    for key, value in metrics.items():
      value = np.asarray(value)
      if value.ndim == 0:
        self._sums[key] = self._sums.get(key, 0.0) + float(value)
        self._counts[key] = self._counts.get(key, 0) + 1
      else:
        self._latest[key] = value

  def result(self):
    """Returns the averages and clears them."""
    metrics = {key: total / self._counts[key] for key, total in self._sums.items()}
    metrics.update(self._latest)
    self.__init__()
    return metrics


class Rate:
  """Events per second between result() calls, e.g. updates/s."""

  def __init__(self):
    self._count = 0
    self._start = time.monotonic()

  def add(self, count=1):
    self._count += count

  def result(self):
    now = time.monotonic()
    rate = self._count / max(now - self._start, 1e-9)
    self._count, self._start = 0, now
    return rate


def train_schedule(args):
  """Ratio owing agent updates per env step (counted over all envs).

  With args.train_every > 0: one update every train_every env steps,
  whatever the batch size. Otherwise train_ratio replayed steps per env step,
  i.e. one update every batch_steps / train_ratio env steps (algorithm.md
  §5.3); train_ratio 512 with batch 16 x 64 is one update per 2 env steps.
  """
  if args.train_every > 0:
    return Ratio(1 / args.train_every)
  return Ratio(args.train_ratio / args.batch_steps)


def batch_size(args, replay):
  """B = batch_steps // T: the loops get B * T (args.batch_steps) and T from the replay."""
  if args.batch_steps <= 0 or args.batch_steps % replay.length:
    raise ValueError(
        f'run.batch_steps must be batch_size * batch_length, a positive multiple of '
        f'the replay length {replay.length}; got {args.batch_steps}.')
  return args.batch_steps // replay.length


def replay_adder(replay):
  """An on_step callback that stores transitions without their log_* keys."""
  def add(tran, worker):
    replay.add({k: v for k, v in tran.items() if not k.startswith('log_')}, worker)
  return add


def prefill(driver, replay, policy, target, name):
  """Steps the driver with `policy` until the replay holds `target` items.

  Returns False when the replay (e.g. reloaded on resume) is already full
  enough. Afterwards the driver is reset, so the agent starts fresh episodes
  with its own policy state.
  """
  target = min(target, replay.capacity)
  if len(replay) >= target:
    return False
  print(f'Prefill {name} replay: {len(replay)} -> {target} items with a random policy.')
  while len(replay) < target:
    driver(policy, steps=target - len(replay))
  driver.reset()
  return True


def check_memory(env, capacity, check=True):
  """Prints the replay memory estimate for `capacity` steps of env's transitions.

  With check=True (run.check_memory) raises ReplayMemoryError when it cannot
  fit into the available RAM.
  """
  spaces = {**env.obs_space, **{k: v for k, v in env.act_space.items() if k != 'reset'}}
  print(memory_report(spaces, capacity, check))


class NonfiniteError(RuntimeError):
  """Too many consecutive updates had non-finite gradients; the message is user-facing."""


class Updates:
  """Agent updates on replay batches, with averaged metrics and a non-finite guard.

  Batches are sampled in the calling thread at fixed points: the batch of
  update k + 1 right after update k started. So the data an update sees
  depends only on the sequence of env steps and updates, never on thread
  timing, and a run is reproducible. The agent moves that next batch to the
  devices in its dataset() thread while update k runs. The sampled next batch
  is part of the checkpoint (save/load), so a resumed run trains on what an
  uninterrupted one would (docs/reliability.md). No RSSM carry passes between
  updates: every replayed window starts with is_first, which resets the state
  anyway, and a carry from a non-finite batch could otherwise poison the
  updates after it.

  The metrics of an update are fetched once the next update has started (or
  at flush()), so the host does not wait for the device in between. The agent
  reports 'nonfinite', the number of consecutive updates it skipped for
  non-finite gradients (a warning is printed); at `limit` (run.nonfinite_limit, <= 0: never) the
  offending batch goes to `batch_path` (npz, no pickle) and NonfiniteError
  is raised, while the agent still holds the last good parameters.
  """

  def __init__(self, agent, replay, batch_size, limit, batch_path):
    self._agent = agent
    self._replay_batches = replay.dataset(batch_size)
    self._feed = queue.Queue()            # Numpy batches for the agent's device thread.
    self._device_batches = agent.dataset(iter(self._feed.get, None))
    self._next = None                     # The numpy batch of the next update, once sampled.
    self._next_fed = False                # Whether _next is in the feed already.
    self._limit = int(limit)
    self._batch_path = str(batch_path)
    self._pending = collections.deque()   # (metrics as device arrays, batch) of started updates.
    self._metrics = Mean()
    self._rate = Rate()
    self._warned = 0
    self.last_batch = None                # The newest batch [B, T, ...], for reports.

  def __call__(self):
    if self._next is None:
      self._next = next(self._replay_batches)
    if not self._next_fed:
      self._feed.put(self._next)
    batch = self._next
    _, _, metrics = self._agent.train(next(self._device_batches), None)
    self._next = next(self._replay_batches)
    self._feed.put(self._next)
    self._next_fed = True
    self.last_batch = batch
    self._pending.append((metrics, batch))
    self._rate.add()
    while len(self._pending) > 1:
      self._finish(*self._pending.popleft())

  def save(self):
    return {'next': self._next}

  def load(self, tree):
    self._next, self._next_fed = tree['next'], False

  def flush(self):
    """Fetches the metrics of every started update (and applies the guard to them)."""
    while self._pending:
      self._finish(*self._pending.popleft())

  def result(self):
    """({metric: mean since the last result}, updates per second)."""
    self.flush()
    return self._metrics.result(), self._rate.result()

  def _finish(self, metrics, batch):
    self._metrics.add(metrics)
    if 'nonfinite' not in metrics:
      return
    count = int(np.asarray(metrics['nonfinite']))
    if count == 0:
      self._warned = 0
      return
    # Warn at 1, 10, 100, ... in a row; from 10 with dynamic loss scaling
    # (float16), which skips an update whenever it raises the scale too far.
    first = 10 if any(key.endswith('loss_scale') for key in metrics) else 1
    if count >= max(first, 10 * self._warned):
      self._warned = count
      print(f'Warning: {count} update(s) in a row had non-finite gradients and were '
            f'skipped; the run stops at run.nonfinite_limit {self._limit}.',
            file=sys.stderr, flush=True)
    if 0 < self._limit <= count:
      raise NonfiniteError(self._save_batch(batch, count))

  def _save_batch(self, batch, count):
    with open(self._batch_path, 'wb') as f:
      write_npz(f, {key: np.asarray(value) for key, value in batch.items()})
    return (f'{count} consecutive updates had non-finite gradients (run.nonfinite_limit '
            f'{self._limit}); stopped with the last good parameters. The last of these '
            f'batches is in {self._batch_path} (np.load it). Look for NaN/inf or huge '
            f'values in the data, or lower the learning rates; rerun the same command '
            f'to continue from the checkpoint.')


class SignalStop:
  """SIGINT (Ctrl-C) and SIGTERM (kill, docker stop, preemption) stop the loop at
  the next env step with KeyboardInterrupt, so checkpoint_on_failure saves.

  The handlers only set a flag: an exception raised straight from a handler can
  land anywhere, even in a garbage-collector callback that swallows it. A
  second signal raises at once, to get out of a run that hangs. Outside the
  main thread, signals cannot be handled and this does nothing.

    with SignalStop() as stop:
      driver.on_step(stop.check)
  """

  def __init__(self):
    self.received = None
    self._previous = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for number in (signal.SIGINT, signal.SIGTERM):
        self._previous[number] = signal.signal(number, self._handle)
    return self

  def __exit__(self, *exc_info):
    for number, handler in self._previous.items():
      signal.signal(number, handler)
    self._previous.clear()

  def check(self, *unused):
    if self.received:
      raise KeyboardInterrupt(f'{self.received} received')

  def _handle(self, number, frame):
    if self.received:
      raise KeyboardInterrupt(f'{self.received} received twice')
    self.received = signal.Signals(number).name


def resume_or_start(logdir, logger, step, **objects):
  """The run's Checkpoint of step and objects in logdir/checkpoint: loaded when one
  exists (the logger then drops what was logged past it), else saved as the first.
  Returns (checkpoint, resumed)."""
  checkpoint = Checkpoint(pathlib.Path(logdir) / 'checkpoint')
  checkpoint.step = step
  for name, obj in objects.items():
    setattr(checkpoint, name, obj)
  resumed = checkpoint.load_or_save()
  if resumed:
    logger.resume(int(step))   # Drops what a killed run logged past the checkpoint.
  print(f"{'Resumed' if resumed else 'Started'} training at step {int(step)}.")
  return checkpoint, resumed


@contextlib.contextmanager
def checkpoint_on_failure(checkpoint, step):
  """Saves a checkpoint when the body raises (env crash, NaN, Ctrl-C), then re-raises.

  Checkpoint writes are atomic, so a save that fails here (e.g. the agent's
  state was lost with the failing update) leaves the previous checkpoint.
  """
  try:
    yield
  except CheckpointError:
    raise   # Saving is what failed.
  except BaseException as error:
    try:
      path = checkpoint.save()
      print(f'Stopped at step {int(step)} ({type(error).__name__}); saved checkpoint '
            f'{path}. Rerun the same command to continue.', flush=True)
    except Exception as save_error:
      print(f'Stopped at step {int(step)} ({type(error).__name__}); could not save a '
            f'checkpoint ({save_error}); the previous one is intact.', flush=True)
    raise
