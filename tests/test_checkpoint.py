import json
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import time

import ml_dtypes
import numpy as np
import pytest

from embodied.core import checkpoint as ckptlib
from embodied.core.checkpoint import Checkpoint, CheckpointError, read_tree

REPO = pathlib.Path(__file__).resolve().parents[1]


class Box:
  """A registrable object holding one tree."""

  def __init__(self, tree=None):
    self.tree = tree

  def save(self):
    return self.tree

  def load(self, tree):
    self.tree = tree


def rich_tree():
  dtypes = ['float16', 'float32', 'float64', 'int8', 'int16', 'int32', 'int64',
            'uint8', 'uint16', 'uint32', 'uint64', 'bool', 'complex64']
  rng = np.random.default_rng(0)
  arrays = {name: (rng.normal(size=(2, 3)) * 50).astype(name) for name in dtypes}
  return {
      'arrays': arrays,
      'bf16': np.arange(6, dtype=np.float32).reshape(2, 3).astype(ml_dtypes.bfloat16),
      'empty': np.zeros((0, 4), np.float32),
      'zero_d': np.array(3.5, np.float64),
      'scalars': [np.float32(1.5), np.int64(-7), np.bool_(True), np.uint8(200)],
      'python': {'int': 12, 'big': 2 ** 100, 'float': 0.25, 'nan': float('nan'),
                 'bool': False, 'str': 'hé/llo', 'none': None},
      'nested': ({'deep': [np.ones(2, np.int32), (1, 'a')]}, []),
      'enc/linear0/kernel': np.eye(2, dtype=np.float32),  # Agent-style flat names.
      '50%/x': np.int16(4),
      3: 'int key',
      '3': 'str key that looks the same',
  }


def assert_same(actual, expected, path='root'):
  assert type(actual) is type(expected), (path, type(actual), type(expected))
  if isinstance(expected, dict):
    assert list(actual) == list(expected), path
    for key in expected:
      assert_same(actual[key], expected[key], f'{path}/{key}')
  elif isinstance(expected, (list, tuple)):
    assert len(actual) == len(expected), path
    for i, (a, e) in enumerate(zip(actual, expected)):
      assert_same(a, e, f'{path}/{i}')
  elif isinstance(expected, (np.ndarray, np.generic)):
    assert actual.dtype == expected.dtype and np.shape(actual) == np.shape(expected), path
    assert np.asarray(actual).tobytes() == np.asarray(expected).tobytes(), path
  elif isinstance(expected, float) and expected != expected:
    assert actual != actual, path
  else:
    assert actual == expected, path


def test_round_trip_of_nested_trees_keeps_types_dtypes_and_values(tmp_path):
  tree = rich_tree()
  cp = Checkpoint(tmp_path)
  cp.agent = Box(tree)
  cp.other = Box({'value': 3})
  cp.save()
  restored = Checkpoint(tmp_path)
  restored.agent = Box()
  restored.other = Box()
  restored.load()
  assert_same(restored.agent.tree, tree)
  assert restored.other.tree == {'value': 3}
  assert_same(read_tree(tmp_path)['agent'], tree)
  # Arrays are keyed by their escaped '/'-joined path.
  with np.load(os.path.join(cp.path, 'arrays.npz')) as npz:
    assert 'agent/enc%2Flinear0%2Fkernel' in npz.files
    assert 'agent/arrays/float32' in npz.files


def test_load_or_save_exists_path_keys_and_single_checkpoint(tmp_path):
  cp = Checkpoint(tmp_path / 'ckpt')
  cp.a, cp.b = Box({'x': np.arange(3)}), Box({'x': 1})
  assert not cp.exists() and cp.path is None
  assert cp.load_or_save() is False
  first = cp.path
  cp.a.tree, cp.b.tree = {'x': np.arange(5)}, {'x': 2}
  cp.save()
  assert cp.path != first and not os.path.exists(first)
  assert sorted(os.listdir(tmp_path / 'ckpt')) == [os.path.basename(cp.path)]
  other = Checkpoint(tmp_path / 'ckpt')
  other.a, other.b = Box(), Box({'x': 'untouched'})
  assert other.load_or_save() is True
  other.b.tree = {'x': 'untouched'}
  other.load(keys=['a'])
  assert list(other.a.tree['x']) == [0, 1, 2, 3, 4] and other.b.tree == {'x': 'untouched'}


