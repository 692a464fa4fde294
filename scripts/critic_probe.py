"""Where a trained run's critic puts its probability mass, on replayed states.

  python scripts/critic_probe.py ~/logdir/cartpole-cpu-seed1-hugepages

Loads the run's newest checkpoint and a batch of its replay, computes the
posterior states and evaluates the critic and the slow critic on them. For
each it prints the decoded value (symexp of the mean over the symlog bins),
the value of the mass within 0.5 symlog units of the most likely bin, that
mass, and the mass far from any plausible return (below symlog 0 and above
symlog 8). A decoded value close to the value around the mode means the
critic predicts that value; a large far mass means the zero-initialised
output's uniform start still pulls the decoded value towards 0.
"""

import argparse
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
  sys.path.insert(0, str(ROOT))   # `python scripts/critic_probe.py` imports the tree.


def probe(logdir, batch=16, seed=0):
  """{critic name: {statistic: value}} on `batch` replayed sequences of the run."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from dreamerv3 import jaxutils, modules
  from dreamerv3.agent import preprocess
  from dreamerv3.inference import load_policy
  from embodied.replay import Uniform
  agent = load_policy(logdir, mode='train').agent
  config, dreamer = agent.config, agent.dreamer
  replay = Uniform(config.batch_length, 10 ** 9, pathlib.Path(logdir) / 'replay', seed=seed)
  replay.load()
  data = next(replay.dataset(batch))
  data = preprocess({k: jnp.asarray(v) for k, v in data.items() if k in agent.obs_space
                     or k == 'action'}, jnp.float32)
  scope = modules.Scope(agent.params)
  carry = dreamer.wm.initial_carry(scope, batch)
  post, _ = dreamer.wm.observe(scope, data, carry, jax.random.PRNGKey(seed))
  feat = dreamer.wm.rssm.get_feat(post)                                     # [B, T, F]
  results = {}
  for name in ('critic', 'slow_critic'):
    dist = dreamer.task.ac.critic(scope.child(name), feat)
    probs = np.asarray(jax.nn.softmax(dist.logits, -1)).reshape(-1, dist.logits.shape[-1])
    bins = np.asarray(dist.bins)
    mode = bins[probs.argmax(-1)][:, None]
    near = np.abs(bins[None] - mode) <= 0.5
    mass_near = (probs * near).sum(-1)
    around_mode = jaxutils.symexp((probs * near * bins).sum(-1) / mass_near)
    results[name] = {
        'decoded value': float(dist.mean().mean()),
        'value around the mode': float(around_mode.mean()),
        'mass around the mode': float(mass_near.mean()),
        'mass below symlog 0': float((probs * (bins < 0)).sum(-1).mean()),
        'mass above symlog 8': float((probs * (bins > 8)).sum(-1).mean())}
  return results


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('logdir')
  parser.add_argument('--batch', type=int, default=16, help='replayed sequences')
  args = parser.parse_args(argv)
  for name, stats in probe(pathlib.Path(args.logdir).expanduser(), args.batch).items():
    print(f'{name}: ' + ', '.join(f'{key} {value:.3f}' for key, value in stats.items()))


if __name__ == '__main__':
  main()
