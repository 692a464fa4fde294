"""Networks of DreamerV3 (algorithm.md §2, §4) on the module system of modules.py.

Each module holds hyperparameters; `__call__(scope, ...)` reads or creates its
parameters through `scope`. Parameters are float32 and cast to the compute
`dtype` at use; LayerNorm statistics and distribution parameters are float32.
"""

import itertools
import math
import re

import jax
import jax.numpy as jnp
import numpy as np

from dreamerv3 import jaxutils
from dreamerv3 import modules

f32 = jnp.float32
sg = jax.lax.stop_gradient


# Initialisers (§4.2). Each returns init_fn(key, shape, dtype) for Scope.param.
# Values are drawn flat and reshaped: XLA compiles random draws of rank-4 shapes
# about ten times slower on the CPU, and the distribution is the same.

def _fan(shape, fan, in_axis, out_axis):
  """Fan of a dense (in, out) or conv (k, k, ..., in, out) kernel; receptive field included."""
  receptive = math.prod(shape[:-2])
  fans = {'in': shape[in_axis] * receptive, 'out': shape[out_axis] * receptive}
  fans['avg'] = (fans['in'] + fans['out']) / 2
  if fan not in fans:
    raise ValueError(f"Unknown fan '{fan}': expected one of 'in', 'out', 'avg'.")
  return fans[fan]


def init_normal(fan='avg', scale=1.0, in_axis=-2, out_axis=-1):
  """Truncated normal on ±2 std with std sqrt(scale / fan)."""
  def init_fn(key, shape, dtype=f32):
    if scale == 0:
      return jnp.zeros(shape, dtype)
    std = math.sqrt(scale / _fan(shape, fan, in_axis, out_axis)) / 0.87962566103423978
    return std * jax.random.truncated_normal(key, -2, 2, (math.prod(shape),), dtype).reshape(shape)
  return init_fn


def init_uniform(fan='avg', scale=1.0, in_axis=-2, out_axis=-1):
  """U(-L, L) with L = sqrt(3 scale / fan)."""
  def init_fn(key, shape, dtype=f32):
    if scale == 0:
      return jnp.zeros(shape, dtype)
    limit = math.sqrt(3 * scale / _fan(shape, fan, in_axis, out_axis))
    return jax.random.uniform(key, (math.prod(shape),), dtype, -limit, limit).reshape(shape)
  return init_fn


def make_init(winit, fan='avg', scale=1.0, in_axis=-2, out_axis=-1):
  inits = {'normal': init_normal, 'uniform': init_uniform}
  if winit not in inits:
    raise ValueError(f"Unknown winit '{winit}': expected 'normal' or 'uniform'.")
  return inits[winit](fan, scale, in_axis, out_axis)


def zeros_init(key, shape, dtype=f32):
  del key
  return jnp.zeros(shape, dtype)


def ones_init(key, shape, dtype=f32):
  del key
  return jnp.ones(shape, dtype)


def get_act(name):
  if name == 'none':
    return lambda x: x
  if name in ('silu', 'relu', 'elu', 'gelu', 'sigmoid', 'tanh'):
    return getattr(jax.nn, name)
  raise ValueError(
      f"Unknown activation '{name}': expected none, silu, relu, elu, gelu, sigmoid or tanh.")


# Layers (§4.1).

class Linear:
  """x W + b over the last axis; kernel [in, units]."""

  def __init__(self, units, bias=True, winit='normal', fan='avg', outscale=1.0, dtype=f32):
    self.units, self.bias, self.dtype = units, bias, dtype
    self.init = make_init(winit, fan, outscale)

  def __call__(self, scope, x):
    kernel = scope.param('kernel', self.init, (x.shape[-1], self.units))
    x = x.astype(self.dtype) @ kernel.astype(self.dtype)
    if self.bias:
      x = x + scope.param('bias', zeros_init, (self.units,)).astype(self.dtype)
    return x


class LayerNorm:
  """Normalises the last axis with float32 statistics; returns the input dtype."""

  def __init__(self, eps=1e-3):
    self.eps = eps

  def __call__(self, scope, x):
    y = x.astype(f32)
    mean = y.mean(-1, keepdims=True)
    var = jnp.square(y - mean).mean(-1, keepdims=True)
    y = (y - mean) * jax.lax.rsqrt(var + self.eps)
    scale = scope.param('scale', ones_init, (x.shape[-1],))
    offset = scope.param('offset', zeros_init, (x.shape[-1],))
    return (y * scale + offset).astype(x.dtype)


