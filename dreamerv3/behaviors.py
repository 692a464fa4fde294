"""Behaviours: what acts in the env and what trains its policy (algorithm.md §3, §5.4).

Each behaviour offers the same pure interface to agent.Dreamer:
  init(scope, post, data)           creates its parameters (post [B, T, ...])
  init_state(params)                -> (optimiser states, return-normaliser states)
  policy(scope, latent, key)        -> actions [N, A] from RSSM states [N, ...]
  train(state, start, post, data, key) -> (state, metrics, finite)
Parameter paths start with the behaviour's prefix ('' for the task behaviour,
'expl_' for the exploration behaviour), so two behaviours never share weights.
"""

import jax
import jax.numpy as jnp

from . import agent, nets

f32 = jnp.float32
sg = jax.lax.stop_gradient


def make(name, wm, act_space, config, dtype, prefix):
  """The behaviour class named by task_behavior / expl_behavior."""
  classes = {'Greedy': Greedy, 'Random': Random, 'Explore': Explore}
  if name not in classes:
    raise ValueError(
        f"Unknown behaviour '{name}': task_behavior and expl_behavior must be one of "
        f"{', '.join(classes)} (expl_behavior may also be None).")
  return classes[name](wm, act_space, config, dtype, prefix)


class Greedy:
  """The task behaviour: actor-critic on the reward head's predictions (§3)."""

  def __init__(self, wm, act_space, config, dtype, prefix=''):
    self.wm = wm
    self.ac = agent.ActorCritic(
        wm, act_space, config, dtype, {'extr': wm.reward}, {'extr': 1.0}, prefix)

  def init(self, scope, post, data):
    self.ac.init(scope, self.wm.rssm.get_feat(post))

  def init_state(self, params):
    return self.ac.init_state(params)

  def policy(self, scope, latent, key):
    return self.ac.policy(scope, self.wm.rssm.get_feat(latent), key)

  def train(self, state, start, post, data, key):
    return self.ac.train(state, start, key)


class Random:
  """Uniformly random actions: one-hot for discrete, U(low, high) for continuous."""

  def __init__(self, wm, act_space, config, dtype, prefix=''):
    space = act_space['action']
    self.discrete = agent.is_discrete(space)
    self.shape = tuple(space.shape)
    self.low, self.high = jnp.asarray(space.low, f32), jnp.asarray(space.high, f32)

  def init(self, scope, post, data):
    pass

  def init_state(self, params):
    return {}, {}

  def policy(self, scope, latent, key):
    batch = latent['deter'].shape[:-1]
    if self.discrete:
      index = jax.random.randint(key, batch, 0, self.shape[-1])
      return jax.nn.one_hot(index, self.shape[-1], dtype=f32)
    return jax.random.uniform(key, batch + self.shape, f32, self.low, self.high)

  def train(self, state, start, post, data, key):
    return state, {}, jnp.array(True)


class Explore:
  """Plan2Explore-style exploration by ensemble disagreement.

  disag_models MLP heads predict the next disag_target (the stoch sample by
  default) from [deter, stoch, action]; the standard deviation of their
  predictions, averaged over the target dims, is an intrinsic reward. The
  actor-critic maximises expl_rewards.extr * extrinsic + expl_rewards.disag *
  intrinsic, each critic with its own return normaliser. The ensemble trains
  with its own optimiser (expl_opt) on the replayed posterior sequences.
  """

  def __init__(self, wm, act_space, config, dtype, prefix=''):
    self.wm, self.config = wm, config
    for key in config.disag_target:
      if key not in ('deter', 'stoch'):
        raise ValueError(f"disag_target entries must be 'deter' or 'stoch', got {key!r}.")
    rssm = wm.rssm
    sizes = {'deter': rssm.deter, 'stoch': rssm.stoch * rssm.classes}
    size = sum(sizes[k] for k in config.disag_target)
    self.head = nets.MLPHead((size,), **agent.kwargs(config.disag_head), dtype=dtype)
    self.name = prefix + 'disag'
    self.opt = agent.Optimizer(self.name, [self.name], config.expl_opt, dtype == jnp.float16)
    rewards = {'extr': wm.reward, 'disag': self.intrinsic}
    scales = {'extr': config.expl_rewards.extr, 'disag': config.expl_rewards.disag}
    self.ac = agent.ActorCritic(wm, act_space, config, dtype, rewards, scales, prefix)

  def _inputs(self, state, action):
    """[..., F + A] = [deter, stoch, action]."""
    action = action.reshape(action.shape[:state['deter'].ndim - 1] + (-1,))
    return jnp.concatenate([self.wm.rssm.get_feat(state), action.astype(self.wm.rssm.dtype)], -1)

  def _target(self, state):
    lead = state['deter'].shape[:-1]
    parts = [state[k].reshape(lead + (-1,)).astype(f32) for k in self.config.disag_target]
    return jnp.concatenate(parts, -1)

  def _predict(self, scope, inputs):
    """Ensemble predictions [M, ..., D]."""
    members = range(self.config.disag_models)
    return [self.head(scope.child(self.name).child(str(i)), inputs) for i in members]

  def intrinsic(self, scope, traj):
    """Disagreement [L, N] about the successor of each of the L (state, action) of traj."""
    preds = jnp.stack([d.mean() for d in self._predict(scope, self._inputs(traj, traj['action']))])
    return preds.std(0).mean(-1)

  def loss(self, scope, post, action):
    """Ensemble regression of the next target: inputs at t < T-1, targets at t + 1."""
    inputs = self._inputs(jax.tree.map(lambda x: x[:, :-1], post), action[:, :-1])
    target = sg(self._target(jax.tree.map(lambda x: x[:, 1:], post)))
    loss = -sum(d.log_prob(target).mean() for d in self._predict(scope, inputs))
    return loss, {'loss/disag': loss}

  def init(self, scope, post, data):
    self.ac.init(scope, self.wm.rssm.get_feat(post))
    self.loss(scope, post, data['action'])

  def init_state(self, params):
    opts, norms = self.ac.init_state(params)
    return {**opts, self.name: self.opt.init(params)}, norms

  def policy(self, scope, latent, key):
    return self.ac.policy(scope, self.wm.rssm.get_feat(latent), key)

  def train(self, state, start, post, data, key):
    opt = dict(state['opt'])
    params, opt[self.name], metrics, finite, mets = self.opt.update(
        state['params'], opt[self.name], self.loss, post, data['action'])
    metrics.update(mets)
    state, mets, ok = self.ac.train({**state, 'params': params, 'opt': opt}, start, key)
    metrics.update(mets)
    return state, metrics, finite & ok
