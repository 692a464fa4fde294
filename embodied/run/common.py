"""Pieces shared by the run loops: episode statistics, metric averaging, prefill."""

import re
import time

import numpy as np

from embodied.core.basics import Ratio
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
