import collections
import os
import random
import re
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

from embodied.core.checkpoint import Checkpoint
from embodied.replay import (
    ReplayMemoryError, Uniform, available_memory, estimate_bytes, memory_report)
from embodied.replay import chunks as chunklib


def make_step(index, worker=0, image=(4, 4, 3)):
  """A step whose 'index' and 'worker' keys identify it."""
  return {
      'image': np.full(image, (index + worker) % 256, np.uint8),
      'vector': np.array([index, worker, 0.5], np.float32),
      'reward': np.float32(index * 0.1),
      'is_first': np.bool_(index % 7 == 0),
      'is_last': np.bool_(index % 7 == 6),
      'is_terminal': np.bool_(False),
      'action': np.array([1.0, -1.0], np.float32),
      'index': np.int64(index),
      'worker': np.int32(worker),
  }


def fill(replay, steps, workers=1, start=0, **kwargs):
  """Adds steps round-robin over workers, like the driver does."""
  for index in range(start, start + steps):
    for worker in range(workers):
      replay.add(make_step(index, worker, **kwargs), worker)


def start_of(sample):
  return int(sample['worker'][0]), int(sample['index'][0])


def assert_is_window(sample, length):
  worker, first = start_of(sample)
  for t in range(length):
    expected = make_step(first + t, worker)
    if t == 0:
      expected['is_first'] = np.bool_(True)
    for key, value in expected.items():
      assert np.array_equal(sample[key][t], value), (key, t)


def test_items_are_all_stride_one_windows():
  replay = Uniform(length=5, capacity=100, chunksize=4)
  fill(replay, 4)
  assert len(replay) == 0
  fill(replay, 8, start=4)
  assert len(replay) == 8
  starts = set()
  for _ in range(300):
    sample = replay.sample()
    assert_is_window(sample, 5)
    starts.add(start_of(sample))
  assert starts == {(0, i) for i in range(8)}
  assert replay.stats()['samples'] == 300 and replay.stats()['inserts'] == 8


def test_sampling_is_uniform_over_items_of_all_workers():
  # Worker 0 adds 60 steps, worker 1 only 35: 51 + 26 items.
  replay = Uniform(length=10, capacity=1000, chunksize=16, seed=3)
  fill(replay, 35, workers=2)
  fill(replay, 25, start=35)
  assert len(replay) == 77
  draws = 200 * len(replay)
  counts = collections.Counter(start_of(replay.sample()) for _ in range(draws))
  assert len(counts) == 77
  observed = np.array(list(counts.values()))
  chi2 = ((observed - 200) ** 2 / 200).sum()
  dof = len(replay) - 1
  # Wilson-Hilferty 99.9% quantile of chi-square.
  limit = dof * (1 - 2 / (9 * dof) + 3.09 * np.sqrt(2 / (9 * dof))) ** 3
  assert chi2 < limit
  # Both workers get their share: 51/77 of the samples for worker 0.
  share = sum(v for (w, _), v in counts.items() if w == 0) / draws
  assert abs(share - 51 / 77) < 0.02


def test_fifo_eviction_keeps_the_newest_items_and_frees_chunks():
  replay = Uniform(length=3, capacity=10, chunksize=4)
  fill(replay, 30, workers=2)
  assert len(replay) == 10
  starts = {start_of(replay.sample()) for _ in range(500)}
  # Items are inserted (w0, t), (w1, t) for t = 2..29: the newest 10 end at t = 25..29.
  assert starts == {(w, t - 2) for w in (0, 1) for t in range(25, 30)}
  assert replay.stats()['evicted'] == 2 * 28 - 10
  # Windows 23..29 of each worker fit into 3 chunks of 4 steps.
  assert replay.nbytes <= 2 * 3 * 4 * replay.bytes_per_step


def test_windows_spanning_chunks_equal_the_stream():
  replay = Uniform(length=7, capacity=100, chunksize=3, seed=1)
  fill(replay, 40, workers=2)
  for sample in replay.dataset(8).__next__().values():
    assert sample.shape[:2] == (8, 7)
  for _ in range(200):
    assert_is_window(replay.sample(), 7)


def test_is_first_forced_without_changing_stored_steps():
  replay = Uniform(length=3, capacity=100, chunksize=2)
  for index in range(6):
    step = make_step(index)
    step['is_first'] = np.bool_(False)
    replay.add(step)
  batch = next(replay.dataset(64))
  for _ in range(50):
    assert list(replay.sample()['is_first']) == [True, False, False]
  # A window starting one step earlier sees the stored False at its second step.
  assert batch['is_first'][:, 0].all() and not batch['is_first'][:, 1:].any()