def test_meta_records_step_and_format(tmp_path):

  class Step(Box):
    def __int__(self):
      return 42

  cp = Checkpoint(tmp_path)
  cp.step = Step({'value': 42})
  cp.save()
  with open(os.path.join(cp.path, 'meta.json')) as f:
    meta = json.load(f)
  assert meta['format'] == ckptlib.FORMAT and meta['step'] == 42


def test_bad_objects_and_leaves_are_refused(tmp_path):
  cp = Checkpoint(tmp_path)
  with pytest.raises(TypeError, match='save\\(\\) and load'):
    cp.agent = object()
  cp.agent = Box({'ok': 1, 'bad': {'set': {1, 2}}})
  with pytest.raises(TypeError, match='agent/bad/set'):
    cp.save()
  cp.agent = Box({'obj': np.array([None], dtype=object)})
  with pytest.raises(TypeError, match='object arrays'):
    cp.save()
  assert not cp.exists()


def test_missing_entry_names_what_the_checkpoint_holds(tmp_path):
  cp = Checkpoint(tmp_path)
  cp.agent = Box({'x': 1})
  cp.save()
  cp.replay = Box()
  with pytest.raises(CheckpointError, match="no entry for \\['replay'\\].*holds \\['agent'\\]"):
    cp.load()


def _saved(tmp_path, value):
  cp = Checkpoint(tmp_path)
  cp.agent = Box({'w': np.full((100, 100), value, np.float32), 'version': value})
  cp.save()
  return cp


def _assert_loads_version(tmp_path, value):
  cp = Checkpoint(tmp_path)
  cp.agent = Box()
  cp.load()
  assert cp.agent.tree['version'] == value
  assert np.all(cp.agent.tree['w'] == value)


def _failing_after(calls):
  count = [0]

  def fail(*args, **kwargs):
    count[0] += 1
    if count[0] > calls:
      raise OSError(28, 'No space left on device')
    return fail.original(*args, **kwargs)
  return fail


@pytest.mark.parametrize('target,calls', [
    ('write_npz', 0), ('fsync', 0), ('fsync', 1), ('fsync', 2),
    ('rename', 0), ('mkdir', 0)])
def test_injected_failures_leave_the_previous_checkpoint(tmp_path, monkeypatch, target, calls):
  cp = _saved(tmp_path, 1.0)
  cp.agent.tree = {'w': np.full((100, 100), 2.0, np.float32), 'version': 2.0}
  fail = _failing_after(calls)
  if target == 'write_npz':
    def partial_write(file, arrays, compress=False):
      file.write(b'PK\x03\x04 half a zip')
      raise OSError(28, 'No space left on device')
    monkeypatch.setattr(ckptlib, 'write_npz', partial_write)
  else:
    fail.original = getattr(os, target)
    monkeypatch.setattr(os, target, fail)
  with pytest.raises(CheckpointError) as info:
    cp.save()
  monkeypatch.undo()
  assert str(info.value) == (f'Could not write checkpoint to {tmp_path}: No space left on '
                             f'device. The previous checkpoint is intact.')
  _assert_loads_version(tmp_path, 1.0)
  assert not [name for name in os.listdir(tmp_path) if name.startswith('.tmp-')]
  cp.save()  # Works again once the disk has space.
  _assert_loads_version(tmp_path, 2.0)


def test_error_from_an_object_save_keeps_previous(tmp_path):
  cp = _saved(tmp_path, 1.0)

  class Broken(Box):
    def save(self):
      raise OSError(28, 'No space left on device', '/logdir/replay/chunk.npz')

  cp.replay = Broken()
  with pytest.raises(CheckpointError, match='chunk.npz.*previous checkpoint is intact'):
    cp.save()
  _assert_loads_version(tmp_path, 1.0)


def test_unwritable_directory_gives_clear_error(tmp_path):
  blocker = tmp_path / 'file'
  blocker.write_text('not a directory')
  cp = Checkpoint(blocker / 'ckpt')
  cp.agent = Box({'x': 1})
  with pytest.raises(CheckpointError, match='Could not write checkpoint to .*file/ckpt: '
                     '.*No previous checkpoint exists'):
    cp.save()


_KILL_SCRIPT = '''
import sys
import numpy as np
sys.path.insert(0, {repo!r})
from embodied.core.checkpoint import Checkpoint

class Box:
  def __init__(self): self.tree = None
  def save(self): return self.tree
  def load(self, tree): self.tree = tree

cp = Checkpoint({directory!r})
cp.agent = Box()
version = 0
while True:
  version += 1
  cp.agent.tree = {{'big': np.full(4_000_000, version, np.float32), 'small': np.full(3, version),
                   'version': version}}
  cp.save()
  if version == 1:
    print('ready', flush=True)
'''