def _norm_act(scope, x, norm, act):
  """norm (child 'norm') then activation, as after every hidden layer."""
  if norm == 'layer':
    x = LayerNorm()(scope.child('norm'), x)
  elif norm != 'none':
    raise ValueError(f"Unknown norm '{norm}': expected 'layer' or 'none'.")
  return get_act(act)(x)


class Dense:
  """act(LN(x W)); the kernel has a bias only when norm = 'none' (§4.1)."""

  def __init__(self, units, norm='layer', act='silu', winit='normal', fan='avg', dtype=f32):
    self.linear = Linear(units, norm == 'none', winit, fan, 1.0, dtype)
    self.norm, self.act = norm, act

  def __call__(self, scope, x):
    return _norm_act(scope, self.linear(scope, x), self.norm, self.act)


class MLP:
  """`layers` Dense blocks (children layer0, layer1, ...) over the last axis."""

  def __init__(self, layers, units, norm='layer', act='silu', winit='normal', fan='avg',
               symlog_inputs=False, dtype=f32):
    self.layers, self.symlog_inputs, self.dtype = layers, symlog_inputs, dtype
    self.dense = Dense(units, norm, act, winit, fan, dtype)

  def __call__(self, scope, x):
    if self.symlog_inputs:
      x = jaxutils.symlog(x.astype(f32))
    x = x.astype(self.dtype)
    for i in range(self.layers):
      x = self.dense(scope.child(f'layer{i}'), x)
    return x


# Convolutions as matrix products. XLA's CPU convolutions, their kernel gradients
# above all, run far below the matmul rate (docs/benchmarks.md); gathering patches
# and multiplying once computes the same sums several times faster.

def _patches(x, window, pad):
  """Stride-1 patches [N, H', W', window^2 C], order (row, column, C), of x [N, H, W, C]
  padded by pad = ((top, bottom), (left, right))."""
  x = jnp.pad(x, ((0, 0), pad[0], pad[1], (0, 0)))
  h, w = x.shape[1] - window + 1, x.shape[2] - window + 1
  return jnp.concatenate([x[:, i:i + h, j:j + w] for i in range(window) for j in range(window)], -1)


