"""The RSSM's observe loop alone: forward, and forward plus backward.

Times RSSM.observe over a batch of 16 sequences of 64 steps (the train step's
shapes) under a loss of its KL terms and features, with and without the
gradient of the RSSM's parameters. The difference is what the backward loop
spends adding every step's share to the parameters' gradients: products over
only 16 rows each, plus a pass over the whole gradient per step
(docs/benchmarks.md, "Tried and not kept").

  python scripts/bench_observe.py                       # small: deter 512, embedding 1024
  python scripts/bench_observe.py --deter 128 --embed 128 --classes 16   # the cpu block
"""

import argparse
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
  sys.path.insert(0, str(ROOT))   # `python scripts/bench_observe.py` imports the tree.

import jax
import jax.numpy as jnp
import numpy as np

from dreamerv3 import modules
from dreamerv3 import nets


def observe_loss(rssm, param_grads):
  """fn(scope, embed, actions, is_first, key) -> scalar, through rssm.observe."""
  def loss(scope, embed, actions, is_first, key):
    if not param_grads and not scope.creating:
      scope = scope.stop_gradient()
    post, prior = rssm.observe(scope, embed, actions, is_first, key)
    dyn, rep, _ = rssm.kl_loss(post, prior)
    return (dyn + rep).mean() + jnp.square(rssm.get_feat(post)).mean()
  return loss


def time_ms(fn, repeats):
  """(median, min) milliseconds of fn() after two warm-up calls."""
  for _ in range(2):
    jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return 1000 * float(np.median(times)), 1000 * float(np.min(times))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--deter', type=int, default=512, help='rssm.deter = rssm.units')
  parser.add_argument('--embed', type=int, default=1024, help='embedding size')
  parser.add_argument('--classes', type=int, default=32, help='rssm.stoch = rssm.classes')
  parser.add_argument('--batch', type=int, default=16)
  parser.add_argument('--length', type=int, default=64)
  parser.add_argument('--actions', type=int, default=2)
  parser.add_argument('--repeats', type=int, default=20)
  args = parser.parse_args(argv)
  rssm = nets.RSSM(deter=args.deter, units=args.deter, stoch=args.classes, classes=args.classes)
  key = jax.random.PRNGKey(0)
  embed = jax.random.normal(key, (args.batch, args.length, args.embed))
  actions = jax.nn.one_hot(
      jax.random.randint(key, (args.batch, args.length), 0, args.actions), args.actions)
  is_first = jnp.zeros((args.batch, args.length), bool).at[:, 0].set(True)
  inputs = (embed, actions, is_first, key)
  params = modules.init(observe_loss(rssm, True), key, *inputs)
  print(f'observe, batch {args.batch} x {args.length}, deter {args.deter}, embedding '
        f'{args.embed}, {args.classes} x {args.classes} latents')
  print(f'{"":>42} {"median ms":>10} {"min ms":>8}')
  forward = jax.jit(lambda p: modules.apply(observe_loss(rssm, True), p, *inputs))
  print(f'{"forward":>42} {"%10.1f %8.1f" % time_ms(lambda: forward(params), args.repeats)}')
  for param_grads in (True, False):
    loss = observe_loss(rssm, param_grads)
    grad = jax.jit(jax.grad(lambda p, e: modules.apply(loss, p, e, *inputs[1:]), (0, 1)))
    name = 'forward + backward' + ('' if param_grads else ', no parameter gradients')
    times = time_ms(lambda: grad(params, embed), args.repeats)
    print(f'{name:>42} {"%10.1f %8.1f" % times}', flush=True)


if __name__ == '__main__':
  main()
