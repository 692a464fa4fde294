"""JAX math of DreamerV3: transforms, distributions, returns, normalisers, optimiser.

Everything here is a pure function or a plain object holding arrays, so it can be
used inside jax.jit and differentiated. Distribution parameters are kept in
float32 whatever the compute dtype (algorithm.md §4.4). Shapes use `...` for
arbitrary batch dimensions and the last axis for the event where one exists.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

f32 = jnp.float32
sg = jax.lax.stop_gradient


def _pytree(*arrays, static=()):
  """Registers a distribution class as a pytree of its `arrays` attributes, so that
  distributions can be returned from jax.lax.scan, stop-gradiented or sliced with
  jax.tree.map. Unflattening sets the attributes without running __init__."""
  def register(cls):
    def flatten(dist):
      return [getattr(dist, k) for k in arrays], tuple(getattr(dist, k) for k in static)

    def unflatten(aux, leaves):
      dist = object.__new__(cls)
      for name, value in zip(arrays + static, list(leaves) + list(aux)):
        setattr(dist, name, value)
      return dist

    jax.tree_util.register_pytree_node(cls, flatten, unflatten)
    return cls
  return register


# Transforms (§1.1).

def symlog(x):
  return jnp.sign(x) * jnp.log1p(jnp.abs(x))


def symexp(x):
  return jnp.sign(x) * jnp.expm1(jnp.abs(x))


# Twohot regression in symlog space (§1.2).

def twohot_bins(n=255, low=-20.0, high=20.0):
  """n equally spaced bins [n] in symlog space, computed in float64, stored as float32."""
  return jnp.asarray(np.linspace(low, high, n, dtype=np.float64), f32)


def twohot_encode(y, bins):
  """Twohot targets [..., n] of the raw values y [...], over symlog-space bins [n]."""
  n = bins.shape[0]
  y = symlog(jnp.asarray(y, f32))[..., None]                  # [..., 1]
  lo = (bins <= y).astype(jnp.int32).sum(-1) - 1               # [...]
  hi = n - (bins > y).astype(jnp.int32).sum(-1)
  lo, hi = jnp.clip(lo, 0, n - 1), jnp.clip(hi, 0, n - 1)
  same = lo == hi  # Outside the bin range: all mass on the edge bin.
  dist_lo = jnp.where(same, 1.0, jnp.abs(bins[lo] - y[..., 0]))
  dist_hi = jnp.where(same, 1.0, jnp.abs(bins[hi] - y[..., 0]))
  total = dist_lo + dist_hi
  weight_lo, weight_hi = dist_hi / total, dist_lo / total
  return (jax.nn.one_hot(lo, n, dtype=f32) * weight_lo[..., None] +
          jax.nn.one_hot(hi, n, dtype=f32) * weight_hi[..., None])


@_pytree('logits', 'bins')
class TwoHot:
  """Categorical over symlog-space bins, decoded as symexp(E_p[bins]) (§1.2)."""

  def __init__(self, logits, bins):
    self.logits = jnp.asarray(logits, f32)   # [..., n]
    self.bins = bins                          # [n]

  def mean(self):
    probs = jax.nn.softmax(self.logits, -1)
    return symexp((probs * self.bins).sum(-1))   # [...]: expectation in symlog space.

  def mode(self):
    return self.mean()

  def log_prob(self, y):
    """Cross-entropy with the twohot encoding of the raw values y [...]."""
    target = twohot_encode(y, self.bins)
    return (target * jax.nn.log_softmax(self.logits, -1)).sum(-1)


# Other output distributions (§1.4).

def _sum_last(x, dims):
  return x.sum(tuple(range(-dims, 0))) if dims else x


@_pytree('_mean', static=('dims',))
class MSE:
  """Deterministic prediction; log_prob = -sum of squared errors over the last dims axes."""

  def __init__(self, mean, dims):
    self._mean = jnp.asarray(mean, f32)
    self.dims = dims

  def mean(self):
    return self._mean

  def mode(self):
    return self._mean

  def log_prob(self, x):
    return -_sum_last(jnp.square(self._mean - jnp.asarray(x, f32)), self.dims)


@_pytree('_mean', static=('dims',))
class SymlogMSE:
  """Regression in symlog space; squared errors below 1e-8 count as zero."""

  def __init__(self, mean, dims):
    self._mean = jnp.asarray(mean, f32)   # Prediction in symlog space.
    self.dims = dims

  def mean(self):
    return symexp(self._mean)

  def mode(self):
    return symexp(self._mean)

  def log_prob(self, x):
    error = jnp.square(self._mean - symlog(jnp.asarray(x, f32)))
    error = jnp.where(error < 1e-8, 0.0, error)
    return -_sum_last(error, self.dims)


@_pytree('logit')
class Bernoulli:
  """Binary variable with the given logit [...]."""

  def __init__(self, logit):
    self.logit = jnp.asarray(logit, f32)

  def mean(self):
    return jax.nn.sigmoid(self.logit)

  def mode(self):
    return (self.logit > 0).astype(f32)

  def log_prob(self, x):
    x = jnp.asarray(x, f32)
    return (x * jax.nn.log_sigmoid(self.logit) +
            (1 - x) * jax.nn.log_sigmoid(-self.logit))

  def entropy(self):
    p = self.mean()
    return -(p * jax.nn.log_sigmoid(self.logit) +
             (1 - p) * jax.nn.log_sigmoid(-self.logit))


@_pytree('logits')
class OneHotDist:
  """Categorical over the last axis with one-hot samples (§1.3).

  `logits` holds the normalised log-probabilities of the unimix mixture
  (1 - unimix) * softmax(logits) + unimix / C, so that sampling, log_prob,
  entropy and KL all use the mixture and code reading `dist.logits` sees it.
  """

  def __init__(self, logits, unimix=0.0):
    logits = jnp.asarray(logits, f32)   # [..., C]
    if unimix:
      probs = jax.nn.softmax(logits, -1)
      probs = (1 - unimix) * probs + unimix / logits.shape[-1]
      logits = jnp.log(probs)
    else:
      logits = jax.nn.log_softmax(logits, -1)
    self.logits = logits

  @property
  def probs(self):
    return jnp.exp(self.logits)

  def sample(self, key):
    """Straight-through one-hot sample: forward one-hot, gradient of the probabilities.

    Drawn by inverting the CDF with one uniform per distribution: class i where
    cdf_{i-1} <= u < cdf_i. The same distribution as the Gumbel-max trick of
    jax.random.categorical, which draws and takes two logs of one uniform per
    class and then a variadic argmax reduction; on the CPU that was about a
    seventh of a `cpu`-block train step.
    """
    probs = self.probs                                              # [..., C]
    u = jax.random.uniform(key, probs.shape[:-1] + (1,), f32)       # [..., 1]
    cdf = jnp.cumsum(sg(probs), -1)
    index = (cdf[..., :-1] <= u).sum(-1)   # Thresholds passed, in 0..C-1 even if cdf_C < 1.
    sample = jax.nn.one_hot(index, probs.shape[-1], dtype=f32)
    return sg(sample) + (probs - sg(probs))  # Bracketed: the forward value stays exact.

  def mode(self):
    return jax.nn.one_hot(self.logits.argmax(-1), self.logits.shape[-1], dtype=f32)

  def log_prob(self, onehot):
    return (jnp.asarray(onehot, f32) * self.logits).sum(-1)

  def entropy(self):
    return -(self.probs * self.logits).sum(-1)

  def kl(self, other):
    """KL[self || other] over the last axis."""
    return (self.probs * (self.logits - other.logits)).sum(-1)


@_pytree('_mean', 'std')
class Normal:
  """Independent normal over the last axis."""

  def __init__(self, mean, std):
    self._mean = jnp.asarray(mean, f32)   # [..., A]
    self.std = jnp.asarray(std, f32)

  def mean(self):
    return self._mean

  def mode(self):
    return self._mean

  def sample(self, key):
    return self._mean + self.std * jax.random.normal(key, self._mean.shape, f32)

  def log_prob(self, x):
    z = (jnp.asarray(x, f32) - self._mean) / self.std
    return (-0.5 * jnp.square(z) - jnp.log(self.std) - 0.5 * math.log(2 * math.pi)).sum(-1)

  def entropy(self):
    return (0.5 + 0.5 * math.log(2 * math.pi) + jnp.log(self.std)).sum(-1)


def action_clip(action, clip):
  """Scales |a| down to at most clip; the scale factor carries no gradient (§2.3)."""
  return action * sg(1 / jnp.maximum(1, jnp.abs(action) / clip))


# Returns and weights of the imagined trajectory (§3.3, §3.4), time-major.

def lambda_return(reward, cont, value, discount, lam):
  """λ-returns R_0 .. R_{H-1} [H, ...].

  reward [H, ...] = r_1..r_H, cont [H, ...] = c_1..c_H, value [H+1, ...] = v_0..v_H.
  R_H = v_H; R_k = r_{k+1} + γ c_{k+1} ((1 - λ) v_{k+1} + λ R_{k+1}).
  """
  direct = reward + discount * cont * (1 - lam) * value[1:]

  def step(ret_next, inputs):
    direct_k, cont_k = inputs
    ret = direct_k + discount * cont_k * lam * ret_next
    return ret, ret

  _, returns = jax.lax.scan(step, value[-1], (direct, cont), reverse=True)
  return returns


def imagination_weights(cont0, cont, discount):
  """Weights [H+1, ...]: w_k = γ^k Π_{j<=k} c_j, w_0 = c_0 [...]; cont [H, ...] = c_1..c_H."""
  factors = jnp.concatenate([cont0[None], discount * cont], 0)
  return jnp.cumprod(factors, 0)


# Return normalisation: EMA of percentiles (§3.5).

def perc_ema_init():
  return {'lo': jnp.zeros((), f32), 'hi': jnp.zeros((), f32)}


def perc_ema_update(state, x, decay=0.99, perclo=5.0, perchi=95.0):
  """Moves lo/hi towards the perclo/perchi percentiles of all of x (no gradient)."""
  x = sg(jnp.asarray(x, f32)).reshape(-1)
  lo = jnp.percentile(x, perclo, method='linear')
  hi = jnp.percentile(x, perchi, method='linear')
  return {'lo': decay * state['lo'] + (1 - decay) * lo,
          'hi': decay * state['hi'] + (1 - decay) * hi}


def perc_ema_scale(state, max_=1.0):
  """S = max(1 / max_, hi - lo): returns are divided by S, so only ever scaled down."""
  return jnp.maximum(1 / max_, state['hi'] - state['lo'])


def ema_update(slow, fast, fraction):
  """fraction * fast + (1 - fraction) * slow, leaf by leaf."""
  return jax.tree.map(lambda s, f: fraction * f + (1 - fraction) * s, slow, fast)


# Optimisation (§5.1, §5.2).

def make_optimizer(lr, eps, clip):
  """Global-norm clip -> Adam (β 0.9/0.999, eps outside the sqrt, bias-corrected) -> × -lr.

  clip <= 0 disables the clipping.
  """
  parts = [optax.clip_by_global_norm(clip)] if clip > 0 else []
  parts += [optax.scale_by_adam(b1=0.9, b2=0.999, eps=eps), optax.scale(-lr)]
  return optax.chain(*parts)


def tree_global_norm(tree):
  return optax.tree.norm(tree)


def all_finite(tree):
  """Scalar bool: every element of every leaf is finite."""
  leaves = jax.tree.leaves(tree)
  return jnp.all(jnp.stack([jnp.isfinite(x).all() for x in leaves]))


def loss_scale_init(initial=1e4):
  return {'scale': jnp.asarray(initial, f32), 'good_steps': jnp.zeros((), jnp.int32)}


def loss_scale_update(state, finite, limit=1000, low=1e-4, high=1e4):
  """Dynamic loss-scale state machine.

  Non-finite gradients halve the scale and reset the counter. A finite step
  doubles the scale when `limit` good steps came before it (and resets the
  counter); otherwise it increments the counter. The scale stays in [low, high].
  """
  scale, good = state['scale'], state['good_steps']
  grow = finite & (good >= limit)
  keep = finite & (good < limit)
  scale = jnp.where(grow, 2 * scale, jnp.where(keep, scale, scale / 2))
  good = jnp.where(keep, good + 1, 0).astype(jnp.int32)
  return {'scale': jnp.clip(scale, low, high).astype(f32), 'good_steps': good}