def test_online_queue_serves_fresh_windows_first_in_order():
  replay = Uniform(length=4, capacity=100, online=True, chunksize=3)
  fill(replay, 8, workers=2)
  fill(replay, 4, start=8)
  assert replay.stats()['online_queue'] == 5
  order = [start_of(replay.sample()) for _ in range(5)]
  assert order == [(0, 0), (1, 0), (0, 4), (1, 4), (0, 8)]
  assert replay.stats()['online_queue'] == 0
  assert_is_window(replay.sample(), 4)  # Then uniform.


def test_online_windows_evicted_from_memory_are_skipped():
  replay = Uniform(length=2, capacity=2, online=True, chunksize=2)
  fill(replay, 10)
  # Windows at 0, 2 and 4 were freed; 6 is still in memory though its item was evicted.
  assert [start_of(replay.sample()) for _ in range(2)] == [(0, 6), (0, 8)]
  assert replay.stats()['online_queue'] == 0


def test_memory_stays_close_to_raw_bytes():
  replay = Uniform(length=16, capacity=2000, chunksize=32)
  step = make_step(0, image=(64, 64, 3))
  raw = sum(np.asarray(value).nbytes for value in step.values())
  assert replay.bytes_per_step == 0
  fill(replay, 3 * 2000, image=(64, 64, 3))
  assert replay.bytes_per_step == raw + 8
  assert len(replay) == 2000
  assert raw * 2000 <= replay.nbytes <= 1.05 * raw * 2000
  spaces = {key: (np.shape(value), np.asarray(value).dtype) for key, value in step.items()}
  spaces['log_extra'] = ((1000,), np.float64)  # Not stored.
  assert estimate_bytes(spaces, 2000) == replay.bytes_per_step * 2000
  assert replay.stats()['ram_bytes'] == replay.nbytes


def test_log_keys_are_dropped_and_mismatched_steps_refused():
  replay = Uniform(length=2, capacity=10)
  step = make_step(0)
  for _ in range(2):
    replay.add({**step, 'log_achievement': np.float32(1)})
  assert 'log_achievement' not in replay.sample()
  with pytest.raises(ValueError, match='"vector" has shape \\(2,\\), expected \\(3,\\)'):
    replay.add({**step, 'vector': np.zeros(2, np.float32)})
  with pytest.raises(ValueError, match="keys .*'extra'"):
    replay.add({**step, 'extra': np.float32(0)})


def test_empty_replay_raises_a_clear_error():
  replay = Uniform(length=4, capacity=10)
  fill(replay, 3)
  with pytest.raises(RuntimeError, match='Replay is empty'):
    replay.sample()


def test_sampling_is_fast():
  replay = Uniform(length=64, capacity=5000, chunksize=1024)
  fill(replay, 2500, workers=2, image=(64, 64, 3))
  dataset = replay.dataset(16)
  next(dataset)
  start = time.perf_counter()
  for _ in range(5):
    batch = next(dataset)
  per_sequence = (time.perf_counter() - start) / (5 * 16)
  assert batch['image'].shape == (16, 64, 64, 64, 3)
  assert per_sequence < 5e-3


def chunk_files(directory):
  return sorted(name for name in os.listdir(directory) if name.endswith('.npz'))


def test_full_chunks_are_written_as_they_fill(tmp_path):
  replay = Uniform(length=4, capacity=100, directory=tmp_path, chunksize=8)
  fill(replay, 20)
  replay.save()
  names = chunk_files(tmp_path)
  pattern = re.compile(r'^\d{8}T\d{6}F\d{6}-[0-9a-f]{32}-[0-9a-f]{32}-(\d+)\.npz$')
  assert [int(pattern.match(n).group(1)) for n in names] == [8, 8, 4]
  infos = chunklib.link(chunklib.scan(tmp_path))
  assert [[info.length for info in chain] for chain in infos] == [[8, 8, 4]]
  with np.load(tmp_path / names[0], allow_pickle=False) as npz:
    assert list(npz['index']) == list(range(8))


