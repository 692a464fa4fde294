"""Replay memory: bytes per step, the estimate for a capacity, and the start-up check."""

import numpy as np

STAMP_BYTES = 8  # The int64 insertion stamp stored next to every step.


class ReplayMemoryError(RuntimeError):
  """The replay would not fit into the available RAM; the message says what to do."""


def step_bytes(spaces):
  """Bytes the replay stores per step for `spaces`: {key: Space or (shape, dtype)}.

  Keys starting with 'log_' are not stored (the replay drops them).
  """
  total = STAMP_BYTES
  for key, space in spaces.items():
    if key.startswith('log_'):
      continue
    shape, dtype = (space.shape, space.dtype) if hasattr(space, 'shape') else space
    total += int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
  return total


def estimate_bytes(spaces, capacity):
  """Bytes of a full replay of `capacity` steps."""
  return step_bytes(spaces) * int(capacity)


def available_memory(meminfo='/proc/meminfo'):
  """MemAvailable in bytes, or None where it cannot be read (non-Linux)."""
  try:
    with open(meminfo) as f:
      for line in f:
        if line.startswith('MemAvailable:'):
          return int(line.split()[1]) * 1024
  except (OSError, ValueError, IndexError):
    pass
  return None


def memory_report(spaces, capacity, check=True, available=None):
  """Returns the start-up line about the replay's memory.

  With check=True, raises ReplayMemoryError when the estimate exceeds the
  available RAM, naming the capacity that would fit.
  e.g. 'Replay capacity 1,000,000 steps x 12.3 KB/step = 12.3 GB (available RAM: 20.1 GB).'
  """
  per_step = step_bytes(spaces)
  total = per_step * int(capacity)
  if available is None:
    available = available_memory()
  free = format_bytes(available) if available is not None else 'unknown'
  line = (f'Replay capacity {int(capacity):,} steps x {format_bytes(per_step)}/step = '
          f'{format_bytes(total)} (available RAM: {free}).')
  if check and available is not None and total > available:
    raise ReplayMemoryError(
        f'{line} The replay does not fit into the available RAM: set replay_size '
        f'<= {available // per_step:,} or pass --run.check_memory False.')
  return line


def format_bytes(count):
  """1234567 -> '1.2 MB' (decimal units)."""
  for unit in ('B', 'KB', 'MB', 'GB', 'TB'):
    if abs(count) < 1000 or unit == 'TB':
      return f'{count:.0f} {unit}' if unit == 'B' else f'{count:.1f} {unit}'
    count /= 1000
