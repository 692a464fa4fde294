"""scripts/critic_speed.py, critic_probe.py and termination_probe.py: the diagnostics of
docs/results."""

import importlib.util
import pathlib
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def load_script(name):
  spec = importlib.util.spec_from_file_location(name, ROOT / 'scripts' / f'{name}.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_a_wider_critic_reaches_its_target_faster():
  script = load_script('critic_speed')
  narrow, wide = (script.run(width, 12.0, 300, 150, batch=256) for width in (16, 256))
  for rows in (narrow, wide):
    assert [n for n, _, _ in rows] == [150, 300]
    (_, first, off_first), (_, last, off_last) = rows
    assert 0 <= first < last < 12 and 1 > off_first > off_last > 0   # Rising from 0, mass draining.
  assert wide[-1][1] > 10 * narrow[-1][1]


@pytest.mark.slow
def test_critic_and_termination_probes_on_a_trained_run(tmp_path):
  import subprocess
  from test_inference import SMALL
  subprocess.run(
      [sys.executable, 'dreamerv3/train.py', '--configs', 'debug', '--task', 'gym_CartPole-v1',
       '--run.steps', '300', '--envs.parallel', 'none', '--run.logdir', str(tmp_path), *SMALL],
      cwd=ROOT, check=True, capture_output=True, timeout=900)
  results = load_script('critic_probe').probe(tmp_path, batch=4)
  assert set(results) == {'critic', 'slow_critic'}
  for stats in results.values():
    assert all(np.isfinite(v) for v in stats.values())
    masses = [stats[k] for k in ('mass around the mode', 'mass below symlog 0', 'mass above symlog 8')]
    assert all(0 <= m <= 1 for m in masses) and sum(masses[1:]) <= 1
  ends = load_script('termination_probe').probe(tmp_path, length=4)
  assert ends and all(name.split()[0] in ('cart', 'pole') for name in ends)
  for stats in ends.values():
    assert stats['episodes'] > 0 and 0 <= stats['terminal predicted'] <= 1
    assert stats['P(continue), last steps'].shape == (4,)   # Episodes of 4 steps: all shown.
    assert np.all((0 <= stats['P(continue), last steps']) & (stats['P(continue), last steps'] <= 1))
    assert stats['decoder error at the end'].shape == (4,)


def cartpole_stream(ends):
  """One worker's stream of CartPole-like episodes: (length, x, angle, terminal) each."""
  keys = {'vector': [], 'reward': [], 'is_first': [], 'is_last': [], 'is_terminal': []}
  for length, x, angle, terminal in ends:
    for t in range(length):
      last = t == length - 1
      keys['vector'].append([x if last else 0, 0, angle if last else 0, 0])
      keys['reward'].append(0.0 if t == 0 else 1.0)
      keys['is_first'].append(t == 0)
      keys['is_last'].append(last)
      keys['is_terminal'].append(last and terminal)
  stream = {k: np.asarray(v) for k, v in keys.items()}
  stream['stamp'] = np.arange(len(stream['reward']))
  return stream


def test_terminal_windows_group_episodes_by_end_and_half():
  script = load_script('termination_probe')
  stream = cartpole_stream([
      (10, 2.5, 0.0, True),    # Cart out, steps 1-10.
      (3, 0.0, 0.3, True),     # Pole down, too short for windows of 5.
      (12, 0.0, -0.3, True),   # Pole down, ends at step 25.
      (9, 0.1, 0.0, False),    # Time limit: not terminal, left out.
      (20, -2.6, 0.0, True),   # Cart out, ends at step 54, after half the run (27).
  ])
  groups = script.terminal_windows([stream], length=5)
  assert {name: [end for _, end in windows] for name, windows in groups.items()} == {
      'cart first half': [9], 'pole first half': [24], 'cart second half': [53]}
