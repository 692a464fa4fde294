"""Uniform replay of fixed-length windows (algorithm.md §6).

Items: after every added step, once a worker has at least `length` steps, the
window of its last `length` steps becomes an item (stride 1). Items are thus
all overlapping windows of each worker's continuous stream; they cross episode
boundaries, where is_first marks the starts.

Storage: each step is stored once, in per-worker chunks (see chunks.py); an
item is only a start position in a stream, and windows that span chunks are
joined when sampled. Capacity counts items (about steps): the oldest item is
evicted first, and a chunk's memory is freed once no item starts in or before it.

Persistence (directory given): full chunks are written in a background thread
as they fill, partial ones at every save(); load() rebuilds the streams once.
Each worker's stream continues after a resume, so a run stopped right after a
checkpoint resumes with the same items, the same RNG state and hence the same
samples.
"""

import bisect
import collections
import concurrent.futures
import heapq
import os
import threading
import warnings

import numpy as np

from embodied.replay import chunks as chunklib
from embodied.replay.memory import step_bytes


class _Stream:
  """One worker's continuous sequence of steps, as a list of chunks.

  Positions count steps from the stream's first held step; items are the
  windows starting at positions lo ... end - length.
  """

  def __init__(self, key, origin, worker=None):
    self.key = key          # (origin, first stamp): orders streams for sampling.
    self.origin = origin
    self.worker = worker    # None for streams of an earlier run that no worker continues.
    self.chunks, self.starts = [], []
    self.lo = self.end = 0
    self.added = 0          # Steps added in this process (online queue phase).

  def items(self, length):
    return max(0, self.end - self.lo - length + 1)

  def add_chunk(self, chunk):
    self.chunks.append(chunk)
    self.starts.append(self.end)
    self.end += chunk.length

  def stamp_at(self, pos):
    index = bisect.bisect_right(self.starts, pos) - 1
    return int(self.chunks[index].stamp[pos - self.starts[index]])

  def chunk_at(self, pos):
    return self.chunks[bisect.bisect_right(self.starts, pos) - 1]

  def pieces(self, pos, count):
    """Yields (chunk, first row, end row, offset in window) covering [pos, pos + count)."""
    index = bisect.bisect_right(self.starts, pos) - 1
    offset = 0
    while offset < count:
      chunk, row = self.chunks[index], pos + offset - self.starts[index]
      take = min(count - offset, chunk.length - row)
      yield chunk, row, row + take, offset
      offset += take
      index += 1

  def free(self):
    """Drops leading chunks that end at or before lo: no item needs them."""
    while len(self.chunks) > 1 and self.starts[1] <= self.lo:
      self.chunks.pop(0)
      self.starts.pop(0)