def test_save_and_load_restore_items_and_samples(tmp_path):
  kwargs = dict(length=5, capacity=50, directory=tmp_path, chunksize=8, seed=7)
  replay = Uniform(**kwargs)
  fill(replay, 40, workers=2)  # 72 windows: evictions happened.
  fill(replay, 3, start=40)
  for _ in range(10):
    replay.sample()
  tree = replay.save()
  restored = Uniform(**kwargs)
  restored.load(tree)
  assert len(restored) == len(replay) == 50
  for _ in range(100):
    a, b = replay.sample(), restored.sample()
    assert all(np.array_equal(a[k], b[k]) for k in a)
  # Both continue the same streams: windows across the restart exist.
  for r in (replay, restored):
    fill(r, 20, workers=2, start=43)
  assert len(restored) == len(replay)
  for _ in range(100):
    a, b = replay.sample(), restored.sample()
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_resume_through_checkpoint_continues_chunks_without_duplicates(tmp_path):
  kwargs = dict(length=4, capacity=1000, directory=tmp_path / 'replay', chunksize=8)
  cp = Checkpoint(tmp_path / 'ckpt')
  cp.replay = Uniform(**kwargs)
  fill(cp.replay, 12)
  cp.save()  # Writes the partial second chunk (4 steps).
  resumed = Checkpoint(tmp_path / 'ckpt')
  resumed.replay = Uniform(**kwargs)
  resumed.load()
  assert len(resumed.replay) == 9
  fill(resumed.replay, 8, start=12)
  resumed.save()
  # The partial file was replaced by the full one, with the same uuid.
  chains = chunklib.link(chunklib.scan(tmp_path / 'replay'))
  assert [[info.length for info in chain] for chain in chains] == [[8, 8, 4]]
  assert len(chunk_files(tmp_path / 'replay')) == 3
  starts = {start_of(resumed.replay.sample()) for _ in range(400)}
  assert starts == {(0, i) for i in range(17)}


def test_load_reads_the_chunk_of_a_slow_worker_named_in_the_tree(tmp_path):
  kwargs = dict(length=2, capacity=10, directory=tmp_path, chunksize=8)
  replay = Uniform(**kwargs)
  replay.add(make_step(0, worker=0), worker=0)  # Its chunk is the oldest file.
  for index in range(30):
    replay.add(make_step(index, worker=1), worker=1)
  for index in range(1, 6):
    replay.add(make_step(index, worker=0), worker=0)
  tree = replay.save()
  expected = {(0, i) for i in range(5)} | {(1, i) for i in range(24, 29)}
  assert {start_of(replay.sample()) for _ in range(300)} == expected
  restored = Uniform(**kwargs)
  restored.load(tree)
  assert {start_of(restored.sample()) for _ in range(300)} == expected
  # Without the tree, the newest files by time cover the capacity with worker 1 alone.
  blind = Uniform(**kwargs)
  blind.load()
  assert {w for w, _ in (start_of(blind.sample()) for _ in range(100))} == {1}


def test_reload_happens_once(tmp_path):
  replay = Uniform(length=4, capacity=100, directory=tmp_path, chunksize=8)
  fill(replay, 30)
  tree = replay.save()
  restored = Uniform(length=4, capacity=100, directory=tmp_path, chunksize=8)
  restored.load(tree)
  assert len(restored) == 27
  nbytes = restored.nbytes
  with pytest.warns(UserWarning, match='already loaded'):
    restored.load(tree)
  assert len(restored) == 27 and restored.nbytes == nbytes
  late = Uniform(length=4, capacity=100, directory=tmp_path, chunksize=8)
  fill(late, 5, start=100)
  with pytest.warns(UserWarning, match='ignored'):
    late.load(tree)
  assert len(late) == 2


def test_load_without_tree_takes_the_newest_chunks_up_to_capacity(tmp_path):
  replay = Uniform(length=4, capacity=1000, directory=tmp_path, chunksize=8)
  fill(replay, 64)  # 8 full chunks.
  replay.save()
  small = Uniform(length=4, capacity=20, directory=tmp_path, chunksize=8)
  small.load()
  assert len(small) == 20
  starts = {start_of(small.sample()) for _ in range(400)}
  assert starts == {(0, i) for i in range(41, 61)}
  assert small.nbytes == 3 * 8 * small.bytes_per_step  # Only the 3 newest chunks.
  fill(small, 10, start=100)  # A new stream: its items are the newest.
  starts = {start_of(small.sample()) for _ in range(400)}
  assert starts == {(0, i) for i in range(48, 61)} | {(0, i) for i in range(100, 107)}


