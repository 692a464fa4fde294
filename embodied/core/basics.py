"""Host-side basics of the run loops: a step counter, schedules, a section
timer and short number formatting. No JAX here."""

import collections
import contextlib
import fractions
import math
import numbers
import operator
import time


def _with_value(op, reflected=False):
  """Applies a binary operator to the counter's value, so a Counter acts like an int."""
  def method(self, other):
    other = other.value if isinstance(other, Counter) else other
    if not isinstance(other, numbers.Real):
      return NotImplemented
    return op(other, self.value) if reflected else op(self.value, other)
  return method


class Counter:
  """A mutable step count that behaves like an int: int(c), c < 5, c + 1, range(c)."""

  def __init__(self, value=0):
    self.value = int(value)

  def increment(self, amount=1):
    self.value += int(amount)

  def save(self):
    return {'value': self.value}

  def load(self, state):
    self.value = int(state['value'])

  def __int__(self):
    return self.value

  __index__ = __int__

  def __float__(self):
    return float(self.value)

  def __repr__(self):
    return f'Counter({self.value})'

  __hash__ = None  # Mutable.
  __eq__ = _with_value(operator.eq)
  __ne__ = _with_value(operator.ne)
  __lt__ = _with_value(operator.lt)
  __le__ = _with_value(operator.le)
  __gt__ = _with_value(operator.gt)
  __ge__ = _with_value(operator.ge)
  __add__ = _with_value(operator.add)
  __radd__ = _with_value(operator.add, reflected=True)
  __sub__ = _with_value(operator.sub)
  __rsub__ = _with_value(operator.sub, reflected=True)
  __mul__ = _with_value(operator.mul)
  __rmul__ = _with_value(operator.mul, reflected=True)


class Every:
  """every(step) is True on the first call, then once `every` steps have passed.

  Due steps stay on the grid first + k * every even when the step jumps by
  several units per call (e.g. 4 envs); a jump over several due steps fires
  once. every <= 0 never fires.
  """

  def __init__(self, every):
    self._every = every
    self._last = None

  def __call__(self, step):
    step = int(step)
    if self._every <= 0:
      return False
    if self._last is None:
      self._last = step
      return True
    if step - self._last < self._every:
      return False
    self._last += (step - self._last) // self._every * self._every
    return True


class Ratio:
  """ratio(step) is the number of updates owed at `step` (algorithm.md §5.3).

  ratio: updates per env step, train_ratio / (batch_size * batch_length); 0
  never trains. The first call owes one update; later calls owe
  floor((step - prev) * ratio) and advance prev by exactly that many updates'
  worth of steps, so fractions carry over to later calls. The bookkeeping is
  in exact fractions, so after any call the total is 1 + floor(step * ratio)
  (for a first step 0) whatever the ratio, e.g. 32 / 96.
  """

  def __init__(self, ratio):
    if ratio < 0:
      raise ValueError(f'Ratio expects a ratio >= 0, got {ratio}.')
    self._ratio = fractions.Fraction(ratio).limit_denominator(10 ** 6)
    self._prev = None

  def __call__(self, step):
    step = int(step)
    if self._ratio == 0:
      return 0
    if self._prev is None:
      self._prev = fractions.Fraction(step)
      return 1
    repeats = math.floor((step - self._prev) * self._ratio)
    self._prev += repeats / self._ratio
    return repeats

  def save(self):
    return {'prev': None if self._prev is None else str(self._prev)}

  def load(self, state):
    self._prev = None if state['prev'] is None else fractions.Fraction(state['prev'])


class Once:
  """once() is True on the first call only."""

  def __init__(self):
    self._done = False

  def __call__(self, step=None):
    done, self._done = self._done, True
    return not done


class Until:
  """until(step) is True while step < until; until 0 or None means forever."""

  def __init__(self, until):
    self._until = until

  def __call__(self, step):
    return not self._until or int(step) < self._until


class Clock:
  """clock() is True on the first call, then once `seconds` have passed since
  it was last True. seconds == 0 is always True, seconds < 0 never."""

  def __init__(self, seconds, now=time.monotonic):
    self._seconds = seconds
    self._now = now
    self._last = None

  def __call__(self, step=None):
    if self._seconds < 0:
      return False
    now = self._now()
    if self._last is not None and now - self._last < self._seconds:
      return False
    self._last = now
    return True


class Timer:
  """Wall time per named section, reported as metrics for the logger.

  with timer.section('env'): ...
  timer.stats() -> {'env/total': s, 'env/mean': s, 'env/count': n, 'env/frac': f}
  where frac is the share of the wall time since the last reset.
  """

  def __init__(self, now=time.perf_counter):
    self._now = now
    self._reset()

  def _reset(self):
    self._start = self._now()
    self._totals = collections.defaultdict(float)
    self._counts = collections.defaultdict(int)

  @contextlib.contextmanager
  def section(self, name):
    start = self._now()
    try:
      yield
    finally:
      self._totals[name] += self._now() - start
      self._counts[name] += 1

  def stats(self, reset=True):
    elapsed = max(self._now() - self._start, 1e-9)
    metrics = {}
    for name, total in self._totals.items():
      metrics[f'{name}/total'] = total
      metrics[f'{name}/mean'] = total / self._counts[name]
      metrics[f'{name}/count'] = self._counts[name]
      metrics[f'{name}/frac'] = total / elapsed
    if reset:
      self._reset()
    return metrics


def format_number(value):
  """Three significant digits with a unit: 1234567 -> '1.23M', 999 -> '999', 0.25 -> '0.25'."""
  value = float(value)
  if not math.isfinite(value):
    return str(value)
  if abs(value) < 1000 and value.is_integer():
    return str(int(value))
  unit = ''
  for larger in ('K', 'M', 'B', 'T'):
    if abs(value) < 999.5:
      break
    value, unit = value / 1000, larger
  return f'{value:.3g}{unit}'
