"""Each convolution layer of the image encoder and decoder, XLA's against ours.

For the layer shapes of a 64x64x3 encoder and decoder of channel depth d
(`small`: 32), times forward plus backward of a sum of squares over a batch of
images, once with jax.lax's convolution and once with the matmul form the agent
uses (nets.conv_matmul, nets.conv_transpose_matmul), and prints the medians
(docs/benchmarks.md, section "Convolutions").

  python scripts/bench_conv.py                 # depth 32, 1,024 images (16 x 64)
  python scripts/bench_conv.py --depth 16 --batch 256
"""

import argparse
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
  sys.path.insert(0, str(ROOT))   # `python scripts/bench_conv.py` imports the tree.

import jax
import jax.numpy as jnp
import numpy as np

from dreamerv3 import nets


def lax_conv(x, kernel, stride):
  """XLA's convolution that nets.conv_matmul computes; kernel [k, k, C_in, C_out]."""
  return jax.lax.conv_general_dilated(x, kernel, (stride, stride), 'SAME',
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def lax_conv_transpose(x, kernel, stride):
  """XLA's transposed convolution that nets.conv_transpose_matmul computes; kernel
  [k, k, C_out, C_in]."""
  return jax.lax.conv_transpose(x, kernel, (stride, stride), 'SAME',
                                dimension_numbers=('NHWC', 'HWOI', 'NHWC'))


def layers(depth, resolution=64, minres=4, channels=3):
  """(kind, input size, C_in, C_out) of every stride-2 kernel-4 layer, encoder first."""
  stages = int(np.log2(resolution // minres))
  widths = [channels] + [depth * 2 ** i for i in range(stages)]
  encoder = [('conv', resolution // 2 ** i, widths[i], widths[i + 1]) for i in range(stages)]
  decoder = [('transpose', minres * 2 ** i, widths[stages - i], widths[stages - i - 1])
             for i in range(stages)]
  return encoder + decoder


def time_ms(conv, x, kernel, repeats):
  step = jax.jit(jax.value_and_grad(lambda x, k: jnp.sum(jnp.square(conv(x, k, 2))), (0, 1)))
  jax.block_until_ready(step(x, kernel))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(step(x, kernel))
    times.append(time.perf_counter() - start)
  return 1000 * float(np.median(times))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--depth', type=int, default=32, help='cnn_depth (small: 32)')
  parser.add_argument('--batch', type=int, default=1024, help='images per call (16 x 64)')
  parser.add_argument('--repeats', type=int, default=7)
  args = parser.parse_args(argv)
  rng = np.random.default_rng(0)
  print(f'{"layer":>10} {"input":>12} {"C_out":>6} {"lax ms":>9} {"matmul ms":>10} {"speed-up":>9}')
  for kind, size, c_in, c_out in layers(args.depth):
    x = jnp.asarray(rng.normal(size=(args.batch, size, size, c_in)), jnp.float32)
    shape = (4, 4, c_in, c_out) if kind == 'conv' else (4, 4, c_out, c_in)
    kernel = jnp.asarray(0.05 * rng.normal(size=shape), jnp.float32)
    forms = ((lax_conv, nets.conv_matmul) if kind == 'conv'
             else (lax_conv_transpose, nets.conv_transpose_matmul))
    lax_ms, ours_ms = (time_ms(form, x, kernel, args.repeats) for form in forms)
    print(f'{kind:>10} {f"{size}x{size}x{c_in}":>12} {c_out:>6} {lax_ms:9.0f} {ours_ms:10.0f} '
          f'{lax_ms / ours_ms:8.1f}x', flush=True)


if __name__ == '__main__':
  main()
