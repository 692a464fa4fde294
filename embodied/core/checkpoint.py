"""Checkpoint: atomic save and load of named objects as npz arrays + JSON.

Layout of a checkpoint directory:

  directory/ckpt-000003/arrays.npz   every array leaf, keyed by its '/'-joined path
  directory/ckpt-000003/meta.json    format version, time, step, and the tree
                                     structure with the non-array leaves
  directory/.tmp-<uuid>/             a save in progress (ignored on load)

A save writes into a fresh temporary directory, fsyncs the files and the
directory, and only then renames it to the next `ckpt-<n>` name. A directory
rename is atomic, so a `ckpt-<n>` directory is always complete, and the previous
checkpoint is deleted only after the new one exists: a kill at any moment
leaves at least one loadable checkpoint. Loading never unpickles: arrays are
read with allow_pickle=False and everything else is JSON.
"""

import json
import os
import re
import shutil
import time
import uuid
import warnings
import zipfile

import numpy as np

FORMAT = 1
_CKPT = re.compile(r'^ckpt-(\d+)$')
_PLAIN_KINDS = 'biufcSUmM'  # Dtypes that np.save writes and reads natively.


class CheckpointError(RuntimeError):
  """A checkpoint could not be written or read; the message is user-facing."""


class Checkpoint:
  """Saves and loads registered objects: `cp.agent = agent; cp.save()`.

  Every registered object has `save() -> tree` and `load(tree)`, where a tree
  is nested dicts/lists/tuples of numpy arrays, numpy scalars and Python
  int/float/bool/str/None.
  """

  def __init__(self, directory):
    object.__setattr__(self, '_directory', str(directory))
    object.__setattr__(self, '_objects', {})

  def __setattr__(self, name, obj):
    if name.startswith('_'):
      raise AttributeError(f'Checkpoint names cannot start with "_": {name}')
    if not (callable(getattr(obj, 'save', None)) and callable(getattr(obj, 'load', None))):
      raise TypeError(
          f'Checkpoint object "{name}" needs save() and load(tree) methods, '
          f'got {type(obj).__name__}.')
    self._objects[name] = obj

  def __getattr__(self, name):
    try:
      return self._objects[name]
    except KeyError:
      raise AttributeError(f'No object "{name}" registered in the checkpoint.') from None

  @property
  def directory(self):
    return self._directory

  @property
  def path(self):
    """The directory of the newest complete checkpoint, or None."""
    found = _complete_checkpoints(self._directory)
    return found[-1] if found else None

  def exists(self):
    return self.path is not None

  def save(self):
    """Writes all registered objects as a new checkpoint; returns its path."""
    try:
      trees = {name: obj.save() for name, obj in self._objects.items()}
      return self._write(trees)
    except OSError as e:
      intact = ('The previous checkpoint is intact.' if self.exists()
                else 'No previous checkpoint exists.')
      raise CheckpointError(
          f'Could not write checkpoint to {self._directory}: {_reason(e)}. {intact}') from e

  def load(self, keys=None):
    """Restores the registered objects (or only `keys`) from the newest checkpoint."""
    keys = list(self._objects) if keys is None else list(keys)
    unknown = [k for k in keys if k not in self._objects]
    if unknown:
      raise KeyError(f'Cannot load {unknown}: registered objects are {list(self._objects)}.')
    path, trees = self._read_newest_valid()
    missing = [k for k in keys if k not in trees]
    if missing:
      raise CheckpointError(
          f'Checkpoint {path} has no entry for {missing}; it holds {sorted(trees)}. '
          f'Pass keys= to load only some objects, or use a new logdir.')
    for key in keys:
      self._objects[key].load(trees[key])

  def _read_newest_valid(self):
    """Returns (path, trees) of the newest checkpoint that passes validation.

    Older checkpoints exist only when a save was killed while deleting them;
    they are a fallback, with a warning, if the newest one is damaged.
    """
    candidates = _complete_checkpoints(self._directory)[::-1]
    if not candidates:
      raise CheckpointError(f'No checkpoint found in {self._directory}.')
    for index, path in enumerate(candidates):
      try:
        return path, read_tree(path)
      except CheckpointError as e:
        if index == 0:
          first_error = e
        if index + 1 < len(candidates):
          warnings.warn(f'{e} Falling back to {candidates[index + 1]}.', stacklevel=3)
    raise first_error

  def load_or_save(self):
    """Loads the newest checkpoint if there is one, else saves a first one.

    Returns True when it loaded.
    """
    if self.exists():
      self.load()
      return True
    self.save()
    return False

  def _write(self, trees):
    structure, arrays = flatten(trees)
    meta = {'format': FORMAT, 'time': time.time(), 'step': self._step(),
            'structure': structure}
    os.makedirs(self._directory, exist_ok=True)
    tmp = os.path.join(self._directory, f'.tmp-{uuid.uuid4().hex}')
    try:
      os.mkdir(tmp)
      with open(os.path.join(tmp, 'arrays.npz'), 'wb') as f:
        write_npz(f, arrays)
        _fsync_file(f)
      # meta.json last: a directory with both files was written completely.
      with open(os.path.join(tmp, 'meta.json'), 'w') as f:
        json.dump(meta, f)
        _fsync_file(f)
      _fsync_dir(tmp)
      previous = _all_checkpoints(self._directory)
      number = 1 + max((n for n, _ in previous), default=0)
      final = os.path.join(self._directory, f'ckpt-{number:06d}')
      os.rename(tmp, final)  # The commit point.
    except BaseException:
      shutil.rmtree(tmp, ignore_errors=True)
      raise
    try:  # After the commit, failures cost only durability or disk space.
      _fsync_dir(self._directory)
      self._remove_old(keep=final)
    except OSError as e:
      warnings.warn(f'Wrote checkpoint {final} but could not sync or clean up '
                    f'{self._directory}: {e}')
    return final

  def _remove_old(self, keep):
    """Deletes older checkpoints and temp dirs left by killed saves.

    Each old checkpoint is first renamed to a temp name (atomic), so a kill
    during the deletion never leaves a half-deleted `ckpt-<n>` behind.
    """
    for name in os.listdir(self._directory):
      path = os.path.join(self._directory, name)
      if path == keep:
        continue
      if _CKPT.match(name):
        doomed = os.path.join(self._directory, f'.tmp-{uuid.uuid4().hex}')
        try:
          os.rename(path, doomed)
        except OSError:
          continue
        shutil.rmtree(doomed, ignore_errors=True)
      elif name.startswith('.tmp-'):
        shutil.rmtree(path, ignore_errors=True)

  def _step(self):
    try:
      return int(self._objects['step'])
    except (KeyError, TypeError, ValueError):
      return None


