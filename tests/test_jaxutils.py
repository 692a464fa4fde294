"""Formula tests for dreamerv3/jaxutils.py against float64 NumPy or hand-worked values."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dreamerv3 import jaxutils as ju


def np_symlog(x):
  return np.sign(x) * np.log(1 + np.abs(x))


def np_softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


# symlog / symexp

def test_symlog_symexp_values_and_inverse():
  x = np.array([-1e6, -20.0, -1.0, -1e-3, 0.0, 1e-3, 0.5, 1.0, 20.0, 1e6])
  np.testing.assert_allclose(ju.symlog(jnp.asarray(x, jnp.float32)), np_symlog(x), rtol=1e-6)
  assert float(ju.symlog(jnp.float32(np.e - 1))) == pytest.approx(1.0, rel=1e-6)
  y = np.array([-10.0, -1.0, 0.0, 0.3, 5.0])
  np.testing.assert_allclose(ju.symexp(jnp.asarray(y)), np.sign(y) * (np.exp(np.abs(y)) - 1), rtol=1e-6)
  np.testing.assert_allclose(ju.symexp(ju.symlog(jnp.asarray(x, jnp.float32))), x, rtol=1e-5)


# twohot

def np_twohot(y, bins):
  """Reference: linear interpolation between neighbouring bins in symlog space."""
  y, bins = np_symlog(np.float64(y)), np.asarray(bins, np.float64)
  target = np.zeros(len(bins))
  if y <= bins[0]:
    target[0] = 1
  elif y >= bins[-1]:
    target[-1] = 1
  else:
    i = np.searchsorted(bins, y, side='right') - 1
    frac = (y - bins[i]) / (bins[i + 1] - bins[i])
    target[i], target[i + 1] = 1 - frac, frac
  return target


def test_twohot_bins():
  bins = np.asarray(ju.twohot_bins())
  assert bins.shape == (255,) and bins.dtype == np.float32
  np.testing.assert_allclose(bins, np.linspace(-20, 20, 255), atol=1e-6)
  assert bins[0] == -20 and bins[127] == 0 and bins[-1] == 20
  np.testing.assert_allclose(np.diff(bins), 40 / 254, atol=4e-6)  # float32 ulp at 20 is 2e-6.


def test_twohot_between_bins_matches_reference():
  bins = ju.twohot_bins()
  ys = np.array([-1234.5, -3.3, -0.01, 0.07, 0.5, 2.0, 77.0, 1e5])
  got = np.asarray(ju.twohot_encode(jnp.asarray(ys, jnp.float32), bins))
  want = np.stack([np_twohot(y, bins) for y in ys])
  np.testing.assert_allclose(got, want, atol=2e-5)
  np.testing.assert_allclose(got.sum(-1), 1, atol=1e-6)
  assert ((got > 0).sum(-1) == 2).all()


def test_twohot_hand_worked_small_bins():
  bins = jnp.array([-2.0, -1.0, 0.0, 1.0, 2.0])
  # symlog(e^0.25 - 1) = 0.25: weight 0.75 on bin 0.0 and 0.25 on bin 1.0.
  got = ju.twohot_encode(jnp.float32(math.expm1(0.25)), bins)
  np.testing.assert_allclose(got, [0, 0, 0.75, 0.25, 0], atol=1e-6)


def test_twohot_edges_and_exact_bins():
  on_bin = float(ju.symlog(jnp.float32(3.0)))
  last = float(ju.symlog(jnp.float32(5.0)))
  bins = jnp.array([-1.0, on_bin, last])
  cases = {
      -100.0: [1, 0, 0],   # Below the first bin: edge bin.
      3.0: [0, 1, 0],      # Exactly on a bin.
      5.0: [0, 0, 1],      # Exactly on the last bin.
      1e9: [0, 0, 1],      # Above the last bin.
  }
  for y, want in cases.items():
    np.testing.assert_array_equal(ju.twohot_encode(jnp.float32(y), bins), want)
  np.testing.assert_array_equal(ju.twohot_encode(jnp.float32(0.0), ju.twohot_bins())[127], 1.0)


def test_twohot_dist_mean_and_log_prob():
  rng = np.random.default_rng(0)
  logits = rng.normal(0, 3, (4, 255)).astype(np.float32)
  bins = ju.twohot_bins()
  dist = ju.TwoHot(jnp.asarray(logits), bins)
  probs = np_softmax(logits.astype(np.float64))
  expect = np.sum(probs * np.asarray(bins, np.float64), -1)
  want_mean = np.sign(expect) * np.expm1(np.abs(expect))
  np.testing.assert_allclose(dist.mean(), want_mean, rtol=1e-4)
  np.testing.assert_allclose(dist.mode(), want_mean, rtol=1e-4)
  ys = np.array([-3.0, 0.0, 12.5, 1e4])
  targets = np.stack([np_twohot(y, bins) for y in ys])
  log_softmax = logits - np.log(np.exp(logits.astype(np.float64)).sum(-1, keepdims=True))
  np.testing.assert_allclose(dist.log_prob(jnp.asarray(ys, jnp.float32)),
                             (targets * log_softmax).sum(-1), rtol=1e-4)
  assert abs(float(ju.TwoHot(jnp.zeros((255,)), bins).mean())) < 1e-6  # Uniform p decodes to ≈ 0.


# Categorical

def test_unimix_probabilities_and_logits():
  logits = np.array([[2.0, -1.0, 0.5, 0.0], [30.0, -30.0, 0.0, 1.0]])
  dist = ju.OneHotDist(jnp.asarray(logits, jnp.float32), unimix=0.01)
  want = 0.99 * np_softmax(logits) + 0.01 / 4
  np.testing.assert_allclose(dist.probs, want, rtol=1e-5)
  np.testing.assert_allclose(dist.logits, np.log(want), rtol=1e-5, atol=1e-6)
  assert float(dist.probs.min()) >= 0.01 / 4 * (1 - 1e-5)
  plain = ju.OneHotDist(jnp.asarray(logits, jnp.float32))
  np.testing.assert_allclose(plain.probs, np_softmax(logits), rtol=1e-5)


def test_onehot_log_prob_entropy_kl_mode():
  rng = np.random.default_rng(1)
  p_logits = rng.normal(0, 2, (3, 5, 6))
  q_logits = rng.normal(0, 2, (3, 5, 6))
  p_dist = ju.OneHotDist(jnp.asarray(p_logits, jnp.float32), 0.01)
  q_dist = ju.OneHotDist(jnp.asarray(q_logits, jnp.float32), 0.01)
  p = 0.99 * np_softmax(p_logits) + 0.01 / 6
  q = 0.99 * np_softmax(q_logits) + 0.01 / 6
  np.testing.assert_allclose(p_dist.entropy(), -(p * np.log(p)).sum(-1), rtol=1e-5)
  np.testing.assert_allclose(p_dist.kl(q_dist), (p * (np.log(p) - np.log(q))).sum(-1), rtol=1e-4, atol=1e-6)
  onehot = np.eye(6)[rng.integers(0, 6, (3, 5))]
  np.testing.assert_allclose(p_dist.log_prob(jnp.asarray(onehot)), np.log((p * onehot).sum(-1)), rtol=1e-5)
  np.testing.assert_array_equal(p_dist.mode(), np.eye(6)[p_logits.argmax(-1)])


def test_onehot_sample_frequencies():
  logits = jnp.log(jnp.array([0.2, 0.5, 0.3]))
  dist = ju.OneHotDist(jnp.broadcast_to(logits, (20000, 3)))
  samples = np.asarray(dist.sample(jax.random.PRNGKey(0)))
  assert set(np.unique(samples)) <= {0.0, 1.0}
  np.testing.assert_array_equal(samples.sum(-1), 1)
  np.testing.assert_allclose(samples.mean(0), [0.2, 0.5, 0.3], atol=0.015)


def test_onehot_sample_frequencies_per_distribution():
  # A batch of different 32-class distributions with unimix: each row's samples follow
  # its own probabilities (the inverse-CDF draw uses one uniform per distribution).
  rng = np.random.default_rng(0)
  logits = rng.normal(0, 2, (4, 1, 32))
  probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  probs = 0.99 * probs + 0.01 / 32
  dist = ju.OneHotDist(jnp.broadcast_to(jnp.asarray(logits, jnp.float32), (4, 40000, 32)), 0.01)
  samples = np.asarray(dist.sample(jax.random.PRNGKey(1)))
  np.testing.assert_array_equal(samples.sum(-1), 1)
  freq = samples.mean(1)                                   # [4, 32]
  tolerance = 4 * np.sqrt(probs[:, 0] / 40000) + 1e-4       # About 4 standard errors.
  assert np.all(np.abs(freq - probs[:, 0]) <= tolerance), np.abs(freq - probs[:, 0]).max()
  # A class with probability 1 - 1e-7 and the rest tiny: never an out-of-range index.
  peaked = ju.OneHotDist(jnp.broadcast_to(jnp.array([30.0, 0.0, 0.0]), (10000, 3)))
  assert np.asarray(peaked.sample(jax.random.PRNGKey(2)))[:, 0].sum() >= 9998


def test_straight_through_gradient():
  logits = jnp.array([0.3, -1.2, 2.0, 0.1])
  key = jax.random.PRNGKey(3)
  sample = ju.OneHotDist(logits, 0.01).sample(key)
  assert set(np.asarray(sample).tolist()) == {0.0, 1.0} and float(sample.sum()) == 1
  jac_sample = jax.jacobian(lambda l: ju.OneHotDist(l, 0.01).sample(key))(logits)
  jac_probs = jax.jacobian(lambda l: ju.OneHotDist(l, 0.01).probs)(logits)
  np.testing.assert_allclose(jac_sample, jac_probs, rtol=1e-5, atol=1e-7)
  assert np.abs(np.asarray(jac_probs)).max() > 0.01


# Normal, Bernoulli, MSE

def test_normal_log_prob_entropy_and_sample():
  mean = np.array([[0.1, -0.5, 0.9]])
  std = np.array([[0.2, 1.0, 0.5]])
  x = np.array([[0.3, 0.0, -1.0]])
  dist = ju.Normal(jnp.asarray(mean), jnp.asarray(std))
  want = (-0.5 * ((x - mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi)).sum(-1)
  np.testing.assert_allclose(dist.log_prob(jnp.asarray(x)), want, rtol=1e-5)
  np.testing.assert_allclose(dist.entropy(), (0.5 * np.log(2 * np.pi * np.e * std ** 2)).sum(-1), rtol=1e-5)
  np.testing.assert_allclose(dist.mode(), mean)
  key = jax.random.PRNGKey(0)
  grad = jax.grad(lambda m: ju.Normal(m, jnp.asarray(std)).sample(key).sum())(jnp.asarray(mean))
  np.testing.assert_allclose(grad, np.ones_like(mean))  # Reparameterised.
  many = ju.Normal(jnp.zeros((50000, 1)), jnp.full((50000, 1), 2.0)).sample(key)
  assert float(jnp.std(many)) == pytest.approx(2.0, rel=0.02)


def test_bernoulli():
  logit = np.array([-100.0, -2.0, 0.0, 0.5, 100.0])
  dist = ju.Bernoulli(jnp.asarray(logit, jnp.float32))
  p = 1 / (1 + np.exp(-logit))
  np.testing.assert_allclose(dist.mean(), p, rtol=1e-6, atol=1e-30)
  np.testing.assert_array_equal(dist.mode(), [0, 0, 0, 1, 1])
  x = np.array([1.0, 0.0, 1.0, 0.0, 1.0])
  want = np.array([-100.0, np.log(1 - p[1]), np.log(0.5), np.log(1 - p[3]), 0.0])
  got = np.asarray(dist.log_prob(jnp.asarray(x)))
  assert np.isfinite(got).all()
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_mse_sums_over_dims():
  mean = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
  x = mean + 0.5
  np.testing.assert_allclose(ju.MSE(jnp.asarray(mean), 2).log_prob(jnp.asarray(x)), [-3.0, -3.0])
  np.testing.assert_allclose(ju.MSE(jnp.asarray(mean), 3).log_prob(jnp.asarray(x)), -6.0)


def test_symlog_mse_small_error_zeroing():
  target = np.array([[2.0, -3.0, 0.5]])
  pred = np_symlog(target) + np.array([[5e-5, 0.5, -2.0]])  # First squared error 2.5e-9 < 1e-8.
  dist = ju.SymlogMSE(jnp.asarray(pred, jnp.float32), 1)
  np.testing.assert_allclose(dist.log_prob(jnp.asarray(target)), [-(0.25 + 4.0)], rtol=1e-5)
  np.testing.assert_allclose(dist.mean(), np.sign(pred) * np.expm1(np.abs(pred)), rtol=1e-5)
  exact = ju.SymlogMSE(ju.symlog(jnp.asarray(target)) + 1e-5, 1)
  assert float(exact.log_prob(jnp.asarray(target))[0]) == 0.0


# Action clip

def test_action_clip_forward_and_gradient():
  a = jnp.array([0.5, -2.0, 3.0, -1.0])
  np.testing.assert_allclose(ju.action_clip(a, 1.0), [0.5, -1.0, 1.0, -1.0])
  grad = jax.grad(lambda x: ju.action_clip(x, 1.0).sum())(a)
  np.testing.assert_allclose(grad, [1.0, 0.5, 1 / 3, 1.0], rtol=1e-6)
  np.testing.assert_allclose(ju.action_clip(a, 2.0), [0.5, -2.0, 2.0, -1.0])


# Returns and weights

def test_lambda_return_matches_python_loop():
  rng = np.random.default_rng(0)
  horizon, n, discount, lam = 6, 5, 0.97, 0.95
  reward = rng.normal(size=(horizon, n))
  cont = (rng.uniform(size=(horizon, n)) > 0.2).astype(np.float64)
  value = rng.normal(size=(horizon + 1, n))
  want = np.zeros((horizon, n))
  ret = value[horizon]
  for k in reversed(range(horizon)):  # R_k = r_{k+1} + γ c_{k+1} ((1-λ) v_{k+1} + λ R_{k+1})
    ret = reward[k] + discount * cont[k] * ((1 - lam) * value[k + 1] + lam * ret)
    want[k] = ret
  got = ju.lambda_return(*(jnp.asarray(x, jnp.float32) for x in (reward, cont, value)), discount, lam)
  assert got.shape == (horizon, n)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_lambda_return_hand_worked():
  # H = 1: R_0 = r_1 + γ c_1 v_1 whatever λ.
  got = ju.lambda_return(jnp.array([[2.0]]), jnp.array([[1.0]]), jnp.array([[5.0], [10.0]]), 0.5, 0.3)
  np.testing.assert_allclose(got, [[7.0]])
  # Terminal at c_1 = 0 cuts the bootstrap.
  got = ju.lambda_return(jnp.array([[2.0]]), jnp.array([[0.0]]), jnp.array([[5.0], [10.0]]), 0.5, 0.3)
  np.testing.assert_allclose(got, [[2.0]])


def test_imagination_weights():
  cont0 = np.array([1.0, 0.0, 1.0])
  cont = np.array([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
  discount = 0.9
  want = np.zeros((4, 3))
  for n in range(3):
    for k in range(4):
      want[k, n] = discount ** k * cont0[n] * np.prod(cont[:k, n])
  got = ju.imagination_weights(jnp.asarray(cont0), jnp.asarray(cont), discount)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  np.testing.assert_allclose(got[:, 0], [1, 0.9, 0.81, 0], rtol=1e-6)


# Normalisers and EMA

def test_perc_ema_update_and_scale():
  rng = np.random.default_rng(0)
  state = ju.perc_ema_init()
  assert float(state['lo']) == 0 and float(state['hi']) == 0
  lo = hi = 0.0
  for _ in range(3):
    x = rng.normal(3, 10, (15, 7))
    state = ju.perc_ema_update(state, jnp.asarray(x, jnp.float32))
    lo = 0.99 * lo + 0.01 * np.percentile(x, 5)
    hi = 0.99 * hi + 0.01 * np.percentile(x, 95)
  np.testing.assert_allclose([state['lo'], state['hi']], [lo, hi], rtol=1e-5)
  assert float(ju.perc_ema_scale(state)) == 1.0  # hi - lo < 1 after 3 updates.
  wide = {'lo': jnp.float32(-2.0), 'hi': jnp.float32(5.0)}
  assert float(ju.perc_ema_scale(wide)) == 7.0
  assert float(ju.perc_ema_scale(wide, max_=0.1)) == 10.0


def test_perc_ema_percentile_interpolates_linearly():
  state = ju.perc_ema_update(ju.perc_ema_init(), jnp.arange(11.0), decay=0.0, perclo=5, perchi=95)
  np.testing.assert_allclose([state['lo'], state['hi']], [0.5, 9.5], rtol=1e-6)


def test_ema_update():
  slow = {'a': jnp.array([1.0, 2.0]), 'b': jnp.array(4.0)}
  fast = {'a': jnp.array([3.0, 0.0]), 'b': jnp.array(-4.0)}
  out = ju.ema_update(slow, fast, 0.02)
  np.testing.assert_allclose(out['a'], [1.04, 1.96], rtol=1e-6)
  np.testing.assert_allclose(out['b'], 3.84, rtol=1e-6)
  copy = ju.ema_update(slow, fast, 1.0)
  np.testing.assert_array_equal(copy['a'], fast['a'])


# Optimiser and loss scaling

def np_clip_adam(params, grads_seq, lr, eps, clip):
  params = {k: v.astype(np.float64) for k, v in params.items()}
  mu = {k: np.zeros_like(v) for k, v in params.items()}
  nu = {k: np.zeros_like(v) for k, v in params.items()}
  for t, grads in enumerate(grads_seq, 1):
    norm = np.sqrt(sum((g ** 2).sum() for g in grads.values()))
    factor = min(1.0, clip / norm)
    for k, g in grads.items():
      g = g * factor
      mu[k] = 0.9 * mu[k] + 0.1 * g
      nu[k] = 0.999 * nu[k] + 0.001 * g ** 2
      mhat, vhat = mu[k] / (1 - 0.9 ** t), nu[k] / (1 - 0.999 ** t)
      params[k] = params[k] - lr * mhat / (np.sqrt(vhat) + eps)
  return params


@pytest.mark.parametrize('clip', [0.5, 1000.0])
def test_optimizer_matches_clip_adam(clip):
  rng = np.random.default_rng(0)
  params = {'w': rng.normal(size=(3, 2)), 'b': rng.normal(size=(2,))}
  grads_seq = [{k: rng.normal(size=v.shape) * 2 for k, v in params.items()} for _ in range(3)]
  lr, eps = 1e-2, 1e-5
  opt = ju.make_optimizer(lr, eps, clip)
  jparams = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}
  state = opt.init(jparams)
  for grads in grads_seq:
    updates, state = opt.update({k: jnp.asarray(v, jnp.float32) for k, v in grads.items()}, state, jparams)
    jparams = jax.tree.map(lambda p, u: p + u, jparams, updates)
  want = np_clip_adam(params, grads_seq, lr, eps, clip)
  for k in params:
    np.testing.assert_allclose(jparams[k], want[k], rtol=1e-5, atol=1e-6)


def test_loss_scale_state_machine():
  state = ju.loss_scale_init()
  assert float(state['scale']) == 1e4 and int(state['good_steps']) == 0
  state = ju.loss_scale_update(state, jnp.array(False))
  assert float(state['scale']) == 5e3 and int(state['good_steps']) == 0
  update = jax.jit(ju.loss_scale_update)
  for _ in range(1000):
    state = update(state, jnp.array(True))
  assert float(state['scale']) == 5e3 and int(state['good_steps']) == 1000
  state = update(state, jnp.array(True))  # The step after 1000 good ones doubles.
  assert float(state['scale']) == 1e4 and int(state['good_steps']) == 0
  state = update(state, jnp.array(True))
  state = update(state, jnp.array(False))  # Halving resets the counter.
  assert float(state['scale']) == 5e3 and int(state['good_steps']) == 0
  high = {'scale': jnp.float32(1e4), 'good_steps': jnp.int32(1000)}
  assert float(update(high, jnp.array(True))['scale']) == 1e4  # Clipped above.
  low = {'scale': jnp.float32(1e-4), 'good_steps': jnp.int32(5)}
  assert float(update(low, jnp.array(False))['scale']) == pytest.approx(1e-4)  # Clipped below.


def test_all_finite_and_global_norm():
  tree = {'a': jnp.array([1.0, 2.0]), 'b': {'c': jnp.array(2.0)}}
  assert bool(ju.all_finite(tree))
  assert not bool(ju.all_finite({**tree, 'd': jnp.array([0.0, jnp.inf])}))
  assert not bool(ju.all_finite({**tree, 'd': jnp.array(jnp.nan)}))
  assert float(ju.tree_global_norm(tree)) == pytest.approx(3.0)
