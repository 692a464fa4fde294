"""How well a CartPole-v1 run's world model sees its episodes end.

  python scripts/termination_probe.py ~/logdir/cartpole-cpu-seed2

Loads the run's newest checkpoint and replays the last `--length` steps of
every terminated episode in its replay (episodes.py finds them and tells how
they ended: cart out of bounds or pole down), computes the posterior states
and prints, per kind of end and half of the run: the continue head's mean
P(continue) over the last six steps (the last one is the terminal step, whose
target is 0), the share of terminal steps whose mode is 'end' (as
imagination uses it, algorithm.md §3.3), the mean absolute observation at the
terminal step and the decoder's mean absolute error there and over the
steps before the last six. A world model that cannot tell a terminal step
from the others gives the actor no reason in imagination to avoid that end.
"""

import argparse
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / 'scripts'):
  if str(path) not in sys.path:
    sys.path.insert(0, str(path))   # `python scripts/termination_probe.py` imports the tree.

import episodes  # noqa: E402  (scripts/episodes.py)

KEYS = ('vector', 'action', 'reward', 'is_first', 'is_terminal')
SHOWN = 6   # Steps before and including the terminal one whose P(continue) is shown.


def terminal_windows(streams, length):
  """{'<end> (first|second) half': [(stream, last index)]} of the terminated
  episodes at least `length` steps long, split at half the run's steps."""
  found = episodes.finished(streams)
  half = found[-1][0] / 2 if found else 0
  groups = {}
  for step, stream, start, end in found:
    kind = episodes.end_kind(stream, end)
    if kind == 'limit' or end - start + 1 < length:
      continue
    name = f"{kind} {'first' if step <= half else 'second'} half"
    groups.setdefault(name, []).append((stream, end))
  return groups


def probe(logdir, length=32, most=200, seed=0):
  """{group: {statistic: value}} for the groups of terminal_windows()."""
  import jax
  import jax.numpy as jnp
  from dreamerv3 import modules
  from dreamerv3.agent import preprocess
  from dreamerv3.inference import load_policy
  agent = load_policy(logdir, mode='train').agent
  wm = agent.dreamer.wm
  scope = modules.Scope(agent.params)
  streams = episodes.read_streams(pathlib.Path(logdir) / 'replay', KEYS)
  results = {}
  for name, windows in sorted(terminal_windows(streams, length).items()):
    windows = windows[-most:]
    data = {key: np.stack([s[key][end - length + 1:end + 1] for s, end in windows])
            for key in KEYS}                                               # [N, length, ...]
    data['is_first'][:, 0] = True   # As replay starts every sampled sequence (§2.6).
    inputs = preprocess({k: jnp.asarray(v) for k, v in data.items()}, jnp.float32)
    carry = wm.initial_carry(scope, len(windows))
    post, _ = wm.observe(scope, inputs, carry, jax.random.PRNGKey(seed))
    feat = wm.rssm.get_feat(post)                                         # [N, length, F]
    cont = np.asarray(wm.heads['cont'](scope.child('cont'), feat).mean())   # [N, length]
    recon = np.asarray(wm.heads['decoder'](scope.child('decoder'), feat)['vector'].mode())
    last = data['vector'][:, -1]
    results[name] = {
        'episodes': len(windows),
        'P(continue), last steps': cont[:, -SHOWN:].mean(0),
        'terminal predicted': float((cont[:, -1] < 0.5).mean()),
        '|observation| at the end': np.abs(last).mean(0),
        'decoder error at the end': np.abs(recon[:, -1] - last).mean(0),
        'decoder error before': np.abs(recon[:, :-SHOWN] - data['vector'][:, :-SHOWN]).mean((0, 1))}
  return results


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('logdir', type=pathlib.Path)
  parser.add_argument('--length', type=int, default=32, help='steps replayed per episode')
  parser.add_argument('--most', type=int, default=200, help='latest episodes per group')
  args = parser.parse_args(argv)
  results = probe(args.logdir.expanduser(), args.length, args.most)
  if not results:
    print(f'No terminated episode of {args.length} steps or more in {args.logdir}/replay.')
  np.set_printoptions(precision=3, suppress=True)
  print('Observation order: cart position, cart velocity, pole angle, pole angular velocity.')
  for name, stats in results.items():
    shown = {key: f'{value:.2f}' if isinstance(value, float) else value
             for key, value in stats.items()}
    print(f'{name}: ' + '; '.join(f'{key} {value}' for key, value in shown.items()))


if __name__ == '__main__':
  main()
