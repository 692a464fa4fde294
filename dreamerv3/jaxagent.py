"""JAXAgent: the embodied Agent contract around agent.Dreamer.

This is the only stateful part of the agent. It picks the devices and the
compute dtype, jit-compiles train/policy/report once, keeps the training state
on the devices, derives randomness from (seed, counter) so that a resumed run
continues the same random stream, and converts to and from numpy at the
boundary. Data parallelism (jax.parallel) uses one jit over a device mesh: the
parameters are replicated, the batch is split along axis 0, and the compiler
inserts the gradient averaging, so the update equals the single-device one.
"""

import hashlib
import os
import pathlib
import platform
import queue
import sys
import threading
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from embodied.core import base
from embodied.core.config import ConfigError

from . import agent as agentlib
from . import modules

DTYPES = {'float16': jnp.float16, 'bfloat16': jnp.bfloat16, 'float32': jnp.float32}
PREFETCH = 4   # Batches on the device ahead of the learner (§5.3).


class CheckpointMismatchError(ValueError):
  """The checkpoint's arrays do not fit this agent (other config or behaviour)."""

  def __init__(self, missing, unexpected, reshaped):
    params_first = lambda path: (not path.startswith('params/'), path)
    missing, unexpected = sorted(missing, key=params_first), sorted(unexpected, key=params_first)
    reshaped = sorted(reshaped, key=lambda entry: params_first(entry[0]))
    self.missing, self.unexpected, self.reshaped = missing, unexpected, reshaped
    count = len(missing) + len(unexpected) + len(reshaped)
    lines = [f'The checkpoint does not fit this agent ({count} arrays differ):']
    lines += [f'  {path}: checkpoint {old} vs agent {new}' for path, old, new in reshaped[:20]]
    lines += [f'  {path}: missing from the checkpoint' for path in missing[:20]]
    lines += [f'  {path}: only in the checkpoint' for path in unexpected[:20]]
    hidden = max(0, len(reshaped) - 20) + max(0, len(missing) - 20) + max(0, len(unexpected) - 20)
    if hidden:
      lines.append(f'  ... and {hidden} more.')
    lines.append('Use a new logdir for this config, or start from the old weights with '
                 '--run.from_checkpoint and a config that matches them.')
    super().__init__('\n'.join(lines))


def configure_jax(config):
  """Process-wide JAX settings from config.jax. Call before anything uses JAX.

  The simulated CPU device count, the allocator flag, the platform restriction
  and jax.distributed only take effect before JAX starts its backends (the
  first device query or computation); dreamerv3/train.py calls this first.
  """
  cfg = config.jax
  if not cfg.prealloc:
    os.environ['XLA_PYTHON_CLIENT_PREALLOCATE'] = 'false'
  if cfg.platform == 'cpu':
    jax.config.update('jax_platforms', 'cpu')   # Do not start (and fill) a GPU we will not use.
  if cfg.logical_cpus > 0 and jax.config.jax_num_cpu_devices != cfg.logical_cpus:
    try:
      jax.config.update('jax_num_cpu_devices', cfg.logical_cpus)
    except RuntimeError as e:
      raise RuntimeError(
          f'jax.logical_cpus {cfg.logical_cpus} must be set before JAX starts: call '
          f'dreamerv3.jaxagent.configure_jax(config) before any other JAX use ({e}).') from None
  if cfg.coordinator_address:
    jax.distributed.initialize(cfg.coordinator_address, cfg.num_processes, cfg.process_id)
  if cfg.compile_cache and jax.config.jax_compilation_cache_dir is None:
    path = compile_cache_dir(cfg.compile_cache)   # JAX_COMPILATION_CACHE_DIR takes precedence.
    if path:
      jax.config.update('jax_compilation_cache_dir', path)
  set_runtime_flags(config)


def compile_cache_dir(root):
  """The directory for JAX's persistent cache of compiled programs under root, or None.

  A rerun of the same config (a resumed run above all) then loads the train,
  policy and report programs instead of compiling them again. Compiled CPU code
  uses the instructions of the CPU that compiled it, and JAX's cache key does not
  name the CPU model, so every kind of CPU gets its own subdirectory: a home
  directory shared by different machines stays safe. The cache runs what it
  holds, so the directory must belong to this user and be writable by no one
  else; otherwise this warns and returns None (no cache).
  """
  path = pathlib.Path(root).expanduser() / f'{platform.machine() or "cpu"}-{cpu_fingerprint()}'
  try:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.stat()
  except OSError as e:
    warnings.warn(f'jax.compile_cache: cannot create {path} ({e}); compiling without the '
                  f'cache. Choose another directory or pass --jax.compile_cache "" to turn it off.',
                  stacklevel=3)
    return None
  if info.st_uid != os.getuid() or info.st_mode & 0o022:
    warnings.warn(f'jax.compile_cache: {path} belongs to another user or is writable by others '
                  f'(mode {info.st_mode & 0o777:o}); compiling without the cache. Make it yours '
                  f'with mode 700 or choose another directory.', stacklevel=3)
    return None
  return str(path)


