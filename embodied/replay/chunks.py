"""Chunks of consecutive steps and their compressed .npz files.

A chunk holds up to `size` consecutive steps of one stream (one env's
continuous sequence of steps). Its arrays are preallocated per key, so each
step is stored exactly once. Next to the step keys, a chunk keeps:

  stamp   [size] int64  global insertion counter of each step: it orders the
                        items for first-in-first-out eviction across streams
                        and is saved, so the order survives restarts.
  origin  int           stamp of the first step of the stream: a stable id.

Files are named `<time>-<uuid>-<successor uuid>-<length>.npz`; the successor
links re-join a stream's chunks after a restart. A chunk whose successor is not
known yet (the partial tail saved at a checkpoint) has the successor EMPTY.
Writes are atomic (temp file, fsync, rename); reads use allow_pickle=False and
skip any file that fails validation with a warning.
"""

import datetime
import os
import re
import uuid as uuidlib
import warnings
import zipfile
import zlib

import numpy as np

from embodied.core.checkpoint import write_npz

EMPTY = '0' * 32
STAMP, ORIGIN = '_stamp', '_origin'  # Reserved keys in chunk files.
_NAME = re.compile(r'^(\d{8}T\d{6}F\d{6})-([0-9a-f]{32})-([0-9a-f]{32})-(\d+)\.npz$')
_KINDS = 'biuf'  # Bool, int, uint and float arrays are all a replay stores.


def new_uuid():
  return uuidlib.uuid4().hex


class Chunk:
  """Up to `len(stamp)` consecutive steps of one stream."""

  def __init__(self, uuid, origin, data, stamp, length, time=None):
    self.uuid = uuid
    self.succ = EMPTY
    self.origin = origin
    self.time = time or datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%dT%H%M%SF%f')
    self.data = data      # {key: [size, ...]}
    self.stamp = stamp    # [size] int64
    self.length = length  # Number of filled rows.
    self.saved = 0        # Length of the newest file written for this chunk.
    self.paths = []       # Files on disk holding (older versions of) this chunk.

  @classmethod
  def allocate(cls, spec, size, origin, uuid=None):
    data = {key: np.empty((size,) + shape, dtype) for key, (shape, dtype) in spec.items()}
    return cls(uuid or new_uuid(), origin, data, np.empty(size, np.int64), 0)

  @property
  def size(self):
    return len(self.stamp)

  @property
  def full(self):
    return self.length >= self.size

  @property
  def nbytes(self):
    return self.stamp.nbytes + sum(value.nbytes for value in self.data.values())

  @property
  def filename(self):
    return f'{self.time}-{self.uuid}-{self.succ}-{self.length}.npz'

  def append(self, step, stamp):
    row = self.length
    for key, value in step.items():
      self.data[key][row] = value
    self.stamp[row] = stamp
    self.length += 1

  def grow(self, size):
    """Reallocates to `size` rows so a loaded partial chunk can be continued."""
    def grown(value):
      out = np.empty((size,) + value.shape[1:], value.dtype)
      out[:self.length] = value[:self.length]
      return out
    self.data = {key: grown(value) for key, value in self.data.items()}
    self.stamp = grown(self.stamp)

  def arrays(self):
    """The filled rows as {key: [length, ...]} views, for writing a file."""
    arrays = {key: value[:self.length] for key, value in self.data.items()}
    arrays[STAMP] = self.stamp[:self.length]
    arrays[ORIGIN] = np.int64(self.origin)
    return arrays


class FileInfo:
  """What a chunk file's name says: time, uuid, successor, length."""

  def __init__(self, path, time, uuid, succ, length):
    self.path, self.time, self.uuid, self.succ, self.length = path, time, uuid, succ, length
    self.stale = []  # Other files of the same uuid (older versions).


def write_chunk(directory, name, arrays, stale):
  """Atomically writes a compressed chunk file, then deletes older versions."""
  path = os.path.join(directory, name)
  tmp = path + '.tmp'
  try:
    with open(tmp, 'wb') as f:
      write_npz(f, arrays, compress=True)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  for old in stale:
    if old != path and os.path.exists(old):
      os.remove(old)
  return path


