"""scripts/plot.py: reading logdirs, seed grouping, smoothing, binning, the
scores format and the PNG it writes."""

import importlib.util
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = ROOT / 'scripts' / 'plot.py'
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def load_plot():
  spec = importlib.util.spec_from_file_location('plot_script', SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


plot = load_plot()


def write_run(directory, steps, scores, seed=None, task='gym_CartPole-v1', extra=True):
  """A logdir as the JSONL logger writes it, with unrelated lines in between."""
  directory.mkdir(parents=True)
  lines = []
  for step, score in zip(steps, scores):
    if extra:
      lines.append(json.dumps({'step': int(step), 'train/loss': 0.5}))
    lines.append(json.dumps({'step': int(step), 'episode/score': float(score)}))
  lines.append('{"step": 999, "episode/sco')  # Truncated by a kill mid-write.
  (directory / 'metrics.jsonl').write_text('\n'.join(lines) + '\n')
  if seed is not None:
    (directory / 'config.yaml').write_text(f'seed: {seed}\ntask: {task}\nrun:\n  steps: 100\n')


@pytest.fixture
def logdirs(tmp_path):
  """Two seeds of 'cartpole' and one of 'other', each 40 log points."""
  rng = np.random.default_rng(0)
  steps = np.arange(40) * 500
  scores = {
      'cartpole-seed0': rng.normal(size=40).cumsum(),
      'cartpole-seed1': rng.normal(size=40).cumsum(),
      'other-seed0': rng.normal(size=40),
  }
  for index, (name, ys) in enumerate(scores.items()):
    write_run(tmp_path / 'runs' / name, steps, ys, seed=index % 2)
  return tmp_path / 'runs', steps, scores


def assert_png(path):
  data = path.read_bytes()
  assert data[:8] == PNG_SIGNATURE
  assert len(data) > 10_000  # Axes, curves and a legend, not an empty canvas.
  import matplotlib.image
  height, width = matplotlib.image.imread(path).shape[:2]
  assert width >= 600 and height >= 400


def test_script_writes_png(logdirs, tmp_path):
  root, _, _ = logdirs
  output = tmp_path / 'curve.png'
  result = subprocess.run(
      [sys.executable, str(SCRIPT), str(root), '--output', str(output), '--title', 'CartPole'],
      cwd=tmp_path, capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  assert_png(output)


def test_main_writes_png_with_references(logdirs, tmp_path):
  root, _, _ = logdirs
  reference = tmp_path / 'paper.json'
  reference.write_text(json.dumps({
      'task': 'gym_CartPole-v1', 'method': 'paper', 'source': 'test',
      'points': [{'step': 10000, 'score': 3.0, 'std': 1.0}]}))
  output = tmp_path / 'out' / 'curve.png'  # The directory is created.
  assert plot.main([str(root), '--output', str(output), '--scores', str(reference),
                    '--spread', 'minmax']) == 0
  assert_png(output)


def test_runs_grouped_by_seed_suffix(logdirs):
  root, steps, scores = logdirs
  runs = plot.load_runs([root], 'episode/score')
  assert [(run.name, run.method, run.seed) for run in runs] == [
      ('cartpole-seed0', 'cartpole', 0), ('cartpole-seed1', 'cartpole', 1),
      ('other-seed0', 'other', 0)]
  np.testing.assert_array_equal(runs[0].xs, steps)
  np.testing.assert_allclose(runs[1].ys, scores['cartpole-seed1'])
  assert runs[0].task == 'gym_CartPole-v1'


def test_method_names():
  assert plot.method_name('cartpole-seed3') == 'cartpole'
  assert plot.method_name('crafter/large/seed_12') == 'crafter/large'
  assert plot.method_name('walker_seed=1') == 'walker'
  assert plot.method_name('atari100k') == 'atari100k'  # No seed suffix: its own method.
  assert plot.method_name('lr1e-4-run2', r'^(.*)-run\d+$') == 'lr1e-4'
  assert plot.method_name('lr1e-4-run2', r'lr\S+?(?=-run)') == 'lr1e-4'  # Whole match.


def test_runs_in_nested_seed_directories_take_the_parent_name(tmp_path):
  for seed in (0, 1):
    write_run(tmp_path / 'crafter' / f'seed{seed}', [0, 100], [1.0, 2.0])
  runs = plot.load_runs([tmp_path / 'crafter'], 'episode/score')
  assert [run.method for run in runs] == ['crafter', 'crafter']
  assert sorted(run.seed for run in runs) == [0, 1]


def test_smooth_is_trailing_moving_average():
  ys = [1.0, 2.0, 3.0, 4.0, 5.0, 10.0]
  expected = [1.0, 1.5, 2.0, 3.0, 4.0, 19 / 3]
  np.testing.assert_allclose(plot.smooth(ys, 3), expected)
  np.testing.assert_allclose(plot.smooth(ys, 1), ys)
  np.testing.assert_allclose(plot.smooth(ys, 100), np.cumsum(ys) / np.arange(1, 7))


def test_aggregate_mean_and_spread_match_numpy():
  rng = np.random.default_rng(1)
  xs = np.arange(10.0) * 100
  ys = rng.normal(size=(3, 10))
  runs = [plot.Run(f'm-seed{i}', 'm', i, xs, ys[i]) for i in range(3)]
  # 5 bins of width 180 over [0, 900], two points each: per run, pair means.
  (curve,) = plot.aggregate(runs, bins=5, window=1, spread='std')
  binned = ys.reshape(3, 5, 2).mean(-1)  # [S, K]
  np.testing.assert_allclose(curve.xs, [90.0, 270.0, 450.0, 630.0, 810.0])
  np.testing.assert_allclose(curve.mean, binned.mean(0))
  np.testing.assert_allclose(curve.low, binned.mean(0) - binned.std(0))
  np.testing.assert_allclose(curve.high, binned.mean(0) + binned.std(0))
  assert curve.seeds == 3
  (curve,) = plot.aggregate(runs, bins=10, window=3, spread='minmax')
  smoothed = np.stack([plot.smooth(y, 3) for y in ys])
  np.testing.assert_allclose(curve.low, smoothed.min(0))
  np.testing.assert_allclose(curve.high, smoothed.max(0))


def test_aggregate_interpolates_inside_a_run_and_averages_the_seeds_that_cover_a_bin():
  short = plot.Run('a-seed0', 'a', 0, np.array([0.0, 10.0]), np.array([1.0, 3.0]))
  long = plot.Run('a-seed1', 'a', 1, np.array([0.0, 30.0]), np.array([5.0, 7.0]))
  (curve,) = plot.aggregate([short, long], bins=3, window=1)
  # Bins [0, 10), [10, 20), [20, 30]: seed 0 has 1 and 3 and ends at 10; seed 1
  # has 5 and 7, and 6 interpolated at the centre 15 of its empty middle bin.
  np.testing.assert_allclose(curve.xs, [5.0, 15.0, 25.0])
  np.testing.assert_allclose(curve.mean, [3.0, 4.5, 7.0])
  np.testing.assert_allclose(curve.high - curve.mean, [2.0, 1.5, 0.0])


def test_seeds_logged_at_different_steps_give_a_smooth_mean():
  # Seeds y = x and y = x + 10 logged at interleaved steps: where both run, the
  # mean is x + 5, not a zigzag between one seed's points and the other's.
  xs0, xs1 = np.arange(0.0, 100.0, 10), np.arange(5.0, 105.0, 10)
  runs = [plot.Run('a-seed0', 'a', 0, xs0, xs0.copy()), plot.Run('a-seed1', 'a', 1, xs1, xs1 + 10)]
  (curve,) = plot.aggregate(runs, bins=40, window=1)
  both = (curve.xs >= 5) & (curve.xs <= 90)
  assert both.sum() > 30
  # Within a bin (width 2.625) a point may sit 1.3 from the centre.
  np.testing.assert_allclose(curve.mean[both], curve.xs[both] + 5, atol=1.4)


def test_missing_metric_lists_available(logdirs, tmp_path):
  root, _, _ = logdirs
  result = subprocess.run(
      [sys.executable, str(SCRIPT), str(root), '--metric', 'episode/length',
       '--output', str(tmp_path / 'x.png')],
      capture_output=True, text=True, timeout=120)
  assert result.returncode == 2
  assert "'episode/length'" in result.stderr
  assert 'episode/score, train/loss' in result.stderr
  assert not (tmp_path / 'x.png').exists()


def test_no_metrics_file_is_an_error(tmp_path, capsys):
  (tmp_path / 'empty').mkdir()
  assert plot.main([str(tmp_path / 'empty'), '--output', str(tmp_path / 'x.png')]) == 2
  assert 'No metrics.jsonl found under' in capsys.readouterr().err
  assert plot.main([str(tmp_path / 'missing')]) == 2
  assert 'does not exist' in capsys.readouterr().err
  with pytest.raises(SystemExit) as raised:
    plot.main([str(tmp_path / 'empty'), '--group', '(seed'])
  assert raised.value.code == 2
  assert "--group '(seed' is not a valid regular expression" in capsys.readouterr().err


def test_missing_matplotlib_exits_with_install_hint(logdirs, tmp_path):
  root, _, _ = logdirs
  code = (
      'import runpy, sys\n'
      "sys.modules['matplotlib'] = None\n"  # Makes `import matplotlib` fail.
      f"sys.argv = ['plot.py', {str(root)!r}, '--output', {str(tmp_path / 'x.png')!r}]\n"
      f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')\n")
  result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=120)
  assert result.returncode == 2
  assert 'scripts/plot.py needs matplotlib: pip install .[plot]' in result.stderr


def test_export_scores_round_trip(logdirs, tmp_path):
  root, _, _ = logdirs
  path = tmp_path / 'scores' / 'ours.json'
  assert plot.main([str(root), '--export-scores', str(path)]) == 0
  assert not (tmp_path / 'curve.png').exists()  # Only the export was asked for.
  entries = plot.load_scores(path)
  assert [(e['task'], e['method'], e['metric']) for e in entries] == [
      ('gym_CartPole-v1', 'cartpole', 'episode/score'),
      ('gym_CartPole-v1', 'other', 'episode/score')]
  runs = plot.load_runs([root], 'episode/score')
  restored = [run for entry in entries for run in plot.scores_runs(entry, '')]
  assert [(r.method, r.seed) for r in restored] == [(r.method, r.seed) for r in runs]
  for ours, back in zip(runs, restored):
    np.testing.assert_array_equal(back.xs, ours.xs)
    np.testing.assert_array_equal(back.ys, ours.ys)
  original = plot.aggregate(runs, bins=7, window=2)
  again = plot.aggregate(restored, bins=7, window=2)
  for a, b in zip(original, again):
    np.testing.assert_array_equal(a.mean, b.mean)


@pytest.mark.parametrize('entry, message', [
    ({'method': 'm', 'points': []}, "key 'task' must be a string"),
    ({'task': 't', 'method': 'm'}, "'runs' (curves) or 'points'"),
    ({'task': 't', 'method': 'm', 'runs': [{'xs': [1, 2], 'ys': [1]}]}, 'runs[0] needs lists'),
    ({'task': 't', 'method': 'm', 'points': [{'step': 1}]}, "points[0] needs numbers"),
])
def test_bad_scores_file_names_the_problem(tmp_path, entry, message):
  path = tmp_path / 'bad.json'
  path.write_text(json.dumps([entry]))
  with pytest.raises(plot.PlotError) as error:
    plot.load_scores(path)
  assert message in str(error.value) and 'bad.json entry 0' in str(error.value)


def test_shipped_scores_files_are_valid():
  files = sorted((ROOT / 'scores').glob('*.json'))
  assert files, 'scores/ holds no JSON files'
  for path in files:
    for entry in plot.load_scores(path):
      assert entry['source'], f'{path.name}: every entry names its source'
