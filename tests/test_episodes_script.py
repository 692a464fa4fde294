"""scripts/episodes.py: per-episode returns read back from a run's replay chunks."""

import importlib.util
import json
import pathlib

import numpy as np
import pytest

from embodied.replay import Uniform

ROOT = pathlib.Path(__file__).resolve().parent.parent


def load_script():
  spec = importlib.util.spec_from_file_location('episodes_script', ROOT / 'scripts' / 'episodes.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def step(reward, first, last):
  return {'obs': np.zeros(2, np.float32), 'reward': np.float32(reward),
          'is_first': first, 'is_last': last, 'is_terminal': last}


def episode(rewards):
  """The steps of an episode: a reset step (reward 0), then one step per reward."""
  steps = [step(0.0, True, False)]
  steps += [step(r, False, i == len(rewards) - 1) for i, r in enumerate(rewards)]
  return steps


def test_episodes_of_two_workers_across_chunks(tmp_path, capsys):
  script = load_script()
  replay = Uniform(4, 1000, directory=tmp_path / 'replay', chunksize=3)   # Episodes span chunks.
  worker0 = episode([1, 2, 3]) + episode([5] * 6) + episode([1])[:1]     # The last one unfinished.
  worker1 = episode([10, 10])
  # Interleave: worker 1 finishes its episode after worker 0's 5th step.
  order = [(0, s) for s in worker0[:5]] + [(1, s) for s in worker1] + [(0, s) for s in worker0[5:]]
  for worker, item in order:
    replay.add(item, worker)
  replay.save()
  in_progress = tmp_path / 'replay' / 'write-in-progress.npz.tmp'   # A live run's write.
  in_progress.write_bytes(b'partial')
  step, score, length = script.episodes(script.read_streams(tmp_path / 'replay'))
  assert in_progress.exists()   # Only read: loading a replay would remove it.
  # Worker 0's first episode ends with its 4th step (4 steps in all by then); worker 1's
  # with the 8th step overall; worker 0's second with its 11th step, the 8 + 6 = 14th.
  assert step == [4, 8, 14]
  assert score == [6.0, 20.0, 30.0]
  assert length == [3, 2, 6]
  out = tmp_path / 'episodes.json'
  script.main([str(tmp_path), '--output', str(out)])
  assert json.loads(out.read_text()) == {'step': [4, 8, 14], 'score': [6.0, 20.0, 30.0],
                                         'length': [3, 2, 6]}
  assert '3 episodes (fewer than 10)' in capsys.readouterr().out


def test_summary_of_last_and_best_window():
  script = load_script()
  score = [0.0] * 5 + [100.0] * 10 + [50.0] * 10
  text = script.summary(list(range(1, 26)), score)
  assert 'mean of the last 10 50.0' in text and 'best mean of 10 in a row 100.0' in text
  assert '(ending at step 15)' in text


def test_missing_replay_directory_is_a_clear_error(tmp_path, capsys):
  script = load_script()
  try:
    script.main([str(tmp_path)])
  except SystemExit as e:
    assert e.code == 2
  assert 'replay does not exist: pass the logdir of a run' in capsys.readouterr().err


def test_cartpole_ends_from_the_last_observation(tmp_path, capsys):
  script = load_script()
  replay = Uniform(4, 1000, directory=tmp_path / 'replay', chunksize=4)

  def cartpole_episode(last_vector, terminal, length=3):
    steps = episode([1.0] * length)
    for item in steps:
      item['vector'] = item.pop('obs').repeat(2)           # [x, x_dot, angle, angle_dot]
    steps[-1]['vector'] = np.float32(last_vector)
    steps[-1]['is_terminal'] = terminal
    return steps

  episodes = [cartpole_episode([0.1, 0, 0.25, 0], True),    # Pole beyond 12° (0.209 rad).
              cartpole_episode([-2.5, 0, 0.1, 0], True),    # Cart beyond -2.4.
              cartpole_episode([0.0, 0, 0.0, 0], False),    # Time limit.
              cartpole_episode([2.41, 0, -0.3, 0], True)]   # Both: the cart counts.
  for steps in episodes:
    for item in steps:
      replay.add(item, 0)
  replay.save()
  out = tmp_path / 'episodes.json'
  script.main([str(tmp_path), '--cartpole', '--output', str(out)])
  result = json.loads(out.read_text())
  assert result['step'] == [4, 8, 12, 16]
  assert result['end'] == ['pole', 'cart', 'limit', 'cart']
  assert ('Ends, first half (2 episodes): cart 1, pole 1; '
          'second half (2 episodes): cart 1, limit 1.') in capsys.readouterr().out


def test_cartpole_flag_on_a_run_without_vector_observations(tmp_path, capsys):
  script = load_script()
  replay = Uniform(4, 1000, directory=tmp_path / 'replay', chunksize=4)
  for item in episode([1.0, 1.0]):
    replay.add(item, 0)
  replay.save()
  with pytest.raises(SystemExit) as exit_info:
    script.main([str(tmp_path), '--cartpole'])
  assert exit_info.value.code == 2
  assert "--cartpole needs the replay key 'vector'" in capsys.readouterr().err
