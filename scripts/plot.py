"""Plot learning curves from logdirs, aggregated over seeds.

  python scripts/plot.py ~/logdir --output curve.png
  python scripts/plot.py ~/logdir/crafter-seed0 ~/logdir/crafter-seed1 \
      --metric episode/score --smooth 5 --scores scores/crafter_dreamerv3_paper.json
  python scripts/plot.py ~/logdir --export-scores scores/crafter_ours.json

Every argument is a run's logdir (it holds `metrics.jsonl`, one JSON object
{"step": int, "<metric>": float, ...} per line) or a directory searched
recursively for runs. Runs whose names differ only by a trailing seed suffix
(`crafter-seed0`, `crafter-seed1`, or `crafter/seed0`) form one method, drawn
as the mean over seeds with a shaded spread. `--scores` adds curves and points
from files in the format of scores/README.md (dashed); `--export-scores` writes
the runs in that format. Needs matplotlib for the PNG: pip install .[plot]
"""

import argparse
import dataclasses
import json
import math
import pathlib
import re
import sys

import numpy as np

# Method name = first group: the run name without a trailing seed suffix.
DEFAULT_GROUP = r'^(.*?)[-_./]?seed[-_=]?\d+$'
SPREADS = ('std', 'minmax')
MISSING_MATPLOTLIB = 'scripts/plot.py needs matplotlib: pip install .[plot]'


class PlotError(Exception):
  """Bad input; the message is complete and shown to the user."""


@dataclasses.dataclass
class Run:
  """One training run: a metric against the x axis, sorted by x."""
  name: str         # path relative to the searched directory, e.g. 'crafter-seed0'
  method: str       # the group it is aggregated in
  seed: int
  xs: np.ndarray    # [N]
  ys: np.ndarray    # [N]
  task: str = ''


@dataclasses.dataclass
class Curve:
  """A method's curve on its bin grid: mean and spread over `seeds` runs."""
  method: str
  xs: np.ndarray    # [K] bin centres that hold data of at least one seed
  mean: np.ndarray  # [K]
  low: np.ndarray   # [K]
  high: np.ndarray  # [K]
  seeds: int


# Finding and reading runs.

def find_logdirs(paths):
  """Returns [(name, root_name, directory)] of every run under the paths."""
  found = []
  for path in map(pathlib.Path, paths):
    path = path.expanduser()
    if path.name == 'metrics.jsonl' and path.is_file():
      path = path.parent
    if not path.exists():
      raise PlotError(f'Logdir {path} does not exist: pass the --run.logdir of a run.')
    if (path / 'metrics.jsonl').is_file():
      found.append((path.resolve().name, path.resolve().name, path))
      continue
    files = sorted(path.rglob('metrics.jsonl'))
    if not files:
      raise PlotError(
          f'No metrics.jsonl found under {path}: pass the --run.logdir of a run '
          'or a directory that contains runs.')
    for file in files:
      found.append((file.parent.relative_to(path).as_posix(), path.resolve().name, file.parent))
  return found


def read_metrics(path):
  """Returns the list of JSON objects of a metrics.jsonl, skipping broken lines.

  A run killed while writing leaves a truncated last line; it is skipped.
  """
  rows = []
  for line in pathlib.Path(path).read_text().splitlines():
    try:
      row = json.loads(line)
    except json.JSONDecodeError:
      continue
    if isinstance(row, dict):
      rows.append(row)
  return rows


def metric_series(rows, metric, xaxis='step'):
  """Returns xs, ys [N] float64 of the rows that hold both keys, sorted by x."""
  pairs = [(row[xaxis], row[metric]) for row in rows if metric in row and xaxis in row]
  pairs = [(x, y) for x, y in pairs if _finite(x) and _finite(y)]
  pairs.sort(key=lambda pair: pair[0])
  xs = np.array([x for x, _ in pairs], np.float64)
  ys = np.array([y for _, y in pairs], np.float64)
  return xs, ys


def _finite(value):
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def method_name(name, group=DEFAULT_GROUP):
  """The method a run belongs to: the first group of `group` (or its whole match)."""
  match = re.search(group, name)
  if not match:
    return name
  return match.group(1) if match.re.groups else match.group(0)


def run_config(directory):
  """Returns (task, seed) from the run's config.yaml, ('', None) when absent."""
  path = pathlib.Path(directory) / 'config.yaml'
  text = path.read_text() if path.is_file() else ''
  task = re.search(r'^task:\s*[\'"]?([^\'"\s#]+)', text, re.M)
  seed = re.search(r'^seed:\s*(\d+)', text, re.M)
  return (task.group(1) if task else ''), (int(seed.group(1)) if seed else None)


