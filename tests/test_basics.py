import json
import random

import pytest

from embodied.core.basics import (
    Clock, Counter, Every, Once, Ratio, Timer, Until, format_number)


class FakeTime:
  """A clock the test advances by hand."""

  def __init__(self):
    self.now = 0.0

  def __call__(self):
    return self.now


def test_counter_is_int_like():
  counter = Counter()
  counter.increment()
  counter.increment(4)
  assert int(counter) == 5 and counter.value == 5
  assert counter == 5 and counter != 4 and counter == Counter(5)
  assert counter < 6 and counter <= 5 and counter > 4.5 and counter >= 5
  assert counter + 1 == 6 and 1 + counter == 6 and 10 - counter == 5 and counter * 2 == 10
  assert list(range(counter)) == [0, 1, 2, 3, 4]
  assert [0, 1, 2, 3, 4, 5][counter] == 5
  assert repr(counter) == 'Counter(5)'
  with pytest.raises(TypeError):
    hash(counter)


def test_counter_save_load():
  counter = Counter(7)
  state = json.loads(json.dumps(counter.save()))
  assert state == {'value': 7}
  restored = Counter()
  restored.load(state)
  assert restored == 7


def test_every():
  every = Every(10)
  fired = [step for step in range(0, 50, 3) if every(step)]
  # First call, then the first step at or past each multiple of 10 after 0.
  assert fired == [0, 12, 21, 30, 42]
  never = Every(0)
  assert not any(never(step) for step in range(5))


def test_every_jump_fires_once_and_stays_on_grid():
  every = Every(10)
  assert every(5)
  assert every(37)  # Passed 15, 25, 35: fires once, next due at 45.
  assert not every(44)
  assert every(45)


def test_ratio_first_call_and_half():
  ratio = Ratio(512 / 1024)
  owed = [ratio(step) for step in range(9)]
  assert owed == [1, 0, 1, 0, 1, 0, 1, 0, 1]


def test_ratio_one_per_32_steps():
  ratio = Ratio(1 / 32)
  owed = {step: ratio(step) for step in range(0, 200)}
  assert [step for step, n in owed.items() if n] == [0, 32, 64, 96, 128, 160, 192]
  assert set(owed.values()) == {0, 1}


@pytest.mark.parametrize('train_ratio, batch_steps', [
    (32, 1024), (64, 1024), (1024, 1024), (2048, 1024), (32, 96), (10, 1024), (7, 3)])
def test_ratio_total_matches_formula_with_uneven_steps(train_ratio, batch_steps):
  rng = random.Random(0)
  ratio = Ratio(train_ratio / batch_steps)
  step, total = 0, ratio(0)
  for _ in range(2000):
    step += rng.randint(0, 9)  # e.g. several envs, some calls without progress.
    total += ratio(step)
    assert total == 1 + step * train_ratio // batch_steps


def test_ratio_zero_and_negative():
  ratio = Ratio(0)
  assert [ratio(step) for step in range(5)] == [0] * 5
  with pytest.raises(ValueError, match='>= 0'):
    Ratio(-1)


def test_ratio_resume_is_exact():
  steps = list(range(0, 300, 7))
  reference = Ratio(1 / 3)
  expected = [reference(step) for step in steps]
  first = Ratio(1 / 3)
  owed = [first(step) for step in steps[:20]]
  second = Ratio(1 / 3)
  second.load(json.loads(json.dumps(first.save())))
  owed += [second(step) for step in steps[20:]]
  assert owed == expected
  fresh = Ratio(1 / 3)
  fresh.load(Ratio(1 / 3).save())
  assert fresh(100) == 1  # An unstarted ratio still owes the first update.


def test_once_and_until():
  once = Once()
  assert [once() for _ in range(3)] == [True, False, False]
  until = Until(3)
  assert [until(step) for step in range(5)] == [True, True, True, False, False]
  assert all(Until(0)(step) for step in range(0, 10 ** 9, 10 ** 8))
  assert Until(None)(10 ** 12)


def test_clock():
  time = FakeTime()
  clock = Clock(10, now=time)
  fired = []
  for t in [0, 5, 9.9, 10, 15, 19.9, 20.5, 31]:
    time.now = t
    if clock():
      fired.append(t)
  assert fired == [0, 10, 20.5, 31]
  assert all(Clock(0, now=time)() for _ in range(3))
  assert not any(Clock(-1, now=time)() for _ in range(3))


def test_timer_stats():
  time = FakeTime()
  timer = Timer(now=time)
  for duration in (1.0, 3.0):
    with timer.section('env'):
      time.now += duration
  with timer.section('train'):
    time.now += 4.0
  stats = timer.stats()
  assert stats['env/total'] == 4.0 and stats['env/mean'] == 2.0 and stats['env/count'] == 2
  assert stats['env/frac'] == 0.5 and stats['train/frac'] == 0.5
  assert timer.stats() == {}  # Reset after reporting.


def test_timer_counts_failed_sections():
  time = FakeTime()
  timer = Timer(now=time)
  with pytest.raises(RuntimeError):
    with timer.section('env'):
      time.now += 2.0
      raise RuntimeError
  assert timer.stats(reset=False)['env/total'] == 2.0


@pytest.mark.parametrize('value, text', [
    (0, '0'), (999, '999'), (0.25, '0.25'), (12.345, '12.3'), (1000, '1K'),
    (1500, '1.5K'), (999_700, '1M'), (1_234_567, '1.23M'), (55_000_000, '55M'),
    (10 ** 10, '10B'), (-2500, '-2.5K'), (float('nan'), 'nan')])
def test_format_number(value, text):
  assert format_number(value) == text
