"""Tests of agent.py and behaviors.py: the update order, which parameters each
optimiser changes, the slow critic, loss scaling and non-finite steps, the
λ-return targets, and acting. The configs are the debug block with the vector
MLPs and the batch shrunk too, so that the tests stay fast."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from embodied.core.base import Space
from embodied.core.config import load_config, load_yaml

from dreamerv3 import agent as agentlib
from dreamerv3 import behaviors, modules

ROOT = pathlib.Path(__file__).resolve().parent.parent
SMALL = ['--configs', 'debug', '--encoder.mlp_layers', '2', '--decoder.mlp_layers', '2',
         '--encoder.mlp_units', '64', '--decoder.mlp_units', '64', '--batch_size', '4',
         '--batch_length', '8']
OBS_SPACE = {
    'image': Space(np.uint8, (64, 64, 3)), 'vector': Space(np.float32, (3,)),
    'reward': Space(np.float32), 'is_first': Space(bool), 'is_last': Space(bool),
    'is_terminal': Space(bool)}
DISC = {'action': Space(np.float32, (5,), 0, 1), 'reset': Space(bool)}
CONT = {'action': Space(np.float32, (2,), -1, 1), 'reset': Space(bool)}


def make_config(*args):
  return load_config(load_yaml(ROOT / 'configs.yaml'), SMALL + list(args))[0]


def make_batch(config, act_space, seed=0):
  """Random batch [B, T, ...] of the dummy spaces; is_first[0] = True as replay gives it."""
  rng = np.random.default_rng(seed)
  B, T = config.batch_size, config.batch_length
  data = {
      'image': rng.integers(0, 256, (B, T, 64, 64, 3), dtype=np.uint8),
      'vector': rng.normal(size=(B, T, 3)).astype(np.float32),
      'reward': rng.normal(size=(B, T)).astype(np.float32),
      'is_first': np.zeros((B, T), bool), 'is_last': np.zeros((B, T), bool),
      'is_terminal': rng.uniform(size=(B, T)) < 0.1}
  space = act_space['action']
  if agentlib.is_discrete(space):
    index = rng.integers(0, space.shape[0], (B, T))
    data['action'] = np.eye(space.shape[0], dtype=np.float32)[index]
  else:
    data['action'] = rng.uniform(-1, 1, (B, T) + space.shape).astype(np.float32)
  data['is_first'][:, 0] = True
  return data


def numpy_tree(tree):
  return jax.tree.map(np.asarray, tree)


@pytest.fixture(scope='module')
def disc():
  """A discrete-action Dreamer, its initial state, and the states after 1 and 2 updates."""
  config = make_config()
  dreamer = agentlib.Dreamer(OBS_SPACE, DISC, config, jnp.float32)
  data = make_batch(config, DISC)
  state0 = jax.jit(dreamer.init)(jax.random.PRNGKey(0), data)
  carry = dreamer.initial_carry(state0['params'], config.batch_size)
  train = jax.jit(dreamer.train)
  state1, carry1, metrics1 = train(state0, data, carry)
  state2, _, metrics2 = train(state1, data, carry1)
  return dict(config=config, dreamer=dreamer, data=data, carry=carry, train=train,
              states=[numpy_tree(s) for s in (state0, state1, state2)],
              metrics=[numpy_tree(m) for m in (metrics1, metrics2)])


def changed(before, after, group):
  keys = modules.subtree(before, group)
  return {k: not np.array_equal(before[k], after[k]) for k in keys}


# Preprocessing.

def test_preprocess_scales_images_and_derives_cont():
  obs = {'image': np.full((2, 3, 4, 4, 3), 255, np.uint8), 'small': np.full((2, 3), 7, np.uint8),
         'reward': np.ones((2, 3), np.float64), 'is_first': np.zeros((2, 3), bool),
         'is_terminal': np.array([[0, 1, 0], [1, 0, 0]], bool), 'log_x': np.zeros((2, 3))}
  out = agentlib.preprocess(obs, jnp.bfloat16)
  assert out['image'].dtype == jnp.bfloat16 and float(out['image'].max()) == 1.0
  assert out['small'].dtype == jnp.float32 and float(out['small'][0, 0]) == 7.0  # Rank 2: no image.
  assert out['reward'].dtype == jnp.float32
  np.testing.assert_array_equal(out['cont'], 1 - obs['is_terminal'])
  assert 'log_x' not in out


def test_action_spaces():
  assert agentlib.is_discrete(DISC['action']) and not agentlib.is_discrete(CONT['action'])
  with pytest.raises(ValueError, match='OneHotAction'):
    agentlib.is_discrete(Space(np.int32, (), 0, 4))


# The optimiser wrapper.

class _Toy:
  """Two parameter groups 'a' and 'b' and a quadratic loss that depends on both."""

  params = {'a/w': jnp.array([1.0, -2.0]), 'b/w': jnp.array([3.0])}

  @staticmethod
  def loss(scope, factor):
    a, b = scope.param('a/w', None, (2,)), scope.param('b/w', None, (1,))
    loss = factor * (jnp.square(a).sum() + jnp.square(a[0] * b[0]))
    return loss, {'loss': loss}


def _opt_config(clip=100.0):
  return make_config().actor_opt.update({'lr': 0.1, 'clip': clip})


def test_optimizer_updates_only_its_own_parameters():
  opt = agentlib.Optimizer('a', ['a'], _opt_config(), loss_scaling=False)
  state = opt.init(_Toy.params)
  params, state, aux, finite, metrics = opt.update(_Toy.params, state, _Toy.loss, 1.0)
  assert bool(finite) and float(aux['loss']) == pytest.approx(1 + 4 + 9)
  np.testing.assert_array_equal(params['b/w'], _Toy.params['b/w'])   # b has a gradient too.
  # First Adam step moves every coordinate by lr against the gradient's sign.
  np.testing.assert_allclose(params['a/w'], [0.9, -1.9], rtol=1e-5)
  grad_a = np.array([2 * 1 + 2 * 1 * 9, 2 * -2.0])
  assert float(metrics['a_grad_norm']) == pytest.approx(np.linalg.norm(grad_a), rel=1e-5)


def test_loss_scaling_skips_nonfinite_and_halves_the_scale():
  opt = agentlib.Optimizer('a', ['a'], _opt_config(), loss_scaling=True)
  state = opt.init(_Toy.params)
  assert float(state['scale']['scale']) == 1e4
  # A finite step: same update as without scaling, the good-step counter grows.
  params, good, _, finite, metrics = opt.update(_Toy.params, state, _Toy.loss, 1.0)
  assert bool(finite) and int(good['scale']['good_steps']) == 1
  np.testing.assert_allclose(params['a/w'], [0.9, -1.9], rtol=1e-5)
  assert float(metrics['a_loss_scale']) == 1e4
  # A loss of 1e35 overflows float32 once scaled: the update is skipped, scale halved.
  params2, bad, _, finite, _ = opt.update(params, good, _Toy.loss, 1e35)
  assert not bool(finite)
  assert float(bad['scale']['scale']) == 5e3 and int(bad['scale']['good_steps']) == 0
  np.testing.assert_array_equal(params2['a/w'], params['a/w'])
  for new, old in zip(jax.tree.leaves(bad['opt']), jax.tree.leaves(good['opt'])):
    np.testing.assert_array_equal(new, old)


def test_float32_nonfinite_gradients_skip_the_update():
  opt = agentlib.Optimizer('a', ['a'], _opt_config(), loss_scaling=False)
  state = opt.init(_Toy.params)
  params, new_state, _, finite, _ = opt.update(_Toy.params, state, _Toy.loss, jnp.nan)
  assert not bool(finite)
  np.testing.assert_array_equal(params['a/w'], _Toy.params['a/w'])
  assert int(new_state['opt'][1].count) == 0   # Adam moments untouched.


# The full training step.

def test_world_model_loss_decreases_on_a_fixed_batch(disc):
  state, carry, losses, reward_losses = disc['states'][0], disc['carry'], [], []
  for _ in range(15):
    state, carry, metrics = disc['train'](state, disc['data'], carry)
    losses.append(float(metrics['model_loss']))
    reward_losses.append(float(metrics['loss/reward']))
    for key, value in metrics.items():
      assert np.isfinite(value), key
  assert int(metrics['nonfinite']) == 0
  assert np.mean(losses[-3:]) < 0.9 * np.mean(losses[:3]), losses
  assert reward_losses[-1] < reward_losses[0], reward_losses


def test_first_update_changes_model_actor_and_critic(disc):
  before, after = disc['states'][0]['params'], disc['states'][1]['params']
  assert sorted({k.split('/')[0] for k in before}) == sorted(
      agentlib.MODEL + ('actor', 'critic', 'slow_critic'))
  for group in agentlib.MODEL + ('actor', 'critic'):
    flags = changed(before, after, group)
    assert any(flags.values()), group
  # The reward and critic outputs start at zero and move with the first update.
  assert np.abs(after['reward/out/kernel']).max() > 0
  assert np.abs(after['critic/out/kernel']).max() > 0
  for name in ('model', 'actor', 'critic'):
    assert np.isfinite(disc['metrics'][0][f'{name}_grad_norm']), name


def test_slow_critic_copies_then_follows_by_ema(disc):
  fraction = disc['config'].slow_critic_fraction
  p1, p2 = disc['states'][1]['params'], disc['states'][2]['params']
  critic = modules.subtree(p1, 'critic')
  assert critic
  for key in critic:
    slow = 'slow_' + key
    np.testing.assert_array_equal(p1[slow], p1[key])   # First update: a copy.
    expected = fraction * p2[key] + (1 - fraction) * p1[slow]
    np.testing.assert_allclose(p2[slow], expected, rtol=1e-6, atol=1e-7)


def _imagination_pieces(dreamer, params, start, retnorm, key):
  """The actor-critic losses and their trajectory's rewards, continuation and values [H+1, N]."""
  ac, scope = dreamer.task.ac, modules.Scope(params)
  losses, (_, metrics) = ac.loss(scope, start, retnorm, key)
  traj, _ = ac.imagine(scope, {k: v for k, v in start.items() if k != 'cont'}, key)
  feat = dreamer.wm.rssm.get_feat(traj)
  reward = dreamer.wm.reward(scope, traj)
  cont = dreamer.wm.heads['cont'](scope.child('cont'), feat).mode()
  value = ac.critic(scope.child('critic'), feat).mean()
  return dict(metrics, critic_loss=losses['critic'], reward=reward, cont=cont, value=value)