CPUINFO = pathlib.Path('/proc/cpuinfo')
CPUINFO_KEYS = ('model name', 'flags', 'Features', 'CPU implementer', 'CPU part')  # x86, ARM


def cpu_fingerprint():
  """12 hex digits naming the CPU model and its instruction-set flags (from /proc/cpuinfo)."""
  try:
    lines = CPUINFO.read_text().splitlines()
  except OSError:
    lines = []   # Not Linux.
  lines = sorted({line for line in lines if line.startswith(CPUINFO_KEYS)}) or [platform.processor()]
  return hashlib.sha256('\n'.join([platform.machine()] + lines).encode()).hexdigest()[:12]


HUGE_PAGES_TUNABLE = 'glibc.malloc.hugetlb=1'
THP_MODE = pathlib.Path('/sys/kernel/mm/transparent_hugepage/enabled')


def restart_with_huge_pages(config):
  """Re-executes this command once with malloc on transparent huge pages.

  XLA on the CPU allocates the temporaries of every call afresh: with 4 KiB
  pages a `cpu` train step takes about 100,000 page faults (400 MB of fresh
  pages) and the TLB misses of its large buffers, a `cpu` image step ten times
  that. glibc >= 2.35 backs malloc with transparent huge pages when
  GLIBC_TUNABLES holds glibc.malloc.hugetlb=1, but reads that variable only at
  process start, hence the restart (same pid, same arguments). Measured in
  docs/benchmarks.md. Does nothing when jax.huge_pages is off, when
  GLIBC_TUNABLES already sets glibc.malloc.hugetlb (either way), or when the
  system cannot use it. Call it from the entry point, before any work.
  """
  environ = huge_pages_environ(config)
  if environ is None or not sys.argv or sys.argv[0] in ('', '-c'):
    return   # Nothing to change, or no command line to rerun.
  print('Restarting with transparent huge pages for host memory '
        '(jax.huge_pages; --jax.huge_pages False skips this).', flush=True)
  sys.stderr.flush()
  os.execve(sys.executable, sys.orig_argv, environ)


def huge_pages_environ(config):
  """os.environ plus the hugetlb tunable, or None where nothing should change."""
  tunables = os.environ.get('GLIBC_TUNABLES', '')
  if not config.jax.huge_pages or 'glibc.malloc.hugetlb' in tunables:
    return None
  if not huge_pages_available():
    return None   # No glibc with the tunable, or transparent huge pages are off.
  return {**os.environ,
          'GLIBC_TUNABLES': ':'.join(filter(None, [tunables, HUGE_PAGES_TUNABLE]))}


def huge_pages_in_use():
  """Whether this process was started with malloc on huge pages."""
  return HUGE_PAGES_TUNABLE in os.environ.get('GLIBC_TUNABLES', '').split(':')


def huge_pages_available():
  """glibc >= 2.35 (the hugetlb tunable) and transparent huge pages not 'never'."""
  name, version = platform.libc_ver()
  try:
    major, minor = (int(part) for part in version.split('.')[:2])
    mode = THP_MODE.read_text()   # 'always [madvise] never': brackets mark the mode.
  except (ValueError, OSError):
    return False
  return name == 'glibc' and (major, minor) >= (2, 35) and '[never]' not in mode


def set_runtime_flags(config):
  """The JAX flags that may change at any time: NaN checks and eager mode."""
  jax.config.update('jax_debug_nans', bool(config.jax.debug_nans))
  jax.config.update('jax_disable_jit', not config.jax.jit)


def select_platform(platform):
  """The platform to run on: the configured one, or the CPU with one warning when absent."""
  try:
    jax.local_devices(backend=platform)
    return platform
  except RuntimeError:
    warnings.warn(
        f"jax.platform is '{platform}' but JAX finds no such device; running on the CPU "
        f"(float32). Pass --jax.platform cpu to silence this warning.", stacklevel=3)
    return 'cpu'