@pytest.mark.parametrize('seed', [*range(4), *(pytest.param(s, marks=pytest.mark.slow)
                                                for s in range(4, 24))])
def test_sigkill_during_saves_leaves_a_loadable_checkpoint(tmp_path, seed):
  script = tmp_path / 'saver.py'
  script.write_text(_KILL_SCRIPT.format(repo=str(REPO), directory=str(tmp_path / 'ckpt')))
  proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE)
  try:
    assert proc.stdout.readline().strip() == b'ready'
    time.sleep(random.Random(seed).uniform(0.0, 0.6))
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  tree = read_tree(tmp_path / 'ckpt')['agent']
  version = tree['version']
  assert version >= 1
  assert np.all(tree['big'] == version) and np.all(tree['small'] == version)
  cp = Checkpoint(tmp_path / 'ckpt')
  cp.agent = Box()
  cp.load()
  cp.save()  # Cleans up temp dirs of the killed save.
  assert [n for n in os.listdir(tmp_path / 'ckpt') if n.startswith('.tmp-')] == []


class Evil:
  def __reduce__(self):
    return (open, (os.path.join(os.environ['EVIL_MARKER']), 'w'))


def test_pickled_arrays_are_refused_not_executed(tmp_path, monkeypatch):
  marker = tmp_path / 'executed'
  monkeypatch.setenv('EVIL_MARKER', str(marker))
  cp = _saved(tmp_path / 'ckpt', 1.0)
  # Replace the arrays by ones holding a pickled object under the same name.
  np.savez(os.path.join(cp.path, 'arrays.npz'), **{'agent/w': np.array([Evil()], dtype=object)})
  with pytest.raises(CheckpointError, match='Refusing to load checkpoint.*pickle'):
    read_tree(cp.path)
  with pytest.raises(CheckpointError, match='Refusing'):
    _assert_loads_version(tmp_path / 'ckpt', 1.0)
  assert not marker.exists()


@pytest.mark.parametrize('structure', [
    {'dict': [['agent', {'array': '../../../etc/passwd', 'dtype': '<f4', 'shape': [1]}]]},
    {'dict': [['agent', {'value': {'__class__': 'os.system'}}]]},
    {'dict': [['agent', {'module': 'os', 'call': 'system'}]]},
    {'dict': [['agent', {'array': 'agent/w', 'dtype': '<f8', 'shape': [100, 100]}]]},
])
def test_tampered_meta_is_refused(tmp_path, structure):
  cp = _saved(tmp_path, 1.0)
  meta_path = os.path.join(cp.path, 'meta.json')
  with open(meta_path) as f:
    meta = json.load(f)
  meta['structure'] = structure
  with open(meta_path, 'w') as f:
    json.dump(meta, f)
  with pytest.raises(CheckpointError, match='Refusing to load checkpoint'):
    read_tree(tmp_path)


def test_damaged_newest_falls_back_to_an_older_complete_one(tmp_path):
  cp = _saved(tmp_path / 'ckpt', 1.0)
  older = cp.path
  shutil.copytree(older, tmp_path / 'backup')
  cp.agent.tree = {'w': np.zeros(1, np.float32), 'version': 2.0}
  cp.save()
  shutil.copytree(tmp_path / 'backup', older)  # As if deleting it was killed.
  with open(os.path.join(cp.path, 'arrays.npz'), 'wb') as f:
    f.write(b'garbage')
  with pytest.warns(UserWarning, match='Falling back'):
    _assert_loads_version(tmp_path / 'ckpt', 1.0)


def test_read_tree_accepts_checkpoint_root_dir_or_logdir(tmp_path):
  cp = _saved(tmp_path / 'logdir' / 'checkpoint', 5.0)
  for where in (cp.path, tmp_path / 'logdir' / 'checkpoint', tmp_path / 'logdir'):
    assert read_tree(where)['agent']['version'] == 5.0
  with pytest.raises(CheckpointError, match='No checkpoint found'):
    read_tree(tmp_path)
  empty = Checkpoint(tmp_path / 'none')
  empty.agent = Box()
  with pytest.raises(CheckpointError, match='No checkpoint found'):
    empty.load()