def read_tree(directory):
  """Returns {name: tree} of a checkpoint without registering objects.

  `directory` may be a checkpoint dir (holding meta.json), a Checkpoint's
  directory (holding ckpt-<n> dirs), or a logdir with a `checkpoint` subdir.
  """
  directory = str(directory)
  if not os.path.isfile(os.path.join(directory, 'meta.json')):
    candidates = (_complete_checkpoints(directory) or
                  _complete_checkpoints(os.path.join(directory, 'checkpoint')))
    if not candidates:
      raise CheckpointError(
          f'No checkpoint found in {directory}: expected meta.json, ckpt-<n> '
          f'directories or a checkpoint/ subdirectory.')
    directory = candidates[-1]
  try:
    with open(os.path.join(directory, 'meta.json')) as f:
      meta = json.load(f)
    version = meta.get('format') if isinstance(meta, dict) else None
    if version != FORMAT:
      raise ValueError(f'meta.json has format {version!r}, expected {FORMAT}')
    with np.load(os.path.join(directory, 'arrays.npz'), allow_pickle=False) as npz:
      return unflatten(meta['structure'], npz)
  except (OSError, ValueError, KeyError, TypeError, ImportError, RecursionError,
          zipfile.BadZipFile) as e:
    raise CheckpointError(
        f'Refusing to load checkpoint {directory}: {_reason(e)}. Checkpoints '
        f'hold only plain arrays and JSON; delete this checkpoint or use a new logdir.') from e