def test_partial_and_corrupt_chunk_files_are_skipped_with_warnings(tmp_path):
  replay = Uniform(length=4, capacity=100, directory=tmp_path, chunksize=8)
  fill(replay, 16)
  replay.save()
  good = chunk_files(tmp_path)
  assert len(good) == 2
  data = (tmp_path / good[1]).read_bytes()
  fake = lambda n: f'20300101T000000F000000-{n * 32}-{"0" * 32}-8.npz'
  (tmp_path / fake('a')).write_bytes(data[:len(data) // 2])   # Truncated.
  (tmp_path / fake('b')).write_bytes(b'not a zip file at all')  # Garbage.
  (tmp_path / (fake('c') + '.tmp')).write_bytes(data)           # Interrupted write.
  (tmp_path / 'notes.npz').write_bytes(b'')                     # Foreign name.
  restored = Uniform(length=4, capacity=100, directory=tmp_path, chunksize=8)
  with pytest.warns(UserWarning) as record:
    restored.load()
  messages = ' '.join(str(w.message) for w in record)
  for name in (fake('a'), fake('b'), fake('c') + '.tmp', 'notes.npz'):
    assert name in messages
  assert len(restored) == 13
  assert not (tmp_path / (fake('c') + '.tmp')).exists()   # Interrupted writes are removed.
  assert (tmp_path / fake('a')).exists()                   # Others are left for inspection.


def test_chunk_write_failure_is_reported_and_retried(tmp_path, monkeypatch):
  replay = Uniform(length=4, capacity=100, directory=tmp_path, chunksize=8)

  def disk_full(file, arrays, compress=False):
    file.write(b'PK partial')
    raise OSError(28, 'No space left on device')

  monkeypatch.setattr(chunklib, 'write_npz', disk_full)
  with pytest.warns(UserWarning, match='No space left'):
    fill(replay, 10)
    with pytest.raises(OSError, match='No space left'):
      replay.save()
  assert os.listdir(tmp_path) == []  # No truncated file under any name.
  monkeypatch.undo()
  replay.save()
  restored = Uniform(length=4, capacity=100, directory=tmp_path, chunksize=8)
  restored.load()
  assert len(restored) == 7


class Evil:
  def __reduce__(self):
    return (open, (os.environ['EVIL_MARKER'], 'w'))


def test_pickled_chunk_is_refused_not_executed(tmp_path, monkeypatch):
  marker = tmp_path / 'executed'
  monkeypatch.setenv('EVIL_MARKER', str(marker))
  directory = tmp_path / 'replay'
  directory.mkdir()
  name = f'20300101T000000F000000-{"e" * 32}-{"0" * 32}-1.npz'
  np.savez(directory / name, image=np.array([Evil()], dtype=object),
           _stamp=np.array([0]), _origin=np.int64(0))
  replay = Uniform(length=1, capacity=10, directory=directory)
  with pytest.warns(UserWarning, match='pickled objects, which are never loaded'):
    replay.load()
  assert len(replay) == 0 and not marker.exists()


def test_memory_report_and_refusal(tmp_path):
  spaces = {'image': ((64, 64, 3), np.uint8), 'reward': ((), np.float32),
            'log_x': ((9,), np.float32)}
  per_step = 64 * 64 * 3 + 4 + 8
  line = memory_report(spaces, 1_000_000, available=20_100_000_000)
  assert line == ('Replay capacity 1,000,000 steps x 12.3 KB/step = 12.3 GB '
                  '(available RAM: 20.1 GB).')
  with pytest.raises(ReplayMemoryError) as info:
    memory_report(spaces, 1_000_000, available=5_000_000_000)
  assert f'replay_size <= {5_000_000_000 // per_step:,}' in str(info.value)
  assert '--run.check_memory False' in str(info.value)
  assert memory_report(spaces, 1_000_000, check=False, available=5_000_000_000)
  meminfo = tmp_path / 'meminfo'
  meminfo.write_text('MemTotal: 100 kB\nMemAvailable:    2048 kB\n')
  assert available_memory(meminfo) == 2048 * 1024
  assert available_memory(tmp_path / 'missing') is None


_KILL_SCRIPT = '''
import sys
import numpy as np
sys.path.insert(0, {repo!r})
from embodied.replay import Uniform

replay = Uniform(length=4, capacity=10**6, directory={directory!r}, chunksize=32)
index = 0
while True:
  replay.add({{'image': np.full((64, 64, 3), index % 256, np.uint8),
              'index': np.int64(index), 'is_first': np.bool_(index == 0)}})
  index += 1
  if index == 64:
    replay.save()
    print('ready', flush=True)
'''


@pytest.mark.parametrize('seed', [*range(3), *(pytest.param(s, marks=pytest.mark.slow)
                                                for s in range(3, 23))])
def test_sigkill_during_chunk_writes_leaves_a_loadable_replay(tmp_path, seed):
  script = tmp_path / 'adder.py'
  directory = tmp_path / 'replay'
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  script.write_text(_KILL_SCRIPT.format(repo=repo, directory=str(directory)))
  proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE)
  try:
    assert proc.stdout.readline().strip() == b'ready'
    time.sleep(random.Random(seed).uniform(0.0, 0.5))
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  replay = Uniform(length=4, capacity=10**6, directory=directory, chunksize=32)
  with warnings.catch_warnings(record=True) as record:
    warnings.simplefilter('always')
    replay.load()
  assert all('a write was interrupted' in str(w.message) for w in record)
  assert len(replay) >= 61
  for _ in range(50):
    sample = replay.sample()
    first = int(sample['index'][0])
    assert list(sample['index']) == list(range(first, first + 4))
    pixels = sample['image'][:, 0, 0, 0]
    assert list(pixels[1:]) == [i % 256 for i in range(first + 1, first + 4)]
