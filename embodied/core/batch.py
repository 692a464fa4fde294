"""BatchEnv: N envs stepped together, in-process, in threads or in processes."""

import concurrent.futures
import multiprocessing
import pickle
import signal
import sys
import traceback
import weakref

import cloudpickle
import numpy as np

# Restarts of one env in a row (without a successful step) before giving up.
_MAX_RESTARTS = 3


class EnvProcessDied(RuntimeError):
  """An env process died and envs.restart is off (or restarting kept failing)."""


class EnvWorkerError(RuntimeError):
  """An env raised an exception in its process that could not be sent back as is."""


class BatchEnv:
  """Steps N envs built from zero-argument constructors; arrays are [N, ...].

  parallel='none' steps them one after another, 'thread' in a thread pool,
  'process' each in its own spawned process (the constructors travel with
  cloudpickle). An exception inside an env is re-raised here with the env
  index (and, for processes, the worker's traceback as a note). When an env
  process dies, restart=True starts a new one and returns the first
  observation of a new episode for that env; restart=False raises.
  """

  def __init__(self, ctors, parallel='process', restart=False):
    if parallel not in ('none', 'thread', 'process'):
      raise ValueError(f"parallel must be 'none', 'thread' or 'process', got '{parallel}'.")
    ctors = list(ctors)
    if not ctors:
      raise ValueError('BatchEnv needs at least one env constructor.')
    self._parallel = parallel
    self._restart = restart
    self._pool = None
    self.restarts = 0  # Number of env processes restarted so far.
    if parallel == 'process':
      self._workers = [_Process(i, ctor) for i, ctor in enumerate(ctors)]
      _wait_started(self._workers)
    else:
      self._workers = [_Local(i, ctor) for i, ctor in enumerate(ctors)]
      if parallel == 'thread':
        self._pool = concurrent.futures.ThreadPoolExecutor(len(ctors))
    self._obs_space, self._act_space = self._workers[0].spaces()
    self._finalizer = weakref.finalize(self, _close_all, self._workers, self._pool)

  def __len__(self):
    return len(self._workers)

  def __repr__(self):
    return f'BatchEnv(len={len(self)}, parallel={self._parallel}, restart={self._restart})'

  @property
  def obs_space(self):
    return self._obs_space

  @property
  def act_space(self):
    return self._act_space

  def step(self, acts):
    """acts: dict of [N, ...] arrays (incl. 'reset' [N]) -> obs dict of [N, ...]."""
    for key, value in acts.items():
      if len(value) != len(self):
        raise ValueError(
            f"Action '{key}' has {len(value)} entries but there are {len(self)} envs.")
    actions = [{key: value[i] for key, value in acts.items()} for i in range(len(self))]
    if self._parallel == 'none':
      obs = [worker.step(action) for worker, action in zip(self._workers, actions)]
    elif self._parallel == 'thread':
      obs = list(self._pool.map(lambda w, a: w.step(a), self._workers, actions))
    else:
      obs = self._step_processes(actions)
    return {key: np.stack([o[key] for o in obs]) for key in obs[0]}

  def close(self):
    self._finalizer()

  def _step_processes(self, actions):
    # Send every action first so the envs step concurrently, then collect.
    for worker, action in zip(self._workers, actions):
      worker.send('step', action)
    results, errors = [], []
    for worker, action in zip(self._workers, actions):
      try:
        results.append(worker.receive())
      except _Died as died:
        results.append(self._recover(worker, action, died.exitcode))
      except Exception as e:
        results.append(None)
        errors.append(e)
    if errors:
      raise errors[0]
    return results

  def _recover(self, worker, action, exitcode):
    """Restarts a dead worker and returns the first obs of its new episode."""
    if not self._restart:
      raise EnvProcessDied(
          f'Env {worker.index} process died (exit code {exitcode}). '
          'Set envs.restart True to restart crashed envs.')
    for _ in range(_MAX_RESTARTS):
      print(
          f'Env {worker.index} process died (exit code {exitcode}); restarting it; '
          'its partial episode is dropped.', file=sys.stderr, flush=True)
      self.restarts += 1
      try:
        worker.start()
        worker.wait_ready()
        worker.send('step', {**action, 'reset': np.bool_(True)})
        return worker.receive()
      except _Died as died:
        exitcode = died.exitcode
    raise EnvProcessDied(
        f'Env {worker.index} process died {_MAX_RESTARTS} times in a row while restarting '
        f'(last exit code {exitcode}); giving up.')


