"""How many updates a freshly initialised critic needs to reach a value.

  python scripts/critic_speed.py                       # widths 128, 256, 512
  python scripts/critic_speed.py --widths 128 1024 --target 250 --updates 8000

The critic of algorithm.md (§1.2, §3.7, §4.2, §5.1): an MLP head over 255
twohot bins in symlog space, its output layer initialised to zero (a uniform
distribution over the bins, decoded value 0), trained with Adam at lr 3e-5
(eps 1e-5, clip 100). Here it regresses a constant return on random
features shaped like the RSSM's (deter 128 + stoch 256), the same for every
width, so nothing but the network's width limits how fast its value rises:
with Adam each weight moves by about lr per update whatever its gradient, and
the decoded mean moves only as the mass of the 253 far bins drains away.
This isolates why the `cpu` block's 128-unit critic lags its λ-returns in
the CartPole runs (docs/results/README.md).
"""

import argparse
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
  sys.path.insert(0, str(ROOT))   # `python scripts/critic_speed.py` imports the tree.


def run(width, target, updates, report_every, batch=1024, feat=384, seed=0):
  """[(update, mean decoded value, mass off the target's two bins)] for one width."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from dreamerv3 import jaxutils, modules, nets
  critic = nets.MLPHead((), dist='symlog_disc', layers=2, units=width, outscale=0.0)
  key = jax.random.PRNGKey(seed)
  features = lambda k: jax.random.normal(k, (batch, feat))
  params = modules.init(critic, key, features(key))
  optimizer = jaxutils.make_optimizer(3e-5, 1e-5, 100.0)
  opt_state = optimizer.init(params)
  returns = jnp.full((batch,), target, jnp.float32)

  def loss(params, x):
    return -modules.apply(critic, params, x).log_prob(returns).mean()

  @jax.jit
  def update(params, opt_state, key):
    grads = jax.grad(loss)(params, features(key))
    changes, opt_state = optimizer.update(grads, opt_state, params)
    return jax.tree.map(lambda p, c: p + c, params, changes), opt_state

  @jax.jit
  def measure(params, key):
    dist = modules.apply(critic, params, features(key))
    probs = jax.nn.softmax(dist.logits, -1)
    on_target = jaxutils.twohot_encode(returns, dist.bins) > 0
    return dist.mean().mean(), 1 - (probs * on_target).sum(-1).mean()

  rows = []
  for step in range(1, updates + 1):
    params, opt_state = update(params, opt_state, jax.random.fold_in(key, step))
    if step % report_every == 0:
      value, off = measure(params, jax.random.fold_in(key, updates + step))
      rows.append((step, float(value), float(off)))
  return rows


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--widths', type=int, nargs='+', default=[128, 256, 512])
  parser.add_argument('--target', type=float, default=12.0, help='the constant return')
  parser.add_argument('--updates', type=int, default=4000)
  parser.add_argument('--report-every', type=int, default=500)
  args = parser.parse_args(argv)
  print(f'Critic (2 layers) regressing a constant return of {args.target:g}: '
        'decoded value (mass off the target bins) after N updates')
  for width in args.widths:
    rows = run(width, args.target, args.updates, args.report_every)
    print(f'{width:5d} units: ' + ', '.join(f'{n}: {v:.2f} ({off:.2f})' for n, v, off in rows))


if __name__ == '__main__':
  main()