def space_to_depth(x, block):
  """[N, H, W, C] -> [N, H/b, W/b, b b C], channel order (row in block, column, C)."""
  n, h, w, c = x.shape
  x = x.reshape(n, h // block, block, w // block, block, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(n, h // block, w // block, block * block * c)


def depth_to_space(x, block):
  """[N, H, W, b b C] -> [N, b H, b W, C], the inverse of space_to_depth."""
  n, h, w, c = x.shape
  x = x.reshape(n, h, w, block, block, c // block ** 2).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(n, h * block, w * block, c // block ** 2)


def conv_matmul(x, kernel, stride):
  """jax.lax.conv_general_dilated(x, kernel, (s, s), 'SAME', ('NHWC', 'HWIO', 'NHWC'))
  for kernels [k, k, C_in, C_out] with k divisible by s.

  After the SAME padding, space-to-depth by s turns the strided k x k convolution
  into a stride-1 one over (k/s) x (k/s) blocks of s s C_in channels: a single
  matmul of the patches [N, H/s, W/s, k k C_in] with the reordered kernel.
  """
  k, _, c, o = kernel.shape
  blocks = k // stride
  pads = []
  for size in x.shape[1:3]:
    total = max((-(-size // stride) - 1) * stride + k - size, 0)   # Padded size divides by s.
    pads.append((total // 2, total - total // 2))
  x = space_to_depth(jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0))), stride)
  patches = _patches(x, blocks, ((0, 0), (0, 0)))   # Channel order (bi, bj, wy, wx, C).
  kernel = kernel.reshape(blocks, stride, blocks, stride, c, o).transpose(0, 2, 1, 3, 4, 5)
  return patches @ kernel.reshape(k * k * c, o)


def _transpose_padding(kernel, stride):
  """jax.lax.conv_transpose's 'SAME' padding (before, after) of the dilated input."""
  total = kernel + stride - 2
  before = kernel - 1 if stride > kernel - 1 else math.ceil(total / 2)
  return before, total - before


def subpixel_taps(kernel, stride):
  """Index table of the sub-pixel form of a 'SAME' transposed convolution.

  conv_transpose (no kernel flip) computes, along each axis, for the output
  o = stride m + a (phase a):  out[o] = sum_j x[m + d] w[j] over the taps j
  with (a + j - before) % stride == 0 and offset d = (a + j - before) // stride.
  The offsets of one phase are consecutive, so every phase is a stride-1
  convolution of the undilated input over a window starting at its own first
  offset. Returns (table [window, stride]: the tap index at window position t of
  phase a, `kernel` marking 'no tap'; starts [stride]: each phase's first offset).
  """
  before, _ = _transpose_padding(kernel, stride)
  taps = [[j for j in range(kernel) if (a + j - before) % stride == 0] for a in range(stride)]
  window = max(len(t) for t in taps)
  starts = [(a + t[0] - before) // stride if t else 0 for a, t in enumerate(taps)]
  table = [[kernel] * stride for _ in range(window)]
  for a, phase in enumerate(taps):
    for t, j in enumerate(phase):
      table[t][a] = j
  return table, starts


def conv_transpose_matmul(x, kernel, stride):
  """jax.lax.conv_transpose(x, kernel, (s, s), 'SAME', ('NHWC', 'HWOI', 'NHWC')).

  Sub-pixel form: each output phase is a stride-1 convolution of the undilated
  input over its own window (subpixel_taps). One matmul of window x window
  patches [N, H', W', window^2 C_in] with a kernel [window^2 C_in, s s C_out]
  computes all phases at every patch position; each phase then reads its
  outputs at its own shift, and the phases interleave into the upsampled image.
  For k 4, s 2: 2 x 2 patches at (H + 1)(W + 1) positions, (1 + 1/H)^2 times the
  multiply-adds of the taps. x [N, H, W, C_in], kernel [k, k, C_out, C_in]
  -> [N, s H, s W, C_out].
  """
  k, _, out_ch, in_ch = kernel.shape
  h, w = x.shape[1:3]
  table, starts = subpixel_taps(k, stride)
  index, window, low, high = np.asarray(table), len(table), min(starts), max(starts)
  padded = jnp.pad(kernel, ((0, 1), (0, 1), (0, 0), (0, 0)))   # Tap index k reads zeros.
  sub = padded[index[:, None, :, None], index[None, :, None, :]]  # [win, win, s, s, O, I]
  sub = sub.transpose(0, 1, 5, 2, 3, 4).reshape(window * window * in_ch, -1)
  pad = (-low, high + window - 1)   # Patch position p starts at input row p + low.
  y = _patches(x, window, (pad, pad)) @ sub   # [N, H + high - low, W + high - low, s s O]
  y = y.reshape(y.shape[:3] + (stride, stride, out_ch))
  shift = [start - low for start in starts]
  phases = [y[:, shift[a]:shift[a] + h, shift[b]:shift[b] + w, a, b]
            for a in range(stride) for b in range(stride)]   # s s times [N, H, W, O]
  return depth_to_space(jnp.stack(phases, 3).reshape(x.shape[:3] + (-1,)), stride)


class Conv2D:
  """SAME-padded 2D convolution over [N, H, W, C].

  transpose=False: kernel [k, k, C_in, C_out] (HWIO), jax.lax.conv_general_dilated,
  computed by conv_matmul when the stride divides the kernel size.
  transpose=True: kernel [k, k, C_out, C_in] (HWOI), jax.lax.conv_transpose without
  kernel flip, which upsamples by `stride` (§2.4 point 5), computed by
  conv_transpose_matmul. Fans count the receptive field times the input or output
  channels in both layouts.
  """

  def __init__(self, depth, kernel, stride=2, transpose=False, bias=True, winit='normal',
               fan='avg', outscale=1.0, dtype=f32):
    self.depth, self.kernel, self.stride = depth, kernel, stride
    self.transpose, self.bias, self.dtype = transpose, bias, dtype
    axes = (-1, -2) if transpose else (-2, -1)
    self.init = make_init(winit, fan, outscale, *axes)

  def __call__(self, scope, x):
    k, channels = self.kernel, x.shape[-1]
    shape = (k, k, self.depth, channels) if self.transpose else (k, k, channels, self.depth)
    kernel = scope.param('kernel', self.init, shape).astype(self.dtype)
    x, strides = x.astype(self.dtype), (self.stride, self.stride)
    if self.transpose:
      x = conv_transpose_matmul(x, kernel, self.stride)
    elif k % self.stride == 0:
      x = conv_matmul(x, kernel, self.stride)
    else:
      x = jax.lax.conv_general_dilated(
          x, kernel, strides, 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    if self.bias:
      x = x + scope.param('bias', zeros_init, (self.depth,)).astype(self.dtype)
    return x


def _num_stages(resolution, minres):
  stages = round(math.log2(resolution / minres))
  if stages < 1 or minres * 2 ** stages != resolution:
    raise ValueError(
        f'Image resolution {resolution} must be minres ({minres}) times a power of two '
        f'(at least 2); resize the images or change minres.')
  return stages


# Image encoder and decoder (§2.2, §2.4).

class ImageEncoder:
  """[..., H, W, C] in [0, 1] -> [..., (H/2^n)(W/2^n) depth 2^(n-1)], n = log2(H / minres)."""

  def __init__(self, depth, minres=4, norm='layer', act='silu', winit='normal', fan='avg',
               dtype=f32):
    self.depth, self.minres, self.norm, self.act = depth, minres, norm, act
    self.winit, self.fan, self.dtype = winit, fan, dtype

  def __call__(self, scope, images):
    lead = images.shape[:-3]
    x = images.reshape((-1,) + images.shape[-3:]).astype(self.dtype) - 0.5  # [N, H, W, C]
    for i in range(_num_stages(images.shape[-3], self.minres)):
      conv = Conv2D(self.depth * 2 ** i, 4, 2, False, self.norm == 'none', self.winit, self.fan,
                    dtype=self.dtype)
      block = scope.child(f'conv{i}')
      x = _norm_act(block, conv(block, x), self.norm, self.act)
    return x.reshape(lead + (-1,))


class ImageDecoder:
  """[..., F] -> square images [..., H, H, C] (centred on 0.5, or sigmoid when sigmoid=True)."""

  def __init__(self, shape, depth, minres=4, norm='layer', act='silu', winit='normal', fan='avg',
               sigmoid=False, dtype=f32):
    if shape[0] != shape[1]:
      raise ValueError(f'The image decoder needs square images, got shape {tuple(shape)}; '
                       f'resize the images.')
    self.shape, self.depth, self.minres = tuple(shape), depth, minres
    self.norm, self.act, self.winit, self.fan = norm, act, winit, fan
    self.sigmoid, self.dtype = sigmoid, dtype

  def __call__(self, scope, feat):
    lead = feat.shape[:-1]
    stages = _num_stages(self.shape[0], self.minres)
    top = self.depth * 2 ** (stages - 1)
    proj = Linear(self.minres ** 2 * top, True, 'uniform', 'avg', 1.0, self.dtype)
    x = proj(scope.child('in'), feat)
    x = x.reshape((-1, self.minres, self.minres, top))        # [N, minres, minres, 8d]
    for i in range(stages - 1):
      conv = Conv2D(top // 2 ** (i + 1), 4, 2, True, self.norm == 'none', self.winit, self.fan,
                    dtype=self.dtype)
      block = scope.child(f'conv{i}')
      x = _norm_act(block, conv(block, x), self.norm, self.act)
    out = Conv2D(self.shape[-1], 4, 2, True, True, 'uniform', 'avg', 1.0, self.dtype)
    x = out(scope.child('out'), x)                           # [N, H, W, C]
    x = jax.nn.sigmoid(x) if self.sigmoid else x + 0.5
    return x.reshape(lead + x.shape[1:])


# Multi-key encoder and decoder (§2.1).

_ENC_EXCLUDED = ('is_first', 'is_last')  # Scalars (reward, is_terminal) fail the rank test.
_DEC_EXCLUDED = ('is_first', 'is_last', 'is_terminal', 'reward')


def _select(shapes, pattern, ranks, excluded):
  return {k: tuple(v) for k, v in shapes.items()
          if k not in excluded and not k.startswith('log_')
          and len(v) in ranks and re.match(pattern, k)}


def _check_cnn_variant(cnn, cnn_blocks, resize):
  if (cnn, cnn_blocks, resize) != ('resnet', 0, 'stride'):
    raise NotImplementedError(
        f"Only cnn='resnet' with cnn_blocks=0 and resize='stride' is implemented (the "
        f"defaults), got cnn={cnn!r}, cnn_blocks={cnn_blocks!r}, resize={resize!r}.")


def _image_size(cnn_shapes):
  sizes = {shape[:2] for shape in cnn_shapes.values()}
  if len(sizes) > 1:
    raise ValueError(f'Image keys must share one resolution to be concatenated, got {cnn_shapes}.')
  return sizes.pop()


class MultiEncoder:
  """Observation dict -> embedding [..., E] = concat(CNN(images), MLP(symlog(vectors)))."""

  def __init__(self, shapes, cnn_keys='.*', mlp_keys='.*', cnn_depth=96, mlp_layers=5,
               mlp_units=1024, minres=4, symlog_inputs=True, act='silu', norm='layer',
               winit='normal', fan='avg', cnn='resnet', cnn_blocks=0, resize='stride', dtype=f32):
    _check_cnn_variant(cnn, cnn_blocks, resize)
    self.cnn_shapes = _select(shapes, cnn_keys, (3,), _ENC_EXCLUDED)
    self.mlp_shapes = _select(shapes, mlp_keys, (1, 2), _ENC_EXCLUDED)
    if not self.cnn_shapes and not self.mlp_shapes:
      raise ValueError(f'No observation key matches encoder cnn_keys {cnn_keys!r} (rank 3) or '
                       f'mlp_keys {mlp_keys!r} (rank 1/2); shapes: {dict(shapes)}.')
    if self.cnn_shapes:
      _image_size(self.cnn_shapes)
    self.cnn = ImageEncoder(cnn_depth, minres, norm, act, winit, fan, dtype)
    self.mlp = MLP(mlp_layers, mlp_units, norm, act, winit, fan, symlog_inputs, dtype)

  def __call__(self, scope, obs):
    outs = []
    if self.cnn_shapes:
      images = jnp.concatenate([obs[k] for k in self.cnn_shapes], -1)   # [..., H, W, C]
      outs.append(self.cnn(scope.child('cnn'), images))
    if self.mlp_shapes:
      vectors = [obs[k].reshape(obs[k].shape[:obs[k].ndim - len(s)] + (-1,)).astype(f32)
                 for k, s in self.mlp_shapes.items()]
      outs.append(self.mlp(scope.child('mlp'), jnp.concatenate(vectors, -1)))
    return jnp.concatenate(outs, -1) if len(outs) > 1 else outs[0]


class MultiDecoder:
  """Feature [..., F] -> dict key -> distribution over that observation key."""

  def __init__(self, shapes, cnn_keys='.*', mlp_keys='.*', cnn_depth=96, mlp_layers=5,
               mlp_units=1024, minres=4, image_dist='mse', vector_dist='symlog_mse',
               outscale=1.0, cnn_sigmoid=False, act='silu', norm='layer', winit='normal',
               fan='avg', cnn='resnet', cnn_blocks=0, resize='stride', inputs=('deter', 'stoch'),
               dtype=f32):
    _check_cnn_variant(cnn, cnn_blocks, resize)
    if image_dist != 'mse':
      raise NotImplementedError(f"decoder.image_dist must be 'mse', got {image_dist!r}.")
    if vector_dist not in ('symlog_mse', 'mse'):
      raise NotImplementedError(
          f"decoder.vector_dist must be 'symlog_mse' or 'mse', got {vector_dist!r}.")
    self.cnn_shapes = _select(shapes, cnn_keys, (3,), _DEC_EXCLUDED)
    self.mlp_shapes = _select(shapes, mlp_keys, (1,), _DEC_EXCLUDED)
    self.inputs = tuple(inputs)  # State keys the caller concatenates into the feature.
    self.vector_dist, self.dtype = vector_dist, dtype
    if self.cnn_shapes:
      size = _image_size(self.cnn_shapes)
      channels = sum(s[-1] for s in self.cnn_shapes.values())
      self.cnn = ImageDecoder(size + (channels,), cnn_depth, minres, norm, act, winit, fan,
                              cnn_sigmoid, dtype)
    self.mlp = MLP(mlp_layers, mlp_units, norm, act, winit, fan, False, dtype)
    self.outscale = outscale

  def __call__(self, scope, feat):
    dists = {}
    if self.cnn_shapes:
      images = self.cnn(scope.child('cnn'), feat).astype(f32)        # [..., H, W, ΣC]
      splits = list(itertools.accumulate(s[-1] for s in self.cnn_shapes.values()))[:-1]
      for key, image in zip(self.cnn_shapes, jnp.split(images, splits, -1)):
        dists[key] = jaxutils.MSE(image, 3)
    if self.mlp_shapes:
      hidden = self.mlp(scope.child('mlp'), feat)
      dist = jaxutils.SymlogMSE if self.vector_dist == 'symlog_mse' else jaxutils.MSE
      for key, shape in self.mlp_shapes.items():
        out = Linear(shape[0], True, 'uniform', 'avg', self.outscale, self.dtype)
        dists[key] = dist(out(scope.child('out').child(key), hidden).astype(f32), 1)
    return dists


# Heads (§1.4, §2.4).

class MLPHead:
  """Feature [..., F] -> distribution over a value of `shape`, from an MLP trunk.

  The output layers are uniform-initialised with scale `outscale` (0 gives zeros).
  dist: symlog_disc (TwoHot), binary (Bernoulli), onehot (OneHotDist with unimix),
  normal (Normal(tanh m, (maxstd - minstd) σ(raw + 2) + minstd)), mse (MSE).
  """

  DISTS = ('symlog_disc', 'binary', 'onehot', 'normal', 'mse')

  def __init__(self, shape, dist='mse', layers=5, units=1024, outscale=1.0, bins=255, unimix=0.0,
               minstd=0.1, maxstd=1.0, symlog_inputs=False, act='silu', norm='layer',
               winit='normal', fan='avg', inputs=('deter', 'stoch'), dtype=f32):
    if dist not in self.DISTS:
      raise ValueError(f"Unknown head dist '{dist}': expected one of {self.DISTS}.")
    self.shape = (shape,) if isinstance(shape, int) else tuple(shape)
    if dist == 'onehot' and len(self.shape) != 1:
      raise ValueError(f"A 'onehot' head needs a shape (classes,), got {self.shape}.")
    self.dist, self.outscale, self.bins, self.unimix = dist, outscale, bins, unimix
    self.minstd, self.maxstd, self.dtype = minstd, maxstd, dtype
    self.inputs = tuple(inputs)  # State keys the caller concatenates into the feature.
    self.mlp = MLP(layers, units, norm, act, winit, fan, symlog_inputs, dtype)

  def _out(self, scope, name, x, units):
    out = Linear(units, True, 'uniform', 'avg', self.outscale, self.dtype)
    return out(scope.child(name), x).astype(f32)

  def __call__(self, scope, feat):
    x = self.mlp(scope.child('mlp'), feat)
    lead, size = x.shape[:-1], math.prod(self.shape)
    if self.dist == 'symlog_disc':
      logits = self._out(scope, 'out', x, size * self.bins)
      logits = logits.reshape(lead + self.shape + (self.bins,))
      return jaxutils.TwoHot(logits, jaxutils.twohot_bins(self.bins))
    if self.dist == 'normal':
      mean = self._out(scope, 'mean', x, size).reshape(lead + self.shape)
      raw = self._out(scope, 'std', x, size).reshape(lead + self.shape)
      std = (self.maxstd - self.minstd) * jax.nn.sigmoid(raw + 2.0) + self.minstd
      return jaxutils.Normal(jnp.tanh(mean), std)
    out = self._out(scope, 'out', x, size).reshape(lead + self.shape)
    if self.dist == 'binary':
      return jaxutils.Bernoulli(out)
    if self.dist == 'onehot':
      return jaxutils.OneHotDist(out, self.unimix)
    return jaxutils.MSE(out, len(self.shape))


# Recurrent state-space model (§2.3).

class RSSM:
  """State dict: deter [..., D] (compute dtype), stoch [..., S, K] one-hot sample and
  logits [..., S, K] (unimix log-probabilities), both float32."""

  def __init__(self, deter=4096, units=1024, stoch=32, classes=32, unimix=0.01, action_clip=1.0,
               initial='learned', unroll=False, act='silu', norm='layer', winit='normal',
               fan='avg', dtype=f32):
    if initial not in ('learned', 'zeros'):
      raise ValueError(f"rssm.initial must be 'learned' or 'zeros', got {initial!r}.")
    self.deter, self.units, self.stoch, self.classes = deter, units, stoch, classes
    self.unimix, self.action_clip = unimix, action_clip
    self.initial_type, self.unroll = initial, unroll
    self.act, self.norm, self.winit, self.fan, self.dtype = act, norm, winit, fan, dtype

  def _dense(self, units, act=None):
    act = self.act if act is None else act
    return Dense(units, self.norm, act, self.winit, self.fan, self.dtype)

  def _stats(self, scope, x):
    """Logit layer (uniform init, with bias) -> unimix categorical over [..., S, K]."""
    out = Linear(self.stoch * self.classes, True, 'uniform', 'avg', 1.0, self.dtype)
    logits = out(scope, x).astype(f32).reshape(x.shape[:-1] + (self.stoch, self.classes))
    return jaxutils.OneHotDist(logits, self.unimix)

  def _prior(self, scope, deter):
    hidden = self._dense(self.units)(scope.child('img_out'), deter)
    return self._stats(scope.child('img_stats'), hidden)

  def initial(self, scope, batch_size):
    """Initial state for batch dims `batch_size` (int or tuple)."""
    lead = (batch_size,) if isinstance(batch_size, int) else tuple(batch_size)
    shape = (self.stoch, self.classes)
    if self.initial_type == 'zeros':
      deter = jnp.zeros(lead + (self.deter,), self.dtype)
      stoch = jnp.zeros(lead + shape, f32)
    else:
      # h0 = tanh(w); z0 is the mode of the prior at h0 (computed once, then broadcast).
      deter = jnp.tanh(scope.param('initial', zeros_init, (self.deter,))).astype(self.dtype)
      stoch = self._prior(scope, deter[None]).mode()[0]
      deter = jnp.broadcast_to(deter, lead + (self.deter,))
      stoch = jnp.broadcast_to(stoch, lead + shape)
    return {'deter': deter, 'stoch': stoch, 'logits': jnp.zeros(lead + shape, f32)}

  def _gru(self, scope, deter, x):
    """GRU with input order [h; x], one LN over all 3D gates, no bias (§2.3 steps 2-4)."""
    deter = deter.astype(self.dtype)
    gates = self._dense(3 * self.deter, 'none')(scope, jnp.concatenate([deter, x], -1))
    reset, cand, update = jnp.split(gates, 3, -1)
    reset = jax.nn.sigmoid(reset)
    cand = jnp.tanh(reset * cand)
    update = jax.nn.sigmoid(update - 1)
    return update * cand + (1 - update) * deter

  def _next_deter(self, scope, prev_state, prev_action):
    """h_t from (h_{t-1}, z_{t-1}) and a_{t-1} [..., *A] (§2.3 steps 1-4)."""
    lead = prev_state['deter'].shape[:-1]
    if self.action_clip > 0:
      prev_action = jaxutils.action_clip(prev_action, self.action_clip)
    prev_stoch = prev_state['stoch'].reshape(lead + (-1,)).astype(self.dtype)
    prev_action = prev_action.reshape(lead + (-1,)).astype(self.dtype)
    x = jnp.concatenate([prev_stoch, prev_action], -1)
    x = self._dense(self.units)(scope.child('img_in'), x)
    return self._gru(scope.child('gru'), prev_state['deter'], x)

  def _posterior(self, scope, deter, embed, key):
    x = jnp.concatenate([deter, embed.astype(self.dtype)], -1)
    dist = self._stats(scope.child('obs_stats'), self._dense(self.units)(scope.child('obs_out'), x))
    return {'deter': deter, 'stoch': dist.sample(key), 'logits': dist.logits}

  def img_step(self, scope, prev_state, prev_action, key):
    """Prior step: (h_{t-1}, z_{t-1}), a_{t-1} [..., *A] -> prior state at t."""
    deter = self._next_deter(scope, prev_state, prev_action)
    dist = self._prior(scope, deter)
    return {'deter': deter, 'stoch': dist.sample(key), 'logits': dist.logits}

  def _reset(self, prev_state, prev_action, is_first, init):
    """Where is_first [...], the state becomes init (broadcast) and the action zero."""
    is_first = is_first.astype(bool)

    def reset(x, x_init):
      # A select, not x (1 - m) + init m: a non-finite carry must not survive a reset.
      mask = is_first.reshape(is_first.shape + (1,) * (x.ndim - is_first.ndim))
      return jnp.where(mask, x_init, x).astype(x.dtype)

    return jax.tree.map(reset, prev_state, init), reset(prev_action, jnp.zeros_like(prev_action))

  def obs_step(self, scope, prev_state, prev_action, embed, is_first, key, init=None):
    """Posterior step -> (post, prior). is_first [...] resets the state to `init`
    (default: the initial state; leaves broadcast against the state) and the action
    to zero before the prior step."""
    init = self.initial(scope, ()) if init is None else init
    prev_state, prev_action = self._reset(prev_state, prev_action, is_first, init)
    prior_key, post_key = jax.random.split(key)
    prior = self.img_step(scope, prev_state, prev_action, prior_key)
    return self._posterior(scope, prior['deter'], embed, post_key), prior

  def observe(self, scope, embed, prev_actions, is_first, key, state=None):
    """Scans obs_step over time. embed [B, T, E], prev_actions [B, T, *A] (a_{t-1} at t),
    is_first [B, T]; step t uses jax.random.split(key, T)[t]. Returns (post, prior)
    with leaves [B, T, ...].

    The same numbers as a loop of obs_step, but the prior's distribution, which
    depends on h_t alone and never feeds the recurrence, is computed after the
    loop for all steps at once: fewer small sequential matmuls.
    """
    batch, length = is_first.shape
    if state is None:
      state = self.initial(scope, batch)
    time_major = lambda x: jnp.swapaxes(x, 0, 1)
    step_keys = jax.vmap(jax.random.split)(jax.random.split(key, length))  # [T, 2] (prior, post)
    inputs = (time_major(embed), time_major(prev_actions), time_major(is_first), step_keys[:, 1])
    init = self.initial(scope, ())   # Once, not in every step of the loop.

    def step(carry, inp):
      embed_t, action_t, first_t, post_key = inp
      carry, action_t = self._reset(carry, action_t, first_t, init)
      post = self._posterior(scope, self._next_deter(scope, carry, action_t), embed_t, post_key)
      return post, post

    unroll = length if self.unroll else 1
    _, post = modules.scan(scope, step, state, inputs, unroll)   # Leaves [T, B, ...].
    dist = self._prior(scope, post['deter'])
    stoch = jax.vmap(lambda dist, key: dist.sample(key))(dist, step_keys[:, 0])
    prior = {'deter': post['deter'], 'stoch': stoch, 'logits': dist.logits}
    return jax.tree.map(time_major, post), jax.tree.map(time_major, prior)

  def get_feat(self, state):
    """[..., D + S K] = concat(h, flatten(z)) in the compute dtype."""
    stoch = state['stoch'].reshape(state['stoch'].shape[:-2] + (-1,))
    return jnp.concatenate([state['deter'].astype(self.dtype), stoch.astype(self.dtype)], -1)

  def get_dist(self, state):
    return jaxutils.OneHotDist(state['logits'])   # Logits are unimixed already.

  def kl_loss(self, post, prior, free=1.0):
    """(dyn, rep, kl), each [...]: KL[post || prior] summed over the S latents, with
    free bits per element: dyn = max(free, KL[sg(post) || prior]), rep = max(free,
    KL[post || sg(prior)]); kl is the raw KL without gradient, for metrics."""
    post_dist, prior_dist = self.get_dist(post), self.get_dist(prior)
    post_sg, prior_sg = self.get_dist(sg(post)), self.get_dist(sg(prior))
    dyn = post_sg.kl(prior_dist).sum(-1)
    rep = post_dist.kl(prior_sg).sum(-1)
    return jnp.maximum(free, dyn), jnp.maximum(free, rep), sg(dyn)
