"""Shared test setup: one private JAX compilation cache for the whole suite.

The agent caches compiled programs in ~/.cache/dreamerv3/xla by default
(jax.compile_cache), unless JAX_COMPILATION_CACHE_DIR names another place.
The tests set that variable before JAX starts, so that neither this process
nor the subprocesses that inherit the environment write to the user's home.
"""

import os
import tempfile


def _jax_cache_dir():
  """A compilation cache that persists across test sessions, private to this user.

  A shared, predictable /tmp path could be pre-filled by another user with
  compiled code, so it must be ours and not writable by others; else a fresh one.
  """
  path = os.environ.get('DREAMERV3_TEST_JAX_CACHE') or os.path.join(
      tempfile.gettempdir(), f'dreamerv3-test-jax-cache-{os.getuid()}')
  try:
    os.makedirs(path, mode=0o700, exist_ok=True)
    info = os.stat(path)
    if info.st_uid == os.getuid() and not info.st_mode & 0o022:
      return path
  except OSError:
    pass
  return tempfile.mkdtemp(prefix='dreamerv3-test-jax-cache-')


os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', _jax_cache_dir())
