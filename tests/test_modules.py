"""Tests of the functional module system (dreamerv3/modules.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dreamerv3 import modules


def normal_init(key, shape, dtype):
  return jax.random.normal(key, shape, dtype)


class Affine:
  def __init__(self, units):
    self.units = units

  def __call__(self, scope, x):
    w = scope.param('kernel', normal_init, (x.shape[-1], self.units))
    b = scope.param('bias', lambda k, s, d: jnp.zeros(s, d), (self.units,))
    return x @ w + b


class TwoLayers:
  def __call__(self, scope, x):
    return Affine(2)(scope.child('second'), jnp.tanh(Affine(4)(scope.child('first'), x)))


class Recurrent:
  """h_t = tanh(h_{t-1} W + x_t U), scanned over the leading axis of xs."""

  def __call__(self, scope, h, xs):
    def step(h, x):
      w = scope.param('w', normal_init, (h.shape[-1], h.shape[-1]))
      u = scope.param('u', normal_init, (x.shape[-1], h.shape[-1]))
      h = jnp.tanh(h @ w + x @ u)
      return h, h
    return modules.scan(scope, step, h, xs)


def test_init_creates_params_by_path_and_apply_reuses_them():
  x = jnp.ones((5, 3))
  params = modules.init(TwoLayers(), jax.random.PRNGKey(0), x)
  assert {k: v.shape for k, v in params.items()} == {
      'first/kernel': (3, 4), 'first/bias': (4,), 'second/kernel': (4, 2), 'second/bias': (2,)}
  assert modules.count(params) == 3 * 4 + 4 + 4 * 2 + 2
  y = modules.apply(TwoLayers(), params, x)
  want = np.tanh(np.asarray(x) @ params['first/kernel']) @ params['second/kernel']
  np.testing.assert_allclose(y, want, rtol=1e-5)
  assert not np.allclose(params['first/kernel'][:, :2], params['second/kernel'][:3])


def test_init_is_deterministic_and_apply_is_jittable_and_differentiable():
  x = jnp.ones((2, 3))
  a = modules.init(TwoLayers(), jax.random.PRNGKey(1), x)
  b = modules.init(TwoLayers(), jax.random.PRNGKey(1), x)
  c = modules.init(TwoLayers(), jax.random.PRNGKey(2), x)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  assert not np.allclose(a['first/kernel'], c['first/kernel'])
  loss = lambda p: modules.apply(TwoLayers(), p, x).sum()
  grads = jax.jit(jax.grad(loss))(a)
  assert set(grads) == set(a)
  assert float(jnp.abs(grads['second/bias']).sum()) == pytest.approx(4.0)  # d sum / d b = batch 2 × 2 units.


def test_stop_gradient_scope_passes_gradients_to_inputs_not_parameters():
  x = jnp.ones((2, 3))
  params = modules.init(TwoLayers(), jax.random.PRNGKey(0), x)

  def loss(params, x, frozen):
    scope = modules.Scope(params)
    return TwoLayers()(scope.stop_gradient() if frozen else scope, x).sum()

  for frozen in (False, True):
    grad_params, grad_x = jax.grad(loss, (0, 1))(params, x, frozen)
    total = sum(float(jnp.abs(g).sum()) for g in grad_params.values())
    assert (total == 0) == frozen
    assert float(jnp.abs(grad_x).sum()) > 0
  y = TwoLayers()(modules.Scope(params).stop_gradient(), x)
  np.testing.assert_array_equal(y, modules.apply(TwoLayers(), params, x))


def test_apply_does_not_mutate_the_given_params():
  x = jnp.ones((1, 3))
  params = modules.init(TwoLayers(), jax.random.PRNGKey(0), x)
  partial = {k: v for k, v in params.items() if k.startswith('first')}
  with pytest.raises(KeyError):
    modules.apply(TwoLayers(), partial, x)
  assert set(partial) == {'first/kernel', 'first/bias'}


def test_missing_param_error_names_the_path():
  x = jnp.ones((1, 3))
  params = modules.init(TwoLayers(), jax.random.PRNGKey(0), x)
  del params['second/kernel']
  with pytest.raises(KeyError, match='second/kernel'):
    modules.apply(TwoLayers(), params, x)


def test_shape_mismatch_error():
  params = modules.init(Affine(2), jax.random.PRNGKey(0), jnp.ones((1, 3)))
  with pytest.raises(ValueError, match=r'kernel has shape \(3, 2\)'):
    modules.apply(Affine(2), params, jnp.ones((1, 5)))


def test_scan_creates_params_and_matches_python_loop():
  h0 = jnp.zeros((2, 3))
  xs = jax.random.normal(jax.random.PRNGKey(5), (4, 2, 5))
  params = modules.init(Recurrent(), jax.random.PRNGKey(0), h0, xs)
  assert {k: v.shape for k, v in params.items()} == {'w': (3, 3), 'u': (5, 3)}
  last, hs = jax.jit(lambda p: modules.apply(Recurrent(), p, h0, xs))(params)
  h, w, u = np.zeros((2, 3)), np.asarray(params['w']), np.asarray(params['u'])
  for t in range(4):
    h = np.tanh(h @ w + np.asarray(xs[t]) @ u)
    np.testing.assert_allclose(hs[t], h, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(last, h, rtol=1e-5, atol=1e-6)


def test_subtree_selects_top_level_prefixes():
  params = {'enc/a': 1, 'encoder/b': 2, 'rssm/c/d': 3, 'dec/e': 4}
  assert modules.subtree(params, 'enc') == {'enc/a': 1}
  assert modules.subtree(params, ['enc', 'rssm']) == {'enc/a': 1, 'rssm/c/d': 3}
  assert modules.subtree(params, ('missing',)) == {}