def test_imagination_uses_updated_model_and_critic_targets_equal_actor_returns(disc):
  """Recomputes the second update's actor-critic half by hand (§3.1, §3.4, §3.8)."""
  dreamer, config = disc['dreamer'], disc['config']
  state1, state2 = disc['states'][1], disc['states'][2]
  metrics = disc['metrics'][1]
  wm_key, task_key = jax.random.split(dreamer.key(0, 1), 2)
  data = agentlib.preprocess(disc['data'], jnp.float32)
  carry = dreamer.initial_carry(state1['params'], config.batch_size)
  forward = jax.jit(lambda p: dreamer.wm.loss(modules.Scope(p), data, carry, wm_key)[1][0])
  post = forward(state1['params'])   # Start states from the pre-update forward pass.
  start = {k: v.reshape((-1,) + v.shape[2:]) for k, v in post.items()}
  start['cont'] = data['cont'].reshape(-1)
  pieces = jax.jit(lambda p: _imagination_pieces(dreamer, p, start, state1['retnorm'], task_key))
  updated = {**state1['params'], **modules.subtree(state2['params'], agentlib.MODEL)}
  new, old = numpy_tree(pieces(updated)), numpy_tree(pieces(state1['params']))
  for key in ('ret_mean', 'reward_mean', 'value_mean', 'loss/actor'):
    error_new, error_old = abs(new[key] - metrics[key]), abs(old[key] - metrics[key])
    assert error_new <= 1e-5 * (1 + abs(metrics[key])), key
    if key != 'value_mean':   # The critic's outputs start at zero: ~1e-8 either way.
      assert error_old > 10 * error_new, key
  np.testing.assert_allclose(new['critic_loss'], metrics['loss/critic'], rtol=1e-5)
  # The returns are the λ-returns of §3.4 and the weights those of §3.6, computed
  # here in float64 from the rollout's rewards, continuation flags and values.
  gamma, lam = 1 - 1 / config.horizon, config.return_lambda
  reward, cont, value = (new[k].astype(np.float64) for k in ('reward', 'cont', 'value'))
  ret = np.zeros_like(value)
  ret[-1] = value[-1]
  for k in reversed(range(config.imag_horizon)):
    ret[k] = reward[k + 1] + gamma * cont[k + 1] * ((1 - lam) * value[k + 1] + lam * ret[k + 1])
  np.testing.assert_allclose(new['ret_mean'], ret[:-1].mean(), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(new['ret_std'], ret[:-1].std(), rtol=1e-3, atol=1e-5)
  weight = np.cumprod(np.concatenate([np.asarray(start['cont'])[None], gamma * cont[1:]]), 0)
  np.testing.assert_allclose(new['weight_mean'], weight.mean(), rtol=1e-5)


@pytest.mark.parametrize('act_space', [DISC, CONT], ids=['reinforce', 'backprop'])
def test_actor_and_critic_losses_depend_only_on_their_own_parameters(act_space):
  """ActorCritic.train takes one gradient of the sum of the actor's and the critic's
  losses: that is each optimiser's own update only if neither loss reaches the other's
  parameters (REINFORCE and the pathwise gradient, which flows through the values)."""
  config = make_config()
  dreamer = agentlib.Dreamer(OBS_SPACE, act_space, config, jnp.float32)
  data = make_batch(config, act_space)
  state = jax.jit(dreamer.init)(jax.random.PRNGKey(0), data)
  params = dict(state['params'])
  params['critic/out/kernel'] = 0.1 * jnp.ones_like(params['critic/out/kernel'])  # Values != 0.
  ac = dreamer.task.ac
  n = config.batch_size * config.batch_length
  start = dict(dreamer.initial_carry(params, n)[0])   # The learned initial state, varied.
  start['deter'] = start['deter'] + jax.random.normal(jax.random.PRNGKey(1), start['deter'].shape)
  start['cont'] = jnp.ones((n,))

  def loss(own, which):
    losses, _ = ac.loss(modules.Scope({**params, **own}), start, state['retnorm'],
                        jax.random.PRNGKey(2))
    return losses[which]

  own = {k: v for k, v in params.items() if k.split('/')[0] in ('actor', 'critic')}
  for which, other in (('actor', 'critic'), ('critic', 'actor')):
    grads = jax.jit(jax.grad(loss), static_argnums=1)(own, which)
    norm = lambda prefix: sum(float(jnp.abs(g).sum()) for k, g in grads.items()
                              if k.startswith(prefix + '/'))
    assert norm(which) > 0, which
    assert norm(other) == 0, f'the {which} loss reaches the {other} parameters'


def test_nonfinite_batch_skips_the_model_update_and_counts(disc):
  state, carry = disc['states'][1], disc['carry']
  bad = dict(disc['data'], reward=np.full_like(disc['data']['reward'], np.nan))
  for expected in (1, 2):
    new, _, metrics = disc['train'](state, bad, carry)
    assert int(metrics['nonfinite']) == expected
    for group in agentlib.MODEL:
      assert not any(changed(state['params'], numpy_tree(new['params']), group).values()), group
    state = numpy_tree(new)
  assert int(state['step']) == int(disc['states'][1]['step']) + 2
  _, _, metrics = disc['train'](state, disc['data'], carry)
  assert int(metrics['nonfinite']) == 0


# Acting.

def test_policy_resets_on_is_first(disc):
  dreamer, params = disc['dreamer'], disc['states'][1]['params']
  obs = {k: v[:, 3] for k, v in disc['data'].items() if k != 'action'}
  policy = jax.jit(dreamer.policy, static_argnames='mode')
  fresh = dreamer.initial_carry(params, len(obs['reward']))
  # Some other state: what the policy reached after a few steps.
  other = fresh
  for t in range(3):
    _, other = policy(params, {k: v[:, t] for k, v in disc['data'].items()}, other, t)
  outs = {}
  for first in (True, False):
    step_obs = dict(obs, is_first=np.full_like(obs['is_first'], first))
    for name, state in (('fresh', fresh), ('other', other)):
      outs[first, name] = numpy_tree(policy(params, step_obs, state, 7, mode='eval'))
  (act_a, post_a), (act_b, post_b) = outs[True, 'fresh'], outs[True, 'other']
  np.testing.assert_allclose(post_a[0]['deter'], post_b[0]['deter'], rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(act_a['action'], act_b['action'])
  assert not np.allclose(outs[False, 'fresh'][1][0]['deter'], outs[False, 'other'][1][0]['deter'])
  actions = act_a['action']
  np.testing.assert_array_equal(actions.sum(-1), 1)   # One-hot samples in every mode.
  np.testing.assert_array_equal(post_a[1], actions)   # The state keeps the sampled action.


def test_random_behaviour_samples_uniformly():
  config = make_config('--task_behavior', 'Random')
  latent = {'deter': jnp.zeros((4000, 8))}
  for space, check in ((DISC, 'onehot'), (CONT, 'box')):
    dreamer = agentlib.Dreamer(OBS_SPACE, space, config, jnp.float32)
    assert isinstance(dreamer.task, behaviors.Random)
    action = np.asarray(dreamer.task.policy(None, latent, jax.random.PRNGKey(0)))
    if check == 'onehot':
      np.testing.assert_array_equal(action.sum(-1), 1)
      np.testing.assert_allclose(action.mean(0), 0.2, atol=0.03)
    else:
      assert action.shape == (4000, 2) and action.min() >= -1 and action.max() <= 1
      np.testing.assert_allclose(action.mean(0), 0, atol=0.05)
  with pytest.raises(ValueError, match='Unknown behaviour'):
    agentlib.Dreamer(OBS_SPACE, DISC, make_config('--task_behavior', 'Greedyy'), jnp.float32)


# Precision, continuous actions and the exploration behaviour.

def test_float16_uses_loss_scaling_for_every_optimiser():
  config = make_config('--expl_behavior', 'Explore')
  for dtype, scaling in ((jnp.float16, True), (jnp.bfloat16, False), (jnp.float32, False)):
    dreamer = agentlib.Dreamer(OBS_SPACE, CONT, config, dtype)
    opts = [dreamer.model_opt, dreamer.expl.opt]
    opts += [opt for behavior in dreamer.behaviors for opt in behavior.ac.opts.values()]
    assert len(opts) == 7
    assert all(opt.loss_scaling == scaling for opt in opts)


@pytest.mark.slow
def test_continuous_explore_agent_in_float16():
  """Continuous actions (backprop actor), Explore, and float16 loss scaling together."""
  config = make_config('--expl_behavior', 'Explore', '--disag_models', '3')
  dreamer = agentlib.Dreamer(OBS_SPACE, CONT, config, jnp.float16)
  data = make_batch(config, CONT)
  states = [numpy_tree(jax.jit(dreamer.init)(jax.random.PRNGKey(0), data))]
  carry = dreamer.initial_carry(states[0]['params'], config.batch_size)
  train = jax.jit(dreamer.train)
  # Scaled by 1e4 the image loss overflows float16 in the backward pass: the scale
  # halves on each such step (skipping it) until the gradients are finite.
  model_scales = []
  for _ in range(12):
    state, carry, metrics = train(states[-1], data, carry)
    states.append(numpy_tree(state))
    model_scales.append(float(metrics['model_loss_scale']))
  metrics = numpy_tree(metrics)
  assert model_scales[0] == 5e3 and model_scales[-1] < model_scales[0], model_scales
  assert int(metrics['nonfinite']) == 0, model_scales
  before, after = states[0]['params'], states[-1]['params']
  for group in agentlib.MODEL + ('actor', 'critic', 'expl_disag', 'expl_actor', 'expl_critic',
                                 'expl_critic_disag'):
    assert any(changed(before, after, group).values()), group
  for key in ('expl_disag_reward_mean', 'expl_loss/disag', 'expl_loss/actor', 'model_loss_scale'):
    assert np.isfinite(metrics[key]), key
  assert float(metrics['expl_disag_reward_mean']) > 0   # The ensemble members disagree.
  assert all(np.isfinite(v).all() for v in after.values())
  scales = [s['scale']['scale'] for s in states[-1]['opt'].values()]
  assert all(0 < s <= 1e4 for s in scales)
  policy = jax.jit(dreamer.policy, static_argnames='mode')
  obs = {k: v[:, 0] for k, v in data.items() if k != 'action'}
  state = dreamer.initial_carry(after, config.batch_size)
  task, _ = policy(after, obs, state, 0, mode='train')
  expl, _ = policy(after, obs, state, 0, mode='explore')
  assert task['action'].shape == expl['action'].shape == (config.batch_size, 2)
  assert not np.allclose(task['action'], expl['action'])   # Different actors.