class Uniform:
  """Uniform replay of windows of `length` steps with FIFO eviction at `capacity` items."""

  def __init__(self, length, capacity, directory=None, online=False, chunksize=1024, seed=0):
    for name, value in (('length', length), ('capacity', capacity), ('chunksize', chunksize)):
      if int(value) < 1:
        raise ValueError(f'Replay {name} must be at least 1, got {value}.')
    self.length = int(length)
    self.capacity = int(capacity)
    self.chunksize = int(chunksize)
    self.online = bool(online)
    self._directory = str(directory) if directory else None
    self._rng = np.random.default_rng(seed)
    self._lock = threading.RLock()  # add() runs in the driver, sample() in a prefetch thread.
    self._spec = None               # {key: (shape, dtype)} of a step.
    self._streams = []              # Sorted by key: the order of the uniform item index.
    self._workers = {}              # worker -> the stream it appends to
    self._heap = []                 # (stamp of oldest item, key, stream) of streams with items
    self._queue = collections.deque()  # Online windows: (stream, start position).
    self._items = 0
    self._stamp = 0                 # Next global step stamp.
    self._counts = collections.Counter()
    self._loaded = False
    self._writer = None
    self._pending = []              # (future, chunk) of background writes.
    self._failed = {}               # uuid -> chunk whose write failed; retried by save().

  def __len__(self):
    return self._items

  @property
  def bytes_per_step(self):
    """Stored bytes per step (step arrays + stamp), known after the first step."""
    return step_bytes(self._spec) if self._spec else 0

  @property
  def nbytes(self):
    """Bytes of all allocated chunk arrays."""
    with self._lock:
      return sum(chunk.nbytes for stream in self._streams for chunk in stream.chunks)

  def stats(self):
    return {'items': self._items, 'steps': self._counts['steps'],
            'inserts': self._counts['inserts'], 'samples': self._counts['samples'],
            'evicted': self._counts['evicted'], 'streams': len(self._streams),
            'online_queue': len(self._queue), 'ram_bytes': self.nbytes}

  def add(self, step, worker=0):
    """Appends one env step (dict of arrays) to the stream of `worker`."""
    step = {key: value for key, value in step.items() if not key.startswith('log_')}
    with self._lock:
      self._check_step(step)
      stream = self._workers.get(worker) or self._new_stream(worker)
      chunk = self._writable_tail(stream)
      chunk.append(step, self._stamp)
      self._stamp += 1
      stream.end += 1
      stream.added += 1
      self._counts['steps'] += 1
      if stream.end - stream.lo >= self.length:
        if stream.end - stream.lo == self.length:  # The stream's only item.
          heapq.heappush(self._heap, (stream.stamp_at(stream.lo + self.length - 1),
                                      stream.key, stream))
        self._items += 1
        self._counts['inserts'] += 1
      if chunk.full:
        self._finish(chunk)
      if self.online and stream.added % self.length == 0:
        self._queue.append((stream, stream.end - self.length))
      while self._items > self.capacity:
        self._evict()

  def sample(self):
    """Returns one window as {key: [length, ...]} with is_first[0] = True."""
    out = {key: np.empty((self.length,) + shape, dtype)
           for key, (shape, dtype) in (self._spec or {}).items()}
    with self._lock:
      self._copy(*self._pick(), out, None)
    if 'is_first' in out:
      out['is_first'][0] = True
    return out

  def dataset(self, batch_size):
    """Yields batches {key: [batch_size, length, ...]} forever."""
    while True:
      batch = {key: np.empty((batch_size, self.length) + shape, dtype)
               for key, (shape, dtype) in (self._spec or {}).items()}
      for row in range(batch_size):
        with self._lock:
          self._copy(*self._pick(), batch, row)
      if 'is_first' in batch:
        batch['is_first'][:, 0] = True
      yield batch

  def save(self):
    """Writes unsaved chunks, waits for all writes; returns the tree for the checkpoint."""
    with self._lock:
      if self._directory:
        for chunk in list(self._failed.values()):
          self._write(chunk)
        for stream in self._workers.values():
          if stream.chunks and stream.chunks[-1].length > stream.chunks[-1].saved:
            self._write(stream.chunks[-1])
        errors = self._collect(wait=True)
        if errors:
          raise errors[0]
      return {
          'rng': _rng_state(self._rng),
          'stamp': self._stamp,
          'items': self._items,
          # The chunk each worker appends to, so its stream continues on resume.
          'workers': [[worker, stream.chunks[-1].uuid]
                      for worker, stream in sorted(self._workers.items()) if stream.chunks],
          # The chunk of each stream's oldest item, so load() reads the same items.
          'heads': [stream.chunk_at(stream.lo).uuid
                    for stream in self._streams if stream.end > stream.lo],
      }

  def load(self, tree=None):
    """Restores the RNG and the chunks in the directory, once.

    A second call, or a call after steps were added, is ignored with a warning:
    loading again would duplicate data in memory.
    """
    with self._lock:
      if self._loaded or self._counts['steps']:
        warnings.warn('Replay.load() ignored: the replay was already loaded or has new '
                      'steps, and loading again would duplicate data.', stacklevel=2)
        return
      self._loaded = True
      tree = tree or {}
      if 'rng' in tree:
        _set_rng_state(self._rng, tree['rng'])
      self._stamp = max(self._stamp, int(tree.get('stamp', 0)))
      if self._directory and os.path.isdir(self._directory):
        self._load_chunks(tree)

  def _check_step(self, step):
    if self._spec is None:
      reserved = {chunklib.STAMP, chunklib.ORIGIN} & set(step)
      if reserved:
        raise ValueError(f'Replay step keys {sorted(reserved)} are reserved; rename them.')
      self._spec = {key: (np.shape(value), np.asarray(value).dtype) for key, value in step.items()}
      return
    if step.keys() != self._spec.keys():
      raise ValueError(
          f'Replay step has keys {sorted(step)}, expected {sorted(self._spec)} (the keys of '
          f'the first step or of the loaded replay directory {self._directory}). Every step '
          f'needs the same keys; for a different env use a new logdir.')
    for key, (shape, _) in self._spec.items():
      if np.shape(step[key]) != shape:
        raise ValueError(
            f'Replay step key "{key}" has shape {np.shape(step[key])}, expected {shape} '
            f'(the shape of the first step or of the loaded replay directory).')

  def _new_stream(self, worker):
    stream = _Stream((self._stamp, self._stamp), self._stamp, worker)
    bisect.insort(self._streams, stream, key=lambda s: s.key)
    self._workers[worker] = stream
    return stream

  def _writable_tail(self, stream):
    tail = stream.chunks[-1] if stream.chunks else None
    if tail is not None and not tail.full:
      return tail
    if tail is not None and tail.succ == chunklib.EMPTY:
      self._finish(tail)  # A continued chunk that was already full.
    uuid = tail.succ if tail is not None else None
    chunk = chunklib.Chunk.allocate(self._spec, self.chunksize, stream.origin, uuid)
    stream.add_chunk(chunk)
    return chunk

  def _finish(self, chunk):
    """Links a full chunk to its successor and writes it."""
    chunk.succ = chunklib.new_uuid()
    if self._directory:
      self._write(chunk)
      self._collect(wait=False)

  def _evict(self):
    _, _, stream = heapq.heappop(self._heap)
    stream.lo += 1
    self._items -= 1
    self._counts['evicted'] += 1
    if stream.items(self.length):
      heapq.heappush(self._heap, (stream.stamp_at(stream.lo + self.length - 1),
                                  stream.key, stream))
    stream.free()
    if stream.worker is None and not stream.items(self.length):
      self._streams.remove(stream)
      stream.chunks.clear()
      stream.starts.clear()

  def _pick(self):
    """Returns (stream, start) of the next window: online queue first, else uniform."""
    while self._queue:
      stream, pos = self._queue.popleft()
      if stream.starts and pos >= stream.starts[0]:  # Still in memory.
        self._counts['samples'] += 1
        return stream, pos
    if not self._items:
      raise RuntimeError(
          f'Replay is empty: it needs {self.length} steps of one worker before it can '
          f'sample. Add steps (prefill) before sampling.')
    index = int(self._rng.integers(self._items))
    self._counts['samples'] += 1
    for stream in self._streams:
      count = stream.items(self.length)
      if index < count:
        return stream, stream.lo + index
      index -= count
    raise AssertionError('item index out of range')

  def _copy(self, stream, pos, out, row):
    for chunk, first, last, offset in stream.pieces(pos, self.length):
      for key, value in chunk.data.items():
        target = out[key] if row is None else out[key][row]
        target[offset: offset + last - first] = value[first: last]

  def _write(self, chunk):
    if self._writer is None:
      os.makedirs(self._directory, exist_ok=True)
      self._writer = concurrent.futures.ThreadPoolExecutor(1, 'replay-writer')
    name, stale = chunk.filename, list(chunk.paths)
    chunk.paths.append(os.path.join(self._directory, name))
    chunk.saved = chunk.length
    future = self._writer.submit(chunklib.write_chunk, self._directory, name, chunk.arrays(), stale)
    self._pending.append((future, chunk))

  def _collect(self, wait):
    """Reaps finished writes; returns their errors (the chunks are retried by save())."""
    errors, running = [], []
    for future, chunk in self._pending:
      if not (wait or future.done()):
        running.append((future, chunk))
        continue
      error = future.exception()
      if error is None:
        self._failed.pop(chunk.uuid, None)
        continue
      chunk.saved = 0
      self._failed[chunk.uuid] = chunk
      errors.append(error)
      warnings.warn(f'Could not write replay chunk to {self._directory}: {error}. It '
                    f'stays in memory and is retried at the next checkpoint.')
    self._pending = running
    return errors

  def _load_chunks(self, tree):
    heads = set(tree.get('heads', []))
    chains = chunklib.link(chunklib.scan(self._directory))
    by_uuid = {}
    for chain in chunklib.select(chains, heads, self.capacity, self.length):
      for run in self._read_chain(chain):
        stream = self._stream_from(run)
        by_uuid.update({chunk.uuid: stream for chunk in run})
        # New stamps must follow every loaded one, even of streams dropped below.
        self._stamp = max(self._stamp, int(run[-1].stamp[run[-1].length - 1]) + 1)
    for worker, uuid in tree.get('workers', []):
      stream = by_uuid.get(uuid)
      if stream is not None and stream.worker is None and worker not in self._workers:
        stream.worker = worker
        self._workers[worker] = stream
        tail = stream.chunks[-1]
        if tail.succ == chunklib.EMPTY and tail.length < self.chunksize:
          tail.grow(self.chunksize)  # Continue filling the partial chunk.
    self._items = sum(stream.items(self.length) for stream in self._streams)
    self._heap = [(s.stamp_at(s.lo + self.length - 1), s.key, s)
                  for s in self._streams if s.items(self.length)]
    heapq.heapify(self._heap)
    while self._items > self.capacity:
      self._evict()
    for stream in list(self._streams):
      stream.free()
      if stream.worker is None and not stream.items(self.length):
        self._streams.remove(stream)

  def _read_chain(self, chain):
    """Yields runs of consecutive valid chunks of a chain (a bad file splits it)."""
    run = []
    for info in chain:
      chunk = chunklib.read_chunk(info)
      if chunk is not None and not self._matches_spec(chunk, info.path):
        chunk = None
      if chunk is None:
        if run:
          yield run
        run = []
      else:
        run.append(chunk)
    if run:
      yield run

  def _matches_spec(self, chunk, path):
    spec = {key: (value.shape[1:], value.dtype) for key, value in chunk.data.items()}
    if self._spec is None:
      self._spec = spec
    if spec != self._spec:
      warnings.warn(f'Skipping replay file {path}: its keys/shapes/dtypes {spec} differ '
                    f'from the other chunks {self._spec}.', stacklevel=4)
      return False
    return True

  def _stream_from(self, run):
    first = run[0]
    stream = _Stream((first.origin, int(first.stamp[0])), first.origin)
    for chunk in run:
      stream.add_chunk(chunk)
    bisect.insort(self._streams, stream, key=lambda s: s.key)
    return stream


def _rng_state(rng):
  """The generator state as JSON-friendly values (128-bit ints as strings)."""
  state = rng.bit_generator.state
  return {'bit_generator': state['bit_generator'],
          'state': str(state['state']['state']), 'inc': str(state['state']['inc']),
          'has_uint32': int(state['has_uint32']), 'uinteger': int(state['uinteger'])}


def _set_rng_state(rng, saved):
  rng.bit_generator.state = {
      'bit_generator': saved['bit_generator'],
      'state': {'state': int(saved['state']), 'inc': int(saved['inc'])},
      'has_uint32': int(saved['has_uint32']), 'uinteger': int(saved['uinteger'])}
