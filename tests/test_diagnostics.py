"""scripts/critic_speed.py and scripts/critic_probe.py: the critic diagnostics of docs/results."""

import importlib.util
import pathlib

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
def test_critic_probe_on_a_trained_run(tmp_path):
  import subprocess
  import sys
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