def flatten(trees):
  """Splits a tree into a JSON structure and a dict of '/'-path -> array."""
  arrays = {}

  def encode(node, path):
    if isinstance(node, dict):
      items = []
      for key, value in node.items():
        if not isinstance(key, (str, int)) or isinstance(key, bool):
          raise TypeError(f'Checkpoint dict keys must be str or int, got {key!r} at {_show(path)}.')
        items.append([key, encode(value, path + (key,))])
      return {'dict': items}
    if isinstance(node, (list, tuple)):
      tag = 'list' if isinstance(node, list) else 'tuple'
      return {tag: [encode(value, path + (i,)) for i, value in enumerate(node)]}
    if isinstance(node, (np.ndarray, np.generic)):
      return encode_array(node, path)
    if node is None or isinstance(node, (bool, int, float, str)):
      return {'value': node}
    raise TypeError(
        f'Checkpoint cannot store {type(node).__name__} at {_show(path)}: use numpy '
        f'arrays, numpy scalars or int/float/bool/str/None.')

  def encode_array(node, path):
    value = np.asarray(node)
    if value.dtype.hasobject:
      raise TypeError(f'Checkpoint cannot store object arrays (at {_show(path)}).')
    name = '/'.join(_escape(str(part)) for part in path)
    if name in arrays:
      raise TypeError(f'Two checkpoint leaves map to the same name {name!r}.')
    custom = value.dtype.kind not in _PLAIN_KINDS and value.dtype.names is None
    # Extension dtypes such as bfloat16 are stored as raw unsigned ints.
    arrays[name] = value.view(f'u{value.dtype.itemsize}') if custom else value
    return {'array': name, 'dtype': value.dtype.name if custom else value.dtype.str,
            'custom': custom, 'shape': list(value.shape),
            'scalar': isinstance(node, np.generic)}

  return encode(trees, ()), arrays


def unflatten(structure, npz):
  """Inverse of flatten(); validates every node against the arrays."""

  def decode(node):
    if not isinstance(node, dict) or len(node) < 1:
      raise ValueError(f'malformed node {str(node)[:80]!r}')
    if 'dict' in node:
      return {key: decode(value) for key, value in _pairs(node['dict'])}
    if 'list' in node:
      return [decode(value) for value in node['list']]
    if 'tuple' in node:
      return tuple(decode(value) for value in node['tuple'])
    if 'value' in node:
      value = node['value']
      if value is not None and not isinstance(value, (bool, int, float, str)):
        raise ValueError(f'non-scalar JSON leaf {str(value)[:80]!r}')
      return value
    if 'array' in node:
      return decode_array(node)
    raise ValueError(f'unknown node {sorted(node)}')

  def decode_array(node):
    name = node['array']
    if not isinstance(name, str) or name not in npz.files:
      raise ValueError(f'array {str(name)[:80]!r} is not in arrays.npz')
    value = npz[name]
    if node.get('custom'):
      value = value.view(_extension_dtype(node['dtype']))
    elif value.dtype.str != node['dtype']:
      raise ValueError(f'array {name} has dtype {value.dtype.str}, meta says {node["dtype"]}')
    if list(value.shape) != node['shape']:
      raise ValueError(f'array {name} has shape {value.shape}, meta says {node["shape"]}')
    return value[()] if node.get('scalar') else value

  return decode(structure)


def write_npz(file, arrays, compress=False):
  """Writes {name: array} like np.savez, refusing object arrays.

  Unlike np.savez it accepts any name (np.savez reserves `file`) and streams
  each array into the archive without an intermediate copy.
  """
  method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
  with zipfile.ZipFile(file, 'w', compression=method, allowZip64=True) as archive:
    for name, value in arrays.items():
      with archive.open(name + '.npy', 'w', force_zip64=True) as member:
        np.lib.format.write_array(member, np.asarray(value), allow_pickle=False)


def _pairs(items):
  if not isinstance(items, list):
    raise ValueError('dict node is not a list of pairs')
  for item in items:
    if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], (str, int))):
      raise ValueError(f'malformed dict entry {str(item)[:80]!r}')
    yield item


def _extension_dtype(name):
  import ml_dtypes  # Installed with JAX; only needed for bfloat16 and friends.
  dtype = getattr(ml_dtypes, str(name), None)
  if dtype is None:
    raise ValueError(f'unknown dtype {name!r}')
  return np.dtype(dtype)


def _all_checkpoints(directory):
  """Sorted [(number, path)] of all ckpt-<n> directories."""
  try:
    names = os.listdir(directory)
  except OSError:
    return []
  found = [(int(m.group(1)), os.path.join(directory, name))
           for name in names if (m := _CKPT.match(name))]
  return sorted(found)


def _complete_checkpoints(directory):
  """Paths of ckpt-<n> directories that hold both files, oldest first."""
  return [path for _, path in _all_checkpoints(directory)
          if os.path.isfile(os.path.join(path, 'meta.json'))
          and os.path.isfile(os.path.join(path, 'arrays.npz'))]


def _fsync_file(f):
  f.flush()
  os.fsync(f.fileno())


def _fsync_dir(path):
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def _escape(part):
  return part.replace('%', '%25').replace('/', '%2F')


def _show(path):
  return '/'.join(str(part) for part in path) or '<root>'


def _reason(error):
  if isinstance(error, OSError) and error.strerror:
    return error.strerror + (f' ({error.filename})' if error.filename else '')
  return str(error)