class _Local:
  """An env in this process."""

  def __init__(self, index, ctor):
    self.index = index
    self.env = ctor()

  def spaces(self):
    return self.env.obs_space, self.env.act_space

  def step(self, action):
    try:
      return self.env.step(action)
    except Exception as e:
      e.add_note(f'Raised by env {self.index}.')
      raise

  def close(self):
    self.env.close()


class _Died(Exception):

  def __init__(self, exitcode):
    super().__init__(exitcode)
    self.exitcode = exitcode


class _Process:
  """An env in a spawned process, talking over a pipe."""

  def __init__(self, index, ctor):
    self.index = index
    self._context = multiprocessing.get_context('spawn')
    self._payload = cloudpickle.dumps(ctor)
    self._process = None
    self._conn = None
    self.start()

  def start(self):
    """Starts the process; the constructor runs there, see wait_ready()."""
    self._stop()
    self._conn, child = self._context.Pipe()
    self._process = self._context.Process(
        target=_worker, args=(self.index, self._payload, child), daemon=True)
    self._process.start()
    child.close()  # Only the child holds its end, so its death closes the pipe.
    self._broken = False

  def wait_ready(self):
    self.receive()

  def spaces(self):
    self.send('spaces')
    return self.receive()

  def send(self, method, arg=None):
    try:
      self._conn.send((method, arg))
    except (BrokenPipeError, ConnectionResetError, EOFError, OSError):
      self._broken = True  # Reported by the following receive().

  def receive(self):
    """Returns the worker's result, raises its exception, or raises _Died."""
    try:
      while not self._broken and not self._conn.poll(1.0):
        if not self._process.is_alive():
          break
      if self._broken or not self._conn.poll():
        raise EOFError
      status, payload, tb = self._conn.recv()
    except (EOFError, ConnectionResetError, BrokenPipeError, OSError):
      self._process.join(5)
      raise _Died(self._process.exitcode) from None
    if status == 'ok':
      return payload
    raise _rebuild_error(self.index, payload, tb)

  def close(self):
    if self._process and self._process.is_alive():
      self.send('close')
      self._process.join(5)
    self._stop()

  def _stop(self):
    if self._process is not None:
      if self._process.is_alive():
        self._process.kill()
      self._process.join(5)
      self._conn.close()
    self._process = None


def _wait_started(workers):
  """Waits until every env is built; on any failure closes them all and raises."""
  try:
    for worker in workers:
      try:
        worker.wait_ready()
      except _Died as died:
        raise EnvProcessDied(
            f'Env {worker.index} process died while building its env '
            f'(exit code {died.exitcode}).') from None
  except BaseException:
    _close_all(workers, None)
    raise


def _worker(index, payload, conn):
  """Process body: builds the env, then serves step/spaces until 'close'."""
  # Ctrl-C reaches the whole process group; the parent closes the workers.
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  env = None
  try:
    env = cloudpickle.loads(payload)()
    conn.send(('ok', None, None))
    while True:
      method, arg = conn.recv()
      if method == 'close':
        break
      try:
        if method == 'step':
          result = env.step(arg)
        elif method == 'spaces':
          result = (env.obs_space, env.act_space)
        else:
          raise ValueError(f'Unknown env worker method: {method}')
        conn.send(('ok', result, None))
      except Exception as e:
        conn.send(_error_message(e))
  except EOFError:
    pass  # The parent is gone.
  except Exception as e:
    conn.send(_error_message(e))
  finally:
    if env is not None:
      env.close()
    conn.close()


def _error_message(exc):
  try:
    payload = cloudpickle.dumps(exc)
  except Exception:
    payload = None
  return ('error', payload, traceback.format_exc())


def _rebuild_error(index, payload, tb):
  note = f'Raised by env {index} in its process:\n{tb}'
  try:
    exc = pickle.loads(payload)
  except Exception:
    return EnvWorkerError(note)
  exc.add_note(note)
  return exc


def _close_all(workers, pool):
  for worker in workers:
    try:
      worker.close()
    except Exception:
      pass  # Closing must reach every worker even when one fails.
  if pool:
    pool.shutdown(wait=False)