def compute_dtype(config, platform):
  """float32 on the CPU whatever jax.precision says; jax.precision elsewhere (§4.4)."""
  if config.jax.precision not in DTYPES:
    raise ConfigError(
        f"jax.precision must be one of {', '.join(DTYPES)}, got '{config.jax.precision}'.")
  return jnp.float32 if platform == 'cpu' else DTYPES[config.jax.precision]


class JAXAgent(base.Agent):
  """DreamerV3 behind the embodied Agent contract (docs/architecture.md "Agent").

  train() returns its metrics as device arrays so that it never waits for the
  device; np.asarray / float() fetches them when they are logged.
  """

  def __init__(self, obs_space, act_space, step, config):
    set_runtime_flags(config)
    self.config, self.step = config, step
    self.obs_space = {k: v for k, v in obs_space.items() if not k.startswith('log_')}
    self.act_space = {k: v for k, v in act_space.items() if k != 'reset'}
    self.platform = select_platform(config.jax.platform)
    self.dtype = compute_dtype(config, self.platform)
    self._setup_devices()
    self.dreamer = agentlib.Dreamer(self.obs_space, self.act_space, config, self.dtype)
    self._compile()
    dummy = self._dummy_batch(1, 2)
    self._state = self._init(self.dreamer.key(3, 0), dummy)
    self._policy_params = None   # Single-device view of the parameters, made on demand.
    self._policy_count = 0
    self._print_summary()

  # Setup.

  def _setup_devices(self):
    if self.config.jax.parallel:
      devices = jax.devices(self.platform)   # All processes' devices when multi-host.
    else:
      devices = jax.local_devices(backend=self.platform)[:1]
    self.local_devices = [d for d in devices if d.process_index == jax.process_index()]
    count = len(self.local_devices)
    if self.config.batch_size % count:
      raise ConfigError(
          f'batch_size {self.config.batch_size} does not divide over {count} devices; '
          f'choose a multiple of {count}.')
    mesh = Mesh(np.array(devices), ('data',))
    self._replicated = NamedSharding(mesh, PartitionSpec())
    self._batched = NamedSharding(mesh, PartitionSpec('data'))
    self.global_batch = self.config.batch_size * jax.process_count()

  def _compile(self):
    d, repl, batched = self.dreamer, self._replicated, self._batched
    self._init = jax.jit(d.init, out_shardings=repl)
    self._initial_carry = jax.jit(d.initial_carry, static_argnums=1, out_shardings=batched)
    self._train = jax.jit(d.train, out_shardings=(repl, batched, repl), donate_argnums=0)
    self._report = jax.jit(d.report, out_shardings=repl)
    self._policy = jax.jit(d.policy, static_argnames='mode')
    self._policy_initial = jax.jit(d.initial_carry, static_argnums=1)

  def _dummy_batch(self, batch, length):
    data = {k: np.zeros((batch, length) + v.shape, v.dtype) for k, v in self.obs_space.items()}
    data['action'] = np.zeros((batch, length) + self.act_space['action'].shape, np.float32)
    return data

  def _print_summary(self):
    enc, dec = self.dreamer.wm.encoder, self.dreamer.wm.heads['decoder']
    print(f'Encoder CNN keys: {list(enc.cnn_shapes)}, MLP keys: {list(enc.mlp_shapes)}')
    print(f'Decoder CNN keys: {list(dec.cnn_shapes)}, MLP keys: {list(dec.mlp_shapes)}')
    params = self._state['params']
    groups = sorted({k.split('/')[0] for k in params})
    sizes = ', '.join(f'{g} {modules.count(modules.subtree(params, g)):,}' for g in groups)
    print(f'Parameters: {modules.count(params):,} ({sizes})')
    print(f'Devices: {len(self.local_devices)} x {self.platform}, compute dtype '
          f'{jnp.dtype(self.dtype).name}, processes {jax.process_count()}')
    cache = jax.config.jax_compilation_cache_dir
    print(f'Compiled programs cached in {cache}' if cache else 'Compile cache: off')

  # The Agent contract.

  def policy(self, obs, state=None, mode='train'):
    """obs: dict of numpy [N, ...] -> ({'action': numpy [N, A]}, state)."""
    if mode not in ('train', 'explore', 'eval'):
      raise ValueError(f"policy mode must be 'train', 'explore' or 'eval', got {mode!r}.")
    obs = self._check_obs(obs)
    params = self._local_params()
    if state is None:
      state = self._policy_initial(params, len(obs['is_first']))
    outs, state = self._policy(params, obs, state, np.uint32(self._policy_count), mode=mode)
    self._policy_count += 1
    return {'action': np.asarray(outs['action'])}, state

  def train(self, data, state=None):
    """One update on a batch [B, T, ...]; returns ({}, carry, metrics as device arrays)."""
    data = self._device_batch(data)
    if state is None:
      state = self._initial_carry(self._state['params'], self.global_batch)
    self._state, state, metrics = self._train(self._state, data, state)
    self._policy_params = None
    return {}, state, metrics

  def report(self, data):
    """Losses and open-loop videos `openl_<key>` on a batch, as numpy."""
    data = self._device_batch(data)
    metrics = self._report(self._state['params'], data, self._state['step'])
    return {k: _fetch(v) for k, v in metrics.items()}

  def dataset(self, generator):
    """Iterator over batches already placed on the devices, prepared in a thread."""
    return _prefetch((self._device_batch(batch) for batch in generator), PREFETCH)

  def save(self):
    """Flat dict 'path/to/array' -> numpy array of everything needed to resume."""
    tree = {path: _fetch(x) for path, x in _flatten(self._state).items()}
    tree['counters/policy'] = np.asarray(self._policy_count, np.int64)
    return tree

  def load(self, tree):
    """Restores save()'s tree; raises CheckpointMismatchError when it does not fit."""
    given = _flatten(tree)
    counter = given.pop('counters/policy', None)
    paths, treedef = jax.tree_util.tree_flatten_with_path(self._state)
    expected = {_path(p): x for p, x in paths}
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    reshaped = [(k, tuple(np.shape(given[k])), tuple(x.shape))
                for k, x in expected.items() if k in given and np.shape(given[k]) != x.shape]
    if missing or unexpected or reshaped:
      raise CheckpointMismatchError(missing, unexpected, reshaped)
    leaves = [jax.make_array_from_process_local_data(
        self._replicated, np.asarray(given[k]).astype(x.dtype)) for k, x in expected.items()]
    self._state = jax.tree_util.tree_unflatten(treedef, leaves)
    self._policy_count = int(counter) if counter is not None else 0
    self._policy_params = None

  # Helpers.

  @property
  def params(self):
    """The current parameters: flat dict path -> device array."""
    return self._state['params']

  def _local_params(self):
    """Parameters on the first local device, for acting (no copy on one device)."""
    if self._policy_params is None:
      self._policy_params = jax.tree.map(
          lambda x: x.addressable_shards[0].data, self._state['params'])
    return self._policy_params

  def _check_obs(self, obs):
    out = {}
    for key, space in self.obs_space.items():
      if key not in obs:
        raise KeyError(
            f"The policy needs observation key '{key}' ({space}); got keys {sorted(obs)}.")
      out[key] = np.asarray(obs[key], space.dtype)
    return out

  def _device_batch(self, data):
    """Batch [B, T, ...] with the agent's keys and dtypes, split over the devices."""
    if all(isinstance(v, jax.Array) for v in data.values()):
      return data   # Prepared by dataset() already.
    spaces = {**self.obs_space, 'action': self.act_space['action']}
    out = {}
    for key, space in spaces.items():
      if key not in data:
        raise KeyError(f"The training batch needs key '{key}' ({space}); got keys {sorted(data)}.")
      value = np.asarray(data[key], space.dtype)
      out[key] = jax.make_array_from_process_local_data(self._batched, value)
    return out


def _path(keys):
  """'params/rssm/gru/kernel' from a jax key path."""
  parts = []
  for key in keys:
    for attr in ('key', 'name', 'idx'):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
  return '/'.join(parts)


def _flatten(tree):
  return {_path(p): x for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _fetch(x):
  """Numpy copy of a (possibly multi-host replicated) device array."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    x = x.addressable_shards[0].data
  return np.asarray(x)


_END = object()


def _prefetch(iterator, depth):
  """Runs the iterator in a daemon thread, `depth` items ahead; re-raises its errors."""
  items = queue.Queue(depth)

  def work():
    try:
      for item in iterator:
        items.put(item)
      items.put(_END)
    except BaseException as e:   # Handed to the consumer, which re-raises it.
      items.put(e)

  threading.Thread(target=work, daemon=True, name='prefetch').start()

  def consume():
    while True:
      item = items.get()
      if item is _END:
        return
      if isinstance(item, BaseException):
        raise item
      yield item

  return consume()
