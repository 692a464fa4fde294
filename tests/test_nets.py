"""Tests of dreamerv3/nets.py: initialisers, layers, encoder/decoder, heads, RSSM."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dreamerv3 import jaxutils
from dreamerv3 import modules
from dreamerv3 import nets

KEY = jax.random.PRNGKey(0)


@pytest.fixture(autouse=True, scope='module')
def fast_compilation():
  """These tests compile many tiny programs; XLA optimisation would double their time."""
  previous = jax.config.read('jax_disable_most_optimizations')
  jax.config.update('jax_disable_most_optimizations', True)
  yield
  jax.config.update('jax_disable_most_optimizations', previous)


def normal(*shape, seed=0):
  """Test inputs from NumPy: jax.random would compile once per new shape."""
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def uniform(*shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).uniform(size=shape), jnp.float32)


def init(fn, *args):
  """modules.init under jit: one compilation instead of one per random draw."""
  return jax.jit(lambda key, *a: modules.init(fn, key, *a))(KEY, *args)


@functools.lru_cache
def jit_apply(fn):
  """modules.apply(fn, params, *args) under jit."""
  return jax.jit(lambda params, *args: modules.apply(fn, params, *args))


def init_apply(module, *args, out=lambda y: y):
  """Parameters and out(module output); out maps a distribution to arrays."""
  params = init(module, *args)
  return params, jit_apply(lambda scope, *a: out(module(scope, *a)))(params, *args)


def np_layernorm(x, scale, offset, eps=1e-3):
  x = np.asarray(x, np.float64)
  mean = x.mean(-1, keepdims=True)
  var = x.var(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * scale + offset


def np_silu(x):
  return x / (1 + np.exp(-x))


# Initialisers (§4.2)

def test_init_normal_std_and_bounds():
  shape = (300, 500)  # fan_avg = 400
  x = np.asarray(nets.init_normal('avg', 1.0)(KEY, shape))
  assert x.std() == pytest.approx(np.sqrt(1 / 400), rel=0.02)
  assert np.abs(x).max() <= 2 * np.sqrt(1 / 400) / 0.87962566103423978 + 1e-7
  x_in = np.asarray(nets.init_normal('in', 2.0)(KEY, shape))
  assert x_in.std() == pytest.approx(np.sqrt(2 / 300), rel=0.02)


def test_init_uniform_bounds_and_conv_fans():
  shape = (4, 4, 32, 64)  # fan_in 512, fan_out 1024, fan_avg 768
  x = np.asarray(nets.init_uniform('avg', 1.0)(KEY, shape))
  limit = np.sqrt(3 / 768)
  assert np.abs(x).max() <= limit and np.abs(x).max() > 0.99 * limit
  assert x.std() == pytest.approx(limit / np.sqrt(3), rel=0.02)
  # Transposed layout [k, k, out, in]: fan 'in' reads the last axis.
  x_t = np.asarray(nets.init_uniform('in', 1.0, in_axis=-1, out_axis=-2)(KEY, (4, 4, 64, 32)))
  assert np.abs(x_t).max() <= np.sqrt(3 / 512) and np.abs(x_t).max() > 0.99 * np.sqrt(3 / 512)


def test_init_scale_zero_gives_exact_zeros():
  for init in (nets.init_normal('avg', 0.0), nets.init_uniform('avg', 0.0)):
    x = np.asarray(init(KEY, (7, 5)))
    assert (x == 0).all() and not np.signbit(x).any()


# Layers

def test_layernorm_matches_numpy_and_keeps_dtype():
  x = normal(3, 6) * 4 + 1
  params = init(nets.LayerNorm(), x)
  assert (params['scale'] == 1).all() and (params['offset'] == 0).all()
  params = {'scale': jnp.linspace(0.5, 2, 6), 'offset': jnp.linspace(-1, 1, 6)}
  y = modules.apply(nets.LayerNorm(), params, x)
  np.testing.assert_allclose(y, np_layernorm(x, params['scale'], params['offset']), rtol=1e-5, atol=1e-5)
  y16 = modules.apply(nets.LayerNorm(), params, x.astype(jnp.float16))
  assert y16.dtype == jnp.float16
  np.testing.assert_allclose(y16, y, atol=2e-2)


def test_dense_has_no_bias_with_layernorm():
  x = normal(2, 5)
  params, y = init_apply(nets.Dense(4), x)
  assert set(params) == {'kernel', 'norm/scale', 'norm/offset'}
  want = np_silu(np_layernorm(np.asarray(x) @ np.asarray(params['kernel']), 1, 0))
  np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)
  params, _ = init_apply(nets.Dense(4, norm='none'), x)
  assert set(params) == {'kernel', 'bias'}


def test_linear_casts_params_to_compute_dtype():
  params, y = init_apply(nets.Linear(3, dtype=jnp.float16), jnp.ones((2, 4)))
  assert params['kernel'].dtype == jnp.float32 and y.dtype == jnp.float16


def test_mlp_symlog_inputs():
  x = jnp.array([[100.0, -3.0, 0.5]])
  params, y = init_apply(nets.MLP(2, 8, symlog_inputs=True), x)
  assert sorted(params) == sorted(f'layer{i}/{n}' for i in range(2) for n in ('kernel', 'norm/scale', 'norm/offset'))
  y_plain = modules.apply(nets.MLP(2, 8), params, jnp.sign(x) * jnp.log1p(jnp.abs(x)))
  np.testing.assert_allclose(y, y_plain, rtol=1e-6)


def np_conv(x, w, stride, pad):
  """Cross-correlation of x [N, H, W, I] with w [k, k, I, O] after zero padding."""
  x = np.pad(x, ((0, 0), pad, pad, (0, 0)))
  k = w.shape[0]
  out_h = (x.shape[1] - k) // stride + 1
  out = np.zeros((x.shape[0], out_h, out_h, w.shape[-1]))
  for i in range(out_h):
    for j in range(out_h):
      patch = x[:, i * stride:i * stride + k, j * stride:j * stride + k]
      out[:, i, j] = np.einsum('nhwi,hwio->no', patch, w)
  return out


def test_conv_matches_numpy_same_padding():
  x = np.random.default_rng(0).normal(size=(1, 6, 6, 2))
  params, y = init_apply(nets.Conv2D(3, 4, 2, bias=False), jnp.asarray(x, jnp.float32))
  assert params['kernel'].shape == (4, 4, 2, 3)
  want = np_conv(x, np.asarray(params['kernel'], np.float64), 2, (1, 1))  # SAME: 1 before, 1 after.
  np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-5)


def test_conv_transpose_is_unflipped_hwoi_upsampling():
  x = np.random.default_rng(0).normal(size=(1, 3, 3, 2))
  params, y = init_apply(nets.Conv2D(3, 4, 2, transpose=True, bias=False), jnp.asarray(x, jnp.float32))
  kernel = np.asarray(params['kernel'], np.float64)
  assert kernel.shape == (4, 4, 3, 2)  # [k, k, out, in]
  dilated = np.zeros((1, 5, 5, 2))
  dilated[:, ::2, ::2] = x  # Stride 2 inserts zeros; SAME pads 2 on each side for k=4.
  want = np_conv(dilated, kernel.transpose(0, 1, 3, 2), 1, (2, 2))
  assert y.shape == (1, 6, 6, 3)
  np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-5)


# Image encoder and decoder (§2.2, §2.4)

def test_image_encoder_64_to_4_and_decoder_back():
  images = uniform(2, 3, 64, 64, 3)
  params, embed = init_apply(nets.ImageEncoder(4, minres=4), images)
  assert embed.shape == (2, 3, 4 * 4 * 32)
  assert [params[f'conv{i}/kernel'].shape for i in range(4)] == [
      (4, 4, 3, 4), (4, 4, 4, 8), (4, 4, 8, 16), (4, 4, 16, 32)]
  assert not any(k.endswith('bias') for k in params)
  decoder = nets.ImageDecoder((64, 64, 3), 4, minres=4)
  dparams, out = init_apply(decoder, embed)
  assert out.shape == (2, 3, 64, 64, 3)
  assert dparams['in/kernel'].shape == (512, 4 * 4 * 32) and 'in/bias' in dparams
  assert [dparams[f'conv{i}/kernel'].shape for i in range(3)] == [(4, 4, 16, 32), (4, 4, 8, 16), (4, 4, 4, 8)]
  assert not any(k.startswith('conv') and k.endswith('bias') for k in dparams)
  assert dparams['out/kernel'].shape == (4, 4, 3, 4) and 'out/bias' in dparams
  limit = np.sqrt(3 / ((512 + 512) / 2))  # Uniform input projection: fan_avg (512 + 4*4*32) / 2.
  assert float(jnp.abs(dparams['in/kernel']).max()) <= limit
  zero = {k: (jnp.zeros_like(v) if k.startswith('out') else v) for k, v in dparams.items()}
  np.testing.assert_allclose(jit_apply(decoder)(zero, embed), 0.5)  # Centred on 0.5.


def test_image_encoder_rejects_bad_resolution():
  with pytest.raises(ValueError, match='resolution 48'):
    init(nets.ImageEncoder(4, minres=4), jnp.zeros((1, 48, 48, 3)))


SHAPES = {
    'image': (16, 16, 3), 'depth': (16, 16, 1), 'other_image': (16, 16, 3),
    'vec': (5,), 'mat': (2, 3), 'reward': (), 'is_first': (), 'is_terminal': (),
    'log_extra': (4,), 'scalar': (),
}


def small_kwargs():
  return dict(cnn_depth=2, mlp_layers=2, mlp_units=8, minres=4)


def test_multi_encoder_key_selection_and_output():
  enc = nets.MultiEncoder(SHAPES, cnn_keys='image|depth', mlp_keys='.*', **small_kwargs())
  assert enc.cnn_shapes == {'image': (16, 16, 3), 'depth': (16, 16, 1)}
  assert enc.mlp_shapes == {'vec': (5,), 'mat': (2, 3)}
  obs = {k: uniform(2, 3, *s) * 5 for k, s in SHAPES.items()}
  params, embed = init_apply(enc, obs)
  assert embed.shape == (2, 3, 4 * 4 * 4 + 8)
  assert params['cnn/conv0/kernel'].shape == (4, 4, 4, 2)   # 3 + 1 image channels.
  assert params['mlp/layer0/kernel'].shape == (11, 8)       # 5 + 2*3 vector dims.
  mlp_params = {k[4:]: v for k, v in params.items() if k.startswith('mlp/')}
  vectors = jnp.concatenate([obs['vec'], obs['mat'].reshape(2, 3, 6)], -1)
  want = jit_apply(nets.MLP(2, 8))(mlp_params, jnp.sign(vectors) * jnp.log1p(jnp.abs(vectors)))
  np.testing.assert_allclose(embed[..., -8:], want, rtol=1e-5, atol=1e-6)
  only_images = nets.MultiEncoder(SHAPES, cnn_keys='image', mlp_keys='$^', **small_kwargs())
  assert list(only_images.cnn_shapes) == ['image'] and not only_images.mlp_shapes
  with pytest.raises(ValueError, match='No observation key'):
    nets.MultiEncoder(SHAPES, cnn_keys='$^', mlp_keys='$^', **small_kwargs())


def test_multi_decoder_key_selection_and_joint_images():
  dec = nets.MultiDecoder(SHAPES, cnn_keys='image|depth', mlp_keys='.*', **small_kwargs())
  assert dec.cnn_shapes == {'image': (16, 16, 3), 'depth': (16, 16, 1)}
  assert dec.mlp_shapes == {'vec': (5,)}  # Rank-2, scalars, log_* and is_* are not decoded.
  feat = normal(2, 3, 10)
  targets = {'image': jnp.zeros((2, 3, 16, 16, 3)), 'depth': jnp.zeros((2, 3, 16, 16, 1)), 'vec': jnp.zeros((2, 3, 5))}
  out = lambda dists: {k: (d.mean(), d.log_prob(targets[k])) for k, d in dists.items()}
  params, outs = init_apply(dec, feat, out=out)
  assert set(outs) == {'image', 'depth', 'vec'}
  assert outs['image'][0].shape == (2, 3, 16, 16, 3) and outs['depth'][0].shape == (2, 3, 16, 16, 1)
  assert params['cnn/out/kernel'].shape == (4, 4, 4, 2)  # One decoder for all image channels.
  assert outs['image'][1].shape == (2, 3) and outs['depth'][1].shape == (2, 3)
  assert outs['vec'][0].shape == (2, 3, 5) and outs['vec'][1].shape == (2, 3)
  assert 'out/vec/kernel' in params and 'out/vec/bias' in params


# Heads

def test_reward_and_critic_heads_start_at_exactly_zero_logits():
  feat = normal(4, 5, 12) * 3
  head = nets.MLPHead((), 'symlog_disc', layers=2, units=16, outscale=0.0)
  out = lambda dist: (dist.logits, dist.mean(), dist.log_prob(jnp.zeros((4, 5))))
  params, (logits, mean, log_prob) = init_apply(head, feat, out=out)
  assert (params['out/kernel'] == 0).all() and (params['out/bias'] == 0).all()
  assert logits.shape == (4, 5, 255) and logits.dtype == jnp.float32
  assert np.abs(np.asarray(mean)).max() < 1e-6  # Uniform probabilities decode to ≈ 0 (§1.2).
  np.testing.assert_allclose(log_prob, np.log(1 / 255), rtol=1e-5)


def test_cont_head_and_uniform_output_init():
  feat = normal(4, 12)
  head = nets.MLPHead((), 'binary', layers=2, units=16, outscale=1.0)
  params, (mean, mode) = init_apply(head, feat, out=lambda d: (d.mean(), d.mode()))
  assert mean.shape == (4,) and mode.shape == (4,)
  limit = np.sqrt(3 / ((16 + 1) / 2))
  kernel = np.abs(np.asarray(params['out/kernel']))
  assert kernel.max() <= limit and kernel.max() > 0


def test_actor_heads():
  feat = normal(3, 12)
  _, probs = init_apply(nets.MLPHead((4,), 'onehot', layers=1, units=16, unimix=0.01), feat,
                        out=lambda d: d.probs)
  assert probs.shape == (3, 4) and float(probs.min()) >= 0.01 / 4 - 1e-7
  head = nets.MLPHead((2,), 'normal', layers=1, units=16, minstd=0.1, maxstd=1.0)
  params, (mode, std) = init_apply(head, feat, out=lambda d: (d.mode(), d.std))
  assert {'mean/kernel', 'std/kernel'} <= set(params)
  hidden = jit_apply(nets.MLP(1, 16))({k[4:]: v for k, v in params.items() if k.startswith('mlp/')}, feat)
  raw = np.asarray(hidden @ params['std/kernel'] + params['std/bias'], np.float64)
  np.testing.assert_allclose(std, 0.9 / (1 + np.exp(-(raw + 2))) + 0.1, rtol=1e-5)
  mean = np.tanh(np.asarray(hidden @ params['mean/kernel'] + params['mean/bias']))
  np.testing.assert_allclose(mode, mean, rtol=1e-5, atol=1e-6)
  _, (mean, log_prob) = init_apply(nets.MLPHead((6,), 'mse', layers=1, units=16), feat,
                                   out=lambda d: (d.mean(), d.log_prob(jnp.zeros((3, 6)))))
  assert mean.shape == (3, 6) and log_prob.shape == (3,)


# RSSM (§2.3)

B, T, E, A = 2, 5, 7, 3


def small_rssm(**kw):
  return nets.RSSM(deter=16, units=12, stoch=4, classes=5, **kw)


RSSM = small_rssm()  # One instance, so that jit_apply caches its compiled methods.
initial_state = jax.jit(lambda params: modules.apply(RSSM.initial, params, B))


def rssm_inputs(seed=0):
  embed = normal(B, T, E, seed=seed)
  actions = normal(B, T, A, seed=seed + 100)
  is_first = np.zeros((B, T), bool)
  is_first[:, 0] = is_first[1, 3] = True
  return embed, actions, jnp.asarray(is_first), jax.random.PRNGKey(seed)


@pytest.fixture(scope='module')
def params():
  params = init(RSSM.observe, *rssm_inputs())
  # A non-zero initial vector, so that the learned initial state is not trivial.
  params['initial'] = normal(16, seed=9)
  return params


def test_rssm_param_names_and_shapes(params):
  rssm = RSSM
  assert set(k.split('/')[0] for k in params) == {
      'initial', 'img_in', 'gru', 'img_out', 'img_stats', 'obs_out', 'obs_stats'}
  assert params['gru/kernel'].shape == (16 + 12, 3 * 16) and 'gru/bias' not in params
  assert params['gru/norm/scale'].shape == (48,)
  assert params['img_in/kernel'].shape == (4 * 5 + A, 12) and 'img_stats/bias' in params
  post, prior = jit_apply(rssm.observe)(params, *rssm_inputs())
  for state in (post, prior):
    assert state['deter'].shape == (B, T, 16)
    assert state['stoch'].shape == (B, T, 4, 5) and state['logits'].shape == (B, T, 4, 5)
    np.testing.assert_array_equal(state['stoch'].sum(-1), 1)
  np.testing.assert_array_equal(post['deter'], prior['deter'])
  assert rssm.get_feat(post).shape == (B, T, 16 + 20)
  assert float(jaxutils.OneHotDist(post['logits']).probs.min()) >= 0.01 / 5 * (1 - 1e-5)  # Unimix floor.


def test_learned_initial_state_is_tanh_w_and_prior_mode(params):
  rssm = RSSM
  init = jit_apply(lambda scope: rssm.initial(scope, 3))(params)
  h0 = np.tanh(np.asarray(params['initial'], np.float64))
  np.testing.assert_allclose(init['deter'], np.broadcast_to(h0, (3, 16)), rtol=1e-6)
  y = np_silu(np_layernorm(h0 @ params['img_out/kernel'], params['img_out/norm/scale'], params['img_out/norm/offset']))
  logits = (y @ params['img_stats/kernel'] + params['img_stats/bias']).reshape(4, 5)
  np.testing.assert_array_equal(init['stoch'], np.broadcast_to(np.eye(5)[logits.argmax(-1)], (3, 4, 5)))
  assert (init['logits'] == 0).all()
  state_sum = lambda p: sum(x.sum() for x in modules.apply(rssm.initial, p, 2).values())
  grads = jax.jit(jax.grad(state_sum))(params)
  assert float(jnp.abs(grads['img_stats/kernel']).sum()) == 0  # z0 is a mode: no gradient.
  assert float(jnp.abs(grads['initial']).sum()) > 0


def test_posterior_is_obs_out_over_deter_and_embed(params):
  # §2.3 step 6: the posterior's logits come from a Dense block over [h_t; e_t].
  prev = {'deter': normal(B, 16, seed=1),
          'stoch': jnp.asarray(np.eye(5)[np.random.default_rng(2).integers(0, 5, (B, 4))], jnp.float32),
          'logits': normal(B, 4, 5, seed=3)}
  embed = normal(B, E, seed=5)
  post, _ = jit_apply(RSSM.obs_step)(params, prev, normal(B, A, seed=4), embed,
                                     jnp.array([False, False]), jax.random.PRNGKey(7))
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  x = np.concatenate([np.asarray(post['deter'], np.float64), np.asarray(embed, np.float64)], -1)
  y = np_silu(np_layernorm(x @ p['obs_out/kernel'], p['obs_out/norm/scale'], p['obs_out/norm/offset']))
  logits = (y @ p['obs_stats/kernel'] + p['obs_stats/bias']).reshape(B, 4, 5)
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs = 0.99 * probs / probs.sum(-1, keepdims=True) + 0.01 / 5
  np.testing.assert_allclose(np.exp(np.asarray(post['logits'], np.float64)), probs, rtol=1e-4, atol=1e-6)


def test_is_first_resets_to_initial_state_with_zero_action(params):
  rssm = RSSM
  prev = {'deter': normal(B, 16, seed=1),
          'stoch': jnp.asarray(np.eye(5)[np.random.default_rng(2).integers(0, 5, (B, 4))], jnp.float32),
          'logits': normal(B, 4, 5, seed=3)}
  action = normal(B, A, seed=4)
  embed = normal(B, E, seed=5)
  key = jax.random.PRNGKey(7)
  obs_step = jit_apply(rssm.obs_step)
  step = lambda *args: obs_step(params, *args)
  post, prior = step(prev, action, embed, jnp.array([True, False]), key)
  init = initial_state(params)
  post_init, prior_init = step(init, jnp.zeros_like(action), embed, jnp.array([False, False]), key)
  post_keep, prior_keep = step(prev, action, embed, jnp.array([False, False]), key)
  for k in post:
    np.testing.assert_allclose(post[k][0], post_init[k][0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(prior[k][0], prior_init[k][0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(post[k][1], post_keep[k][1], rtol=1e-6, atol=1e-6)
  assert not np.allclose(post_keep['deter'][0], post['deter'][0])


def test_is_first_clears_a_non_finite_carry(params):
  # A NaN state or action left over from a broken episode must not leak into the
  # next episode: reset selects the initial state rather than mixing with it.
  prev = {'deter': jnp.full((B, 16), jnp.nan), 'stoch': jnp.full((B, 4, 5), jnp.inf),
          'logits': jnp.full((B, 4, 5), jnp.nan)}
  action = jnp.full((B, A), jnp.nan)
  obs_step = jit_apply(RSSM.obs_step)
  post, prior = obs_step(params, prev, action, normal(B, E, seed=5), jnp.array([True, True]),
                         jax.random.PRNGKey(0))
  for state in (post, prior):
    for k, v in state.items():
      assert np.isfinite(np.asarray(v)).all(), k


def test_observe_scan_equals_python_loop_of_obs_step(params):
  rssm = RSSM
  embed, actions, is_first, key = rssm_inputs(1)
  post, prior = jit_apply(rssm.observe)(params, embed, actions, is_first, key)
  state = initial_state(params)
  obs_step = jit_apply(rssm.obs_step)
  for t, key_t in enumerate(jax.random.split(key, T)):
    state, prior_t = obs_step(params, state, actions[:, t], embed[:, t], is_first[:, t], key_t)
    for k in state:
      np.testing.assert_allclose(post[k][:, t], state[k], rtol=1e-5, atol=1e-5)
      np.testing.assert_allclose(prior[k][:, t], prior_t[k], rtol=1e-5, atol=1e-5)
  unrolled = small_rssm(unroll=True)
  post_u, _ = jit_apply(unrolled.observe)(params, embed, actions, is_first, key)
  np.testing.assert_allclose(post_u['deter'], post['deter'], rtol=1e-5, atol=1e-5)


def test_img_step_clips_and_flattens_actions(params):
  rssm = RSSM
  state = initial_state(params)
  key = jax.random.PRNGKey(2)
  img_step = jit_apply(rssm.img_step)
  step = lambda a: img_step(params, state, a, key)
  big = step(jnp.array([[3.0, -2.0, 0.5], [0.1, 0.2, -9.0]]))
  clipped = step(jnp.array([[1.0, -1.0, 0.5], [0.1, 0.2, -1.0]]))
  np.testing.assert_allclose(big['deter'], clipped['deter'], rtol=1e-6)
  rssm2 = nets.RSSM(deter=16, units=12, stoch=4, classes=5)
  params2 = init(rssm2.img_step, state, jnp.zeros((B, 2, 3)), key)
  assert params2['img_in/kernel'].shape == (20 + 6, 12)


def np_kl(p_logits, q_logits):
  p = np.exp(p_logits)
  return (p * (p_logits - q_logits)).sum(-1).sum(-1)


def test_kl_loss_free_bits_per_element_and_stop_gradients():
  rssm = RSSM
  rng = np.random.default_rng(0)
  logits = lambda scale: jax.nn.log_softmax(jnp.asarray(rng.normal(0, scale, (2, 3, 4, 5)), jnp.float32))
  post = {'deter': jnp.zeros((2, 3, 16)), 'stoch': jnp.zeros((2, 3, 4, 5)), 'logits': logits(2.0)}
  prior = {'deter': jnp.zeros((2, 3, 16)), 'stoch': jnp.zeros((2, 3, 4, 5)), 'logits': logits(2.0)}
  prior['logits'] = prior['logits'].at[0].set(post['logits'][0] + 0.01)  # Tiny KL for b = 0.
  dyn, rep, kl = rssm.kl_loss(post, prior, free=1.0)
  want = np_kl(np.asarray(post['logits'], np.float64), np.asarray(jax.nn.log_softmax(prior['logits']), np.float64))
  assert (want[0] < 1).all() and (want[1] > 1).all()
  np.testing.assert_allclose(kl, want, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(dyn, np.maximum(1, want), rtol=1e-4)
  np.testing.assert_allclose(rep, np.maximum(1, want), rtol=1e-4)

  def grads(which):
    def loss(post_logits, prior_logits):
      d, r, _ = rssm.kl_loss({**post, 'logits': post_logits}, {**prior, 'logits': prior_logits})
      return (d if which == 'dyn' else r).sum()
    return jax.grad(loss, (0, 1))(post['logits'], prior['logits'])

  dyn_post, dyn_prior = grads('dyn')
  rep_post, rep_prior = grads('rep')
  assert float(jnp.abs(dyn_post).sum()) == 0 and float(jnp.abs(rep_prior).sum()) == 0
  assert float(jnp.abs(dyn_prior[0]).sum()) == 0 and float(jnp.abs(rep_post[0]).sum()) == 0  # Below free.
  assert float(jnp.abs(dyn_prior[1]).sum()) > 0 and float(jnp.abs(rep_post[1]).sum()) > 0


def test_rssm_float16_compute_keeps_state_dtypes():
  rssm = small_rssm(dtype=jnp.float16)
  params = init(rssm.observe, *rssm_inputs())
  assert all(v.dtype == jnp.float32 for v in params.values())
  post, prior = jit_apply(rssm.observe)(params, *rssm_inputs())
  assert post['deter'].dtype == jnp.float16
  assert post['stoch'].dtype == jnp.float32 and post['logits'].dtype == jnp.float32
  assert rssm.get_feat(post).dtype == jnp.float16
  assert np.isfinite(np.asarray(post['logits'])).all()