def load_runs(paths, metric, xaxis='step', group=DEFAULT_GROUP):
  """Reads every run under the paths; runs without the metric are skipped.

  Raises PlotError listing the available metrics when no run has the metric.
  """
  runs, available, skipped = [], set(), []
  for name, root_name, directory in find_logdirs(paths):
    rows = read_metrics(directory / 'metrics.jsonl')
    available.update(key for row in rows for key in row if key != xaxis)
    xs, ys = metric_series(rows, metric, xaxis)
    if not len(xs):
      skipped.append(name)
      continue
    task, seed = run_config(directory)
    method = method_name(name, group) or root_name
    runs.append(Run(name, method, seed, xs, ys, task))
  if not runs:
    names = ', '.join(sorted(available)) or 'none'
    raise PlotError(
        f"Metric '{metric}' (against '{xaxis}') is in no metrics.jsonl under "
        f"{', '.join(map(str, paths))}. Available metrics: {names}. "
        'Choose one with --metric.')
  if skipped:
    print(f"Skipped runs without '{metric}': {', '.join(skipped)}", file=sys.stderr)
  _number_seeds(runs)
  return runs


def _number_seeds(runs):
  """Runs without a seed in their config get the next free number of their method."""
  for method in dict.fromkeys(run.method for run in runs):
    members = [run for run in runs if run.method == method]
    taken = {run.seed for run in members}
    free = (seed for seed in range(len(members) + len(taken)) if seed not in taken)
    for run in members:
      if run.seed is None:
        run.seed = next(free)


# Curves: smoothing, binning, aggregation over seeds.

def smooth(ys, window):
  """Trailing moving average over `window` points; the first ones average fewer.

  out[i] = mean(ys[max(0, i - window + 1): i + 1])   # [N]
  """
  ys = np.asarray(ys, np.float64)
  if window <= 1 or not len(ys):
    return ys
  sums = np.cumsum(ys)
  out = sums / np.arange(1, len(ys) + 1)
  out[window:] = (sums[window:] - sums[:-window]) / window
  return out


def bin_means(xs, ys, edges):
  """Mean of the ys in each bin [edges[k], edges[k+1]), the last bin closed.

  Returns [K] with NaN for empty bins.
  """
  sums, _ = np.histogram(xs, edges, weights=ys)
  counts, _ = np.histogram(xs, edges)
  out = np.full(len(counts), np.nan)
  np.divide(sums, counts, out=out, where=counts > 0)
  return out


def _on_grid(xs, ys, edges, centres):
  """Bin means of one run; its empty bins within [xs[0], xs[-1]] interpolated."""
  values = bin_means(xs, ys, edges)
  gaps = np.isnan(values) & (centres >= xs[0]) & (centres <= xs[-1])
  values[gaps] = np.interp(centres[gaps], xs, ys)
  return values