def scan(directory, remove_tmp=True):
  """Returns {uuid: FileInfo} of the chunk files in `directory`.

  Of several files for one uuid (a partial chunk saved at a checkpoint and
  later the full one) the longest wins and the others are listed as stale.
  Files of interrupted writes (*.tmp) are removed, unless remove_tmp is False
  (readers of a live run's directory, where they are writes in progress).
  """
  infos = {}
  for name in sorted(os.listdir(directory)):
    path = os.path.join(directory, name)
    if name.endswith('.tmp'):
      if not remove_tmp:
        continue
      # Never complete (writes end with an atomic rename): remove, so kills add no litter.
      try:
        os.remove(path)
        warnings.warn(f'Removed replay file {path}: a write was interrupted.', stacklevel=3)
      except OSError as e:
        warnings.warn(f'Skipping replay file {path}: a write was interrupted ({e}).',
                      stacklevel=3)
      continue
    match = _NAME.match(name)
    if not match:
      if name.endswith('.npz'):
        warnings.warn(f'Skipping replay file {path}: not a chunk file name.', stacklevel=3)
      continue
    time, uuid, succ, length = match.groups()
    info = FileInfo(path, time, uuid, succ, int(length))
    old = infos.get(uuid)
    if old is not None:
      best, worse = sorted([old, info], key=lambda i: (i.length, i.succ != EMPTY))[::-1]
      best.stale = old.stale + [worse.path]
      info = best
    infos[uuid] = info
  return infos


def link(infos):
  """Orders the chunks into streams through their successor links.

  Returns a list of chains, each a list of FileInfo from oldest to newest.
  """
  successors = {info.succ for info in infos.values() if info.succ in infos}
  chains, seen = [], set()
  for info in sorted(infos.values(), key=lambda i: i.time):
    if info.uuid in successors:
      continue
    chain = []
    while info is not None and info.uuid not in seen:
      seen.add(info.uuid)
      chain.append(info)
      info = infos.get(info.succ)
    chains.append(chain)
  return chains


def select(chains, heads, capacity, length):
  """Picks the newest chunks that cover `capacity` items.

  Chains holding a uuid of `heads` (the chunks that held the oldest retained
  item of each stream at the last checkpoint) are taken from that chunk on.
  Then older chunks are added newest first, while the estimated item count,
  sum over chains of (steps - length + 1), stays below capacity.
  Returns the chosen suffix of each chain, oldest chunk first.
  """
  start = {}
  for index, chain in enumerate(chains):
    for position, info in enumerate(chain):
      if info.uuid in heads:
        start[index] = position
        break
  steps = {i: sum(info.length for info in chains[i][j:]) for i, j in start.items()}
  estimate = sum(max(0, n - length + 1) for n in steps.values())
  pool = sorted(((info.time, i, j) for i, chain in enumerate(chains)
                 for j, info in enumerate(chain) if j < start.get(i, len(chain))),
                reverse=True)
  for _, i, j in pool:
    if estimate >= capacity:
      break
    if j >= start.get(i, len(chains[i])):
      continue  # Already covered (chunk times out of order).
    before = max(0, steps.get(i, 0) - length + 1)
    for info in chains[i][j:start.get(i, len(chains[i]))]:
      steps[i] = steps.get(i, 0) + info.length
    start[i] = j
    estimate += max(0, steps[i] - length + 1) - before
  return [chains[i][j:] for i, j in sorted(start.items())]


def read_chunk(info):
  """Loads a chunk file, or returns None with a warning if it is invalid."""
  try:
    with np.load(info.path, allow_pickle=False) as npz:
      arrays = {key: npz[key] for key in npz.files}
    stamp, origin = arrays.pop(STAMP), arrays.pop(ORIGIN)
    _validate(arrays, stamp, origin, info.length)
  except ValueError as e:
    reason = ('it holds pickled objects, which are never loaded' if 'pickle' in str(e)
              else str(e))
    warnings.warn(f'Skipping replay file {info.path}: {reason}.', stacklevel=3)
    return None
  except (OSError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as e:
    warnings.warn(f'Skipping replay file {info.path}: unreadable ({e!r}).', stacklevel=3)
    return None
  chunk = Chunk(info.uuid, int(origin), arrays, stamp.astype(np.int64), info.length, info.time)
  chunk.succ = info.succ
  chunk.saved = info.length
  chunk.paths = [info.path] + info.stale
  return chunk


def _validate(arrays, stamp, origin, length):
  if not arrays:
    raise ValueError('it holds no step keys')
  if origin.shape != () or origin.dtype.kind not in 'iu':
    raise ValueError(f'{ORIGIN} must be an int scalar, got {origin.dtype}{origin.shape}')
  if stamp.shape != (length,) or stamp.dtype.kind not in 'iu':
    raise ValueError(f'{STAMP} must be [{length}] ints, got {stamp.dtype}{stamp.shape}')
  if length > 1 and not np.all(np.diff(stamp) > 0):
    raise ValueError(f'{STAMP} is not increasing')
  for key, value in arrays.items():
    if value.dtype.kind not in _KINDS:
      raise ValueError(f'key {key} has unsupported dtype {value.dtype}')
    if value.shape[:1] != (length,):
      raise ValueError(f'key {key} has {value.shape[:1]} steps, the name says {length}')
