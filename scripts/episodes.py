"""Per-episode returns of a run, read back from its replay directory.

  python scripts/episodes.py ~/logdir/cartpole-seed0                 # prints a summary
  python scripts/episodes.py ~/logdir/cartpole-seed0 --output episodes.json
  python scripts/episodes.py ~/logdir/cartpole-seed0 --cartpole      # also how they ended

metrics.jsonl holds the mean score over the episodes that ended between two
log writes; this recovers every episode: it links the run's replay chunks
(LOGDIR/replay) into each worker's stream and sums the rewards from one
is_first to the next is_last. The JSON is {"step": [...], "score": [...],
"length": [...]}: for each finished episode in order of its end, the env
steps of all workers up to and including its last step (a worker's steps
are counted by their stamps, the order in which the replay received them),
its return and its length in steps. Episodes cut off by the end of the run
(no is_last yet) are left out. The summary prints the mean of the last 10
episodes at the end and the best such mean over the run. It only reads, so it
may look at a live run (a chunk rewritten while it reads is skipped with a
warning).

With --cartpole (CartPole-v1 runs, observation key `vector`) it also tells how
each episode ended, from the observation of its last step: 'cart' (cart
position beyond ±2.4), 'pole' (pole angle beyond ±12°), 'limit' (cut off by
the time limit, not terminal); the JSON gains an "end" list and the summary
counts the ends of each half of the run.
"""

import argparse
import json
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
  sys.path.insert(0, str(ROOT))   # `python scripts/episodes.py` imports the tree.


CARTPOLE_X_LIMIT = 2.4                    # Gymnasium's CartPole-v1 termination bounds.
CARTPOLE_ANGLE_LIMIT = 12 * 2 * np.pi / 360


def read_streams(replay_dir, keys=()):
  """{'reward', 'is_first', 'is_last', 'stamp', *keys} arrays of each worker's stream."""
  from embodied.replay import chunks as chunklib
  streams = []
  for chain in chunklib.link(chunklib.scan(str(replay_dir), remove_tmp=False)):
    parts = [chunk for chunk in map(chunklib.read_chunk, chain) if chunk is not None]
    if not parts:
      continue
    arrays = {key: np.concatenate([c.data[key][:c.length] for c in parts])
              for key in ('reward', 'is_first', 'is_last', *keys)}
    arrays['stamp'] = np.concatenate([c.stamp[:c.length] for c in parts])
    streams.append(arrays)
  return streams


def finished(streams):
  """(step, stream, start, end) of each finished episode, ordered by its end: the
  env steps of all workers up to its last step, and its first and last index."""
  stamps = np.sort(np.concatenate([s['stamp'] for s in streams])) if streams else []
  found = []
  for index, stream in enumerate(streams):
    start = None
    for t in range(len(stream['reward'])):
      if stream['is_first'][t]:
        start = t
      if stream['is_last'][t] and start is not None:
        found.append((int(np.searchsorted(stamps, stream['stamp'][t], 'right')), index, start, t))
        start = None
  return [(step, streams[index], start, end) for step, index, start, end in sorted(found)]


def episodes(streams):
  """(step, score, length) lists of the finished episodes, ordered by their end."""
  columns = [(step, float(stream['reward'][start:end + 1].sum()), end - start)  # First step's is 0.
             for step, stream, start, end in finished(streams)]
  return [list(column) for column in zip(*columns)] if columns else [[], [], []]


def end_kind(stream, t):
  """How the CartPole episode whose last index is t ended: 'cart', 'pole', 'limit' or 'other'."""
  x, _, angle, _ = stream['vector'][t]
  return ('limit' if not stream['is_terminal'][t] else
          'cart' if abs(x) > CARTPOLE_X_LIMIT else
          'pole' if abs(angle) > CARTPOLE_ANGLE_LIMIT else 'other')


def cartpole_ends(streams):
  """end_kind() of each finished episode, as in episodes()."""
  return [end_kind(stream, t) for _, stream, _, t in finished(streams)]


def count_ends(step, end):
  """'first half: ..., second half: ...' counts of the ends, split at half the last step."""
  half = step[-1] / 2 if step else 0
  parts = []
  for name, chosen in (('first half', [e for s, e in zip(step, end) if s <= half]),
                       ('second half', [e for s, e in zip(step, end) if s > half])):
    counts = ', '.join(f'{kind} {chosen.count(kind)}' for kind in sorted(set(chosen)))
    parts.append(f'{name} ({len(chosen)} episodes): {counts or "none"}')
  return 'Ends, ' + '; '.join(parts) + '.'


def summary(step, score, window=10):
  if len(score) < window:
    return f'{len(score)} episodes (fewer than {window}).'
  means = np.convolve(score, np.ones(window) / window, 'valid')
  best = int(np.argmax(means))
  return (f'{len(score)} episodes, the last at step {step[-1]}: mean of the last {window} '
          f'{means[-1]:.1f}; best mean of {window} in a row {means[best]:.1f} '
          f'(ending at step {step[best + window - 1]}).')


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('logdir', type=pathlib.Path)
  parser.add_argument('--output', type=pathlib.Path, help='write the episodes as JSON here')
  parser.add_argument('--cartpole', action='store_true',
                      help='CartPole-v1 runs: also record how each episode ended')
  args = parser.parse_args(argv)
  replay_dir = args.logdir / 'replay'
  if not replay_dir.is_dir():
    parser.error(f'{replay_dir} does not exist: pass the logdir of a run (it holds replay/).')
  try:
    streams = read_streams(replay_dir, ('vector', 'is_terminal') if args.cartpole else ())
  except KeyError as e:
    parser.error(f'--cartpole needs the replay key {e}, which this run lacks: is it a '
                 f'CartPole-v1 run (gym_CartPole-v1)?')
  step, score, length = episodes(streams)
  result = {'step': step, 'score': score, 'length': length}
  print(summary(step, score))
  if args.cartpole:
    result['end'] = cartpole_ends(streams)
    print(count_ends(step, result['end']))
  if args.output:
    args.output.write_text(json.dumps(result) + '\n')
    print(f'Wrote {args.output}')


if __name__ == '__main__':
  main()