def aggregate(runs, bins=100, window=5, spread='std'):
  """Returns one Curve per method, in order of first appearance.

  Each run is smoothed over `window` logged points, then averaged within
  `bins` equal bins spanning the method's x range; a bin inside the run's x
  range that holds none of its points gets the run's value interpolated at the
  bin centre (seeds log at different steps: without this, sparse runs would
  alternate bin by bin). Per bin, the mean and the spread (mean -/+ std, or
  min and max) are over the seeds that cover it.
  """
  if bins < 1:
    raise PlotError(f'--bins must be at least 1, got {bins}.')
  if spread not in SPREADS:
    raise PlotError(f"--spread must be one of {', '.join(SPREADS)}, got '{spread}'.")
  curves = []
  for method in dict.fromkeys(run.method for run in runs):
    members = [run for run in runs if run.method == method]
    lo = min(run.xs[0] for run in members)
    hi = max(run.xs[-1] for run in members)
    edges = np.linspace(lo, hi if hi > lo else lo + 1, bins + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    values = np.stack([_on_grid(r.xs, smooth(r.ys, window), edges, centres)
                       for r in members])  # [S, K]
    present = ~np.isnan(values).all(0)
    values = values[:, present]
    mean = np.nanmean(values, 0)
    if spread == 'std':
      std = np.sqrt(np.nanmean((values - mean) ** 2, 0))
      low, high = mean - std, mean + std
    else:
      low, high = np.nanmin(values, 0), np.nanmax(values, 0)
    curves.append(Curve(method, centres[present], mean, low, high, len(members)))
  return curves


# The scores format (scores/README.md).

def load_scores(path):
  """Returns the validated entries (list of dicts) of a scores JSON file."""
  path = pathlib.Path(path)
  try:
    data = json.loads(path.read_text())
  except (OSError, json.JSONDecodeError) as error:
    raise PlotError(f'Cannot read scores file {path}: {error}') from None
  entries = data if isinstance(data, list) else [data]
  for index, entry in enumerate(entries):
    _check_entry(entry, f'{path} entry {index}')
  return entries


def _check_entry(entry, where):
  def fail(what):
    raise PlotError(f'{where}: {what}; see scores/README.md for the format.')
  if not isinstance(entry, dict):
    fail(f'expected a JSON object, got {type(entry).__name__}')
  for key in ('task', 'method'):
    if not isinstance(entry.get(key), str):
      fail(f"key '{key}' must be a string, got {entry.get(key)!r}")
  if not isinstance(entry.get('metric', ''), str):
    fail(f"key 'metric' must be a string, got {entry['metric']!r}")
  if 'runs' not in entry and 'points' not in entry:
    fail("expected a key 'runs' (curves) or 'points' (published numbers), got neither")
  for key in ('runs', 'points'):
    if not isinstance(entry.get(key, []), list):
      fail(f"key '{key}' must be a list, got {type(entry[key]).__name__}")
  for i, run in enumerate(entry.get('runs', [])):
    xs, ys = (run.get('xs'), run.get('ys')) if isinstance(run, dict) else (None, None)
    if not isinstance(xs, list) or not isinstance(ys, list) or len(xs) != len(ys) or not xs:
      fail(f"runs[{i}] needs lists 'xs' and 'ys' of equal, non-zero length, got {str(run)[:80]}")
  for i, point in enumerate(entry.get('points', [])):
    if not isinstance(point, dict) or not all(_finite(point.get(k)) for k in ('step', 'score')):
      fail(f"points[{i}] needs numbers 'step' and 'score', got {point!r}")


def scores_runs(entry, group_suffix=' (ref)'):
  """Runs of a scores entry's 'runs', as a method named after the entry."""
  method = entry['method'] + group_suffix
  runs = []
  for index, run in enumerate(entry.get('runs', [])):
    order = np.argsort(run['xs'], kind='stable')
    xs = np.asarray(run['xs'], np.float64)[order]
    ys = np.asarray(run['ys'], np.float64)[order]
    runs.append(Run(f'{method}/{index}', method, run.get('seed', index), xs, ys, entry['task']))
  return runs


def export_scores(runs, path, metric, task='', source=''):
  """Writes the runs as a list of scores entries, one per (task, method)."""
  entries = {}
  for run in runs:
    run_task = task or run.task or 'unknown'
    entry = entries.setdefault((run_task, run.method), {
        'task': run_task, 'method': run.method, 'metric': metric,
        'source': source or 'reproduced with this repository', 'runs': []})
    xs = [int(x) if x.is_integer() else x for x in run.xs.tolist()]
    entry['runs'].append({'seed': run.seed, 'xs': xs, 'ys': run.ys.tolist()})
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(dumps_scores(list(entries.values())))
  return list(entries.values())


def dumps_scores(entries):
  """JSON text of scores entries with one line per run or point (diff friendly)."""
  blocks = []
  for entry in entries:
    lines = [f'  {json.dumps(key)}: {json.dumps(value)}'
             for key, value in entry.items() if key not in ('runs', 'points')]
    for key in ('runs', 'points'):
      if key in entry:
        items = ',\n'.join(f'    {json.dumps(item)}' for item in entry[key])
        lines.append(f'  {json.dumps(key)}: [\n{items}\n  ]')
    blocks.append(' {\n' + ',\n'.join(lines) + '\n }')
  return '[\n' + ',\n'.join(blocks) + '\n]\n'


# Drawing.

def draw(curves, output, metric='episode/score', xaxis='step', title='',
         references=(), points=(), spread='std'):
  """Writes a PNG: curves solid with shaded spread, references dashed.

  `references` are Curves from scores files; `points` are scores entries with
  published (step, score[, std]) numbers, drawn as markers with error bars.
  """
  try:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.ticker import EngFormatter
  except ImportError:
    raise PlotError(MISSING_MATPLOTLIB) from None
  fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
  colors = plt.rcParams['axes.prop_cycle'].by_key()['color']
  styled = [(curve, '-') for curve in curves] + [(curve, '--') for curve in references]
  for index, (curve, style) in enumerate(styled):
    color = colors[index % len(colors)]
    seeds = f'{curve.seeds} seed' + ('s' if curve.seeds != 1 else '')
    ax.plot(curve.xs, curve.mean, style, color=color, lw=2, label=f'{curve.method} ({seeds})')
    if curve.seeds > 1:
      ax.fill_between(curve.xs, curve.low, curve.high, color=color, alpha=0.2, lw=0)
  for index, entry in enumerate(points, len(styled)):
    _draw_points(ax, entry, colors[index % len(colors)])
  ax.set_xlabel('environment steps' if xaxis == 'step' else xaxis)
  ax.set_ylabel(metric)
  ax.xaxis.set_major_formatter(EngFormatter(sep=''))
  ax.set_title(title or metric)
  ax.grid(alpha=0.3)
  if any(curve.seeds > 1 for curve in list(curves) + list(references)):
    note = 'mean ± 1 std over seeds' if spread == 'std' else 'mean, min to max over seeds'
  else:
    note = None
  ax.legend(title=note, loc='best', fontsize=9, title_fontsize=9)
  fig.tight_layout()
  pathlib.Path(output).parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(output)
  plt.close(fig)


def _draw_points(ax, entry, color):
  steps = [point['step'] for point in entry['points']]
  scores = [point['score'] for point in entry['points']]
  stds = [point.get('std', 0.0) for point in entry['points']]
  ax.errorbar(steps, scores, yerr=stds, fmt='D--', color=color, capsize=4,
              label=entry['method'])
  if len(steps) == 1:  # A single published number: a level to compare against.
    ax.axhline(scores[0], color=color, ls=':', lw=1)


# Command line.

def parse_args(argv):
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('logdirs', nargs='*', help='run logdirs or directories containing runs')
  parser.add_argument('--output', default=None,
                      help='PNG to write (default curve.png; skipped when only --export-scores is given)')
  parser.add_argument('--metric', default='episode/score')
  parser.add_argument('--xaxis', default='step', help='key of metrics.jsonl for the x axis')
  parser.add_argument('--smooth', type=int, default=5,
                      help='moving average over this many logged points (1 = off)')
  parser.add_argument('--bins', type=int, default=100,
                      help='bins of the common x grid that seeds are averaged on')
  parser.add_argument('--spread', choices=SPREADS, default='std',
                      help='shaded area: mean ± std or min to max over seeds')
  parser.add_argument('--group', default=DEFAULT_GROUP,
                      help='regex on run names; its first group names the method')
  parser.add_argument('--scores', nargs='+', default=[], metavar='FILE',
                      help='scores JSON files to add as dashed references')
  parser.add_argument('--title', default='')
  parser.add_argument('--export-scores', default=None, metavar='OUT.json',
                      help='write the runs in the scores format')
  parser.add_argument('--task', default='', help='task name for --export-scores '
                      "(default: the runs' config.yaml)")
  args = parser.parse_args(argv)
  if not args.logdirs and not args.scores:
    parser.error('give at least one logdir or --scores file')
  try:
    re.compile(args.group)
  except re.error as error:
    parser.error(f"--group '{args.group}' is not a valid regular expression: {error}")
  if args.output is None and not args.export_scores:
    args.output = 'curve.png'
  return args


def main(argv=None):
  args = parse_args(sys.argv[1:] if argv is None else argv)
  try:
    runs = load_runs(args.logdirs, args.metric, args.xaxis, args.group) if args.logdirs else []
    if args.export_scores:
      export_scores(runs, args.export_scores, args.metric, args.task)
      print(f'Wrote {args.export_scores}')
    if args.output:
      entries = [e for file in args.scores for e in load_scores(file)]
      other = [e for e in entries if e.get('metric', 'episode/score') != args.metric]
      for entry in other:
        print(f"Skipped scores of '{entry['method']}': metric '{entry['metric']}' "
              f"is not --metric '{args.metric}'", file=sys.stderr)
      entries = [e for e in entries if e not in other]
      refs = [run for entry in entries for run in scores_runs(entry)]
      curves = aggregate(runs, args.bins, args.smooth, args.spread)
      references = aggregate(refs, args.bins, args.smooth, args.spread) if refs else []
      tasks = [run.task for run in runs] + [entry['task'] for entry in entries]
      title = args.title or ', '.join(dict.fromkeys(task for task in tasks if task))
      draw(curves, args.output, args.metric, args.xaxis, title, references,
           [entry for entry in entries if entry.get('points')], args.spread)
      print(f'Wrote {args.output}')
  except PlotError as error:
    print(f'Error: {error}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main())
