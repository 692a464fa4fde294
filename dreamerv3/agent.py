"""The DreamerV3 agent as pure functions (algorithm.md §2, §3, §5).

Nothing here holds mutable state. The whole training state is one dict of arrays

  {'params':  flat dict 'module/path' -> array (float32),
   'opt':     optimiser name -> {'opt': optax state over the flat vector of its
              parameters, 'scale': loss-scale state},
   'retnorm': critic name -> {'lo', 'hi'} percentile EMA (§3.5),
   'step':    int32 number of updates so far (RNG stream and slow-critic schedule),
   'nonfinite': int32 consecutive updates that had non-finite gradients}

that goes into `Dreamer.train` and comes out updated, so the caller (jaxagent.py)
decides about jit, devices and donation. Top-level parameter paths: encoder, rssm,
decoder, reward, cont (world model), actor, critic, slow_critic (task behaviour).
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from . import jaxutils, modules, nets

f32 = jnp.float32
sg = jax.lax.stop_gradient

MODEL = ('encoder', 'rssm', 'decoder', 'reward', 'cont')
VIDEO_SEQUENCES = 6   # Sequences shown in the open-loop report video.
CONTEXT = 5           # Report steps observed before imagining open loop.


def is_discrete(space):
  """One-hot float actions (low 0, high 1) are discrete; [-1, 1] floats are continuous."""
  if space.discrete:
    raise ValueError(
        f'The agent needs one-hot or continuous float actions, got {space}. Wrap a '
        f'discrete env with embodied.core.wrappers.OneHotAction.')
  return bool(np.all(space.low == 0) and np.all(space.high == 1))


def preprocess(obs, dtype):
  """Images (uint8, rank > 3 with batch dims) -> dtype in [0, 1]; the rest float32 (§2.1)."""
  out = {}
  for key, value in obs.items():
    if key.startswith('log_') or key == 'reset':
      continue
    if value.dtype == jnp.uint8 and value.ndim > 3:
      out[key] = value.astype(dtype) / 255
    else:
      out[key] = value.astype(f32)
  out['cont'] = 1 - out['is_terminal']
  return out


def tree_where(cond, new, old):
  return jax.tree.map(lambda n, o: jnp.where(cond, n, o), new, old)


def kwargs(config):
  """A config block as constructor keyword arguments."""
  return {k: (tuple(v) if isinstance(v, list) else v) for k, v in dict(config).items()}


class Optimizer:
  """One optax optimiser over the parameters under some top-level paths (§5.1).

  With loss scaling (float16, §5.2) the loss is multiplied by the scale and the
  gradients divided by it. Non-finite gradients skip the update in every
  precision (parameters and moments unchanged); the caller counts them.
  """

  def __init__(self, name, paths, config, loss_scaling):
    self.name, self.paths, self.loss_scaling = name, tuple(paths), loss_scaling
    options = kwargs(config)
    if (options['opt'], options['wd'], options['warmup'], options.get('lateclip', 0)) != (
        'adam', 0, 0, 0):
      raise NotImplementedError(
          f"{name}: only opt 'adam' with wd 0, warmup 0 and lateclip 0 is implemented "
          f"(the defaults), got {options}.")
    self.tx = jaxutils.make_optimizer(options['lr'], options['eps'], options['clip'])

  def init(self, params):
    flat, _ = ravel_pytree(modules.subtree(params, self.paths))
    return {'opt': self.tx.init(flat), 'scale': jaxutils.loss_scale_init()}

  def loss_scale(self, state):
    """The factor the loss is multiplied by before differentiation (1 without scaling)."""
    return state['scale']['scale'] if self.loss_scaling else 1.0

  def update(self, params, state, loss_fn, *args):
    """loss_fn(scope, *args) -> (loss, aux). Returns (params, state, aux, finite, metrics)."""
    own = modules.subtree(params, self.paths)
    scale = self.loss_scale(state)

    def scaled_loss(own):
      loss, aux = loss_fn(modules.Scope({**params, **own}), *args)
      return loss * scale, aux

    grads, aux = jax.grad(scaled_loss, has_aux=True)(own)
    params, state, finite, metrics = self.apply(params, state, grads)
    return params, state, aux, finite, metrics

  def apply(self, params, state, grads):
    """One step on the gradients of (loss × loss_scale(state)) with respect to this
    optimiser's parameters. Returns (params, state, finite, metrics).

    The optimiser works on one flat vector of all its parameters (its moments are
    flat vectors too): a handful of large XLA kernels instead of about ten per
    parameter array, which compiles several times faster (docs/benchmarks.md).
    """
    own = modules.subtree(params, self.paths)
    grads, unravel = ravel_pytree(grads)
    grads = grads / self.loss_scale(state)
    finite = jnp.isfinite(grads).all()
    updates, opt = self.tx.update(grads, state['opt'])   # Adam needs no parameters.
    # Updates are applied leaf by leaf: concatenating the parameters too would copy
    # them all every step for nothing.
    own = jax.tree.map(lambda p, u: jnp.where(finite, p + u, p), own, unravel(updates))
    opt = tree_where(finite, opt, state['opt'])
    loss_scale = state['scale']
    metrics = {f'{self.name}_grad_norm': jnp.sqrt(jnp.square(grads).sum())}
    if self.loss_scaling:
      loss_scale = jaxutils.loss_scale_update(loss_scale, finite)
      metrics[f'{self.name}_loss_scale'] = loss_scale['scale']
    return {**params, **own}, {'opt': opt, 'scale': loss_scale}, finite, metrics


class WorldModel:
  """Encoder, RSSM, decoder, reward and continue heads (§2)."""

  def __init__(self, obs_space, act_space, config, dtype):
    if (config.dyn_loss.impl, config.rep_loss.impl) != ('kl', 'kl'):
      raise NotImplementedError(
          f"dyn_loss.impl and rep_loss.impl must be 'kl', got {config.dyn_loss.impl!r} "
          f"and {config.rep_loss.impl!r}.")
    self.config = config
    shapes = {k: tuple(v.shape) for k, v in obs_space.items() if not k.startswith('log_')}
    self.encoder = nets.MultiEncoder(shapes, **kwargs(config.encoder), dtype=dtype)
    self.rssm = nets.RSSM(**kwargs(config.rssm), dtype=dtype)
    self.heads = {
        'decoder': nets.MultiDecoder(shapes, **kwargs(config.decoder), dtype=dtype),
        'reward': nets.MLPHead((), **kwargs(config.reward_head), dtype=dtype),
        'cont': nets.MLPHead((), **kwargs(config.cont_head), dtype=dtype)}
    decoder = self.heads['decoder']
    self.scales = {'reward': config.loss_scales.reward, 'cont': config.loss_scales.cont,
                   'dyn': config.loss_scales.dyn, 'rep': config.loss_scales.rep}
    self.scales.update({k: config.loss_scales.image for k in decoder.cnn_shapes})
    self.scales.update({k: config.loss_scales.vector for k in decoder.mlp_shapes})
    self.action_shape = tuple(act_space['action'].shape)

  def initial_carry(self, scope, batch_size):
    """(posterior state, previous action) before the first step: initial state, zero action."""
    return (self.rssm.initial(scope.child('rssm'), batch_size),
            jnp.zeros((batch_size,) + self.action_shape, f32))

  def observe(self, scope, data, carry, key):
    """Posterior and prior [B, T, ...] of a preprocessed batch; the RSSM at t consumes a_{t-1}."""
    embed = self.encoder(scope.child('encoder'), data)                     # [B, T, E]
    prev_state, prev_action = carry
    prev_actions = jnp.concatenate(
        [prev_action[:, None], data['action'][:, :-1]], 1)                # [B, T, A]
    return self.rssm.observe(
        scope.child('rssm'), embed, prev_actions, data['is_first'], key, prev_state)

  def loss(self, scope, data, carry, key):
    """World-model loss (§2.5). Returns (loss, (post [B, T, ...], carry, metrics))."""
    post, prior = self.observe(scope, data, carry, key)
    dyn, rep, kl = self.rssm.kl_loss(post, prior, self.config.dyn_loss.free)   # [B, T]
    if self.config.rep_loss.free != self.config.dyn_loss.free:
      _, rep, _ = self.rssm.kl_loss(post, prior, self.config.rep_loss.free)
    losses = {'dyn': dyn, 'rep': rep}
    feat = self.rssm.get_feat(post)                                        # [B, T, F]
    for name, head in self.heads.items():
      # Heads outside grad_heads train on the features without shaping them.
      inp = feat if name in self.config.grad_heads else sg(feat)
      dists = head(scope.child(name), inp)
      dists = dists if isinstance(dists, dict) else {name: dists}
      for key, dist in dists.items():
        losses[key] = -dist.log_prob(data[key])                            # [B, T]
    loss = sum(self.scales[k] * v for k, v in losses.items()).mean()
    metrics = {f'loss/{k}': v.mean() for k, v in losses.items()}
    metrics.update({
        'model_loss': loss, 'model_kl': kl.mean(),
        'prior_ent': self.rssm.get_dist(prior).entropy().sum(-1).mean(),
        'post_ent': self.rssm.get_dist(post).entropy().sum(-1).mean(),
        'data_reward_mean': data['reward'].mean(), 'data_cont_mean': data['cont'].mean()})
    carry = (jax.tree.map(lambda x: x[:, -1], post), data['action'][:, -1])
    return loss, (post, carry, metrics)

  def reward(self, scope, traj):
    """Task reward [L, N]: the reward head's mean at each of the L imagined states."""
    return self.heads['reward'](scope.child('reward'), self.rssm.get_feat(traj)).mean()


class ActorCritic:
  """Actor and value critics trained in imagination (§3).

  rewards: critic name -> fn(scope, traj) -> [L, N], the reward of arriving at
  each of the L states of traj (called with s_1..s_H); the advantages of the critics are normalised separately
  and summed with `scales`. The task behaviour has the single critic 'extr'.
  Parameter paths: {prefix}actor, {prefix}critic[_name], {prefix}slow_critic[_name].
  """

  def __init__(self, wm, act_space, config, dtype, rewards, scales, prefix=''):
    self.wm, self.config = wm, config
    space = act_space['action']
    self.discrete = is_discrete(space)
    self.grad = config.actor_grad_disc if self.discrete else config.actor_grad_cont
    if self.grad not in ('reinforce', 'backprop'):
      raise NotImplementedError(f"actor_grad must be 'reinforce' or 'backprop', got {self.grad!r}.")
    if config.critic_type != 'vfunction' or config.retnorm.impl != 'perc_ema':
      raise NotImplementedError(
          f"Only critic_type 'vfunction' and retnorm.impl 'perc_ema' are implemented, got "
          f"{config.critic_type!r} and {config.retnorm.impl!r}.")
    dist = config.actor_dist_disc if self.discrete else config.actor_dist_cont
    self.actor = nets.MLPHead(space.shape, dist=dist, **kwargs(config.actor), dtype=dtype)
    self.critic = nets.MLPHead((), **kwargs(config.critic), dtype=dtype)
    self.rewards = {k: fn for k, fn in rewards.items() if scales[k]}
    self.scales = scales
    self.actor_name = prefix + 'actor'
    suffix = lambda k: '' if k == 'extr' else f'_{k}'
    self.critic_names = {k: f'{prefix}critic{suffix(k)}' for k in self.rewards}
    self.slow_names = {k: f'{prefix}slow_critic{suffix(k)}' for k in self.rewards}
    scaling = dtype == jnp.float16
    self.opts = {
        self.actor_name: Optimizer(self.actor_name, [self.actor_name], config.actor_opt, scaling)}
    for name in self.critic_names.values():
      self.opts[name] = Optimizer(name, [name], config.critic_opt, scaling)
    self.discount = 1 - 1 / config.horizon

  def init(self, scope, feat):
    """Creates the parameters from features [..., F]."""
    self.actor(scope.child(self.actor_name), feat)
    for name in list(self.critic_names.values()) + list(self.slow_names.values()):
      self.critic(scope.child(name), feat)

  def init_state(self, params):
    return ({name: opt.init(params) for name, opt in self.opts.items()},
            {name: jaxutils.perc_ema_init() for name in self.critic_names.values()})

  def policy(self, scope, feat, key):
    return self.actor(scope.child(self.actor_name), feat).sample(key)

  def imagine(self, scope, start, key):
    """Rolls the prior H steps from start [N, ...], acting on sg(feat) (§3.2).

    Returns (traj, policy): states and actions [H+1, N, ...] (the last action
    enters only terms that are dropped later) and the actor's distribution at
    s_0..s_{H-1} [H, N], which the actor loss reuses rather than evaluating the
    actor on the same features again.
    """
    rssm = self.wm.rssm

    def act(state, key):
      policy = self.actor(scope.child(self.actor_name), sg(rssm.get_feat(state)))
      return policy.sample(key), policy

    def step(state, key):
      act_key, img_key = jax.random.split(key)
      action, policy = act(state, act_key)
      succ = rssm.img_step(scope.child('rssm'), state, action, img_key)
      return succ, ({**state, 'action': action}, policy)

    keys = jax.random.split(key, self.config.imag_horizon + 1)
    unroll = self.config.imag_horizon if self.config.imag_unroll else 1
    last, (traj, policy) = jax.lax.scan(step, start, keys[:-1], unroll=unroll)
    last = {**last, 'action': act(last, keys[-1])[0]}
    traj = jax.tree.map(lambda seq, x: jnp.concatenate([seq, x[None]], 0), traj, last)
    return traj, policy

  def loss(self, scope, start, retnorms, key):
    """Actor and critic losses of one imagined rollout (§3.2-3.7).

    start: posterior states [N, ...] with 'cont' [N]. Returns ({optimiser name:
    loss}, (retnorms, metrics)). Each loss depends only on its own optimiser's
    parameters, so one gradient of their sum gives every optimiser the gradient
    of its own loss, and the critic's forward pass serves both the returns the
    actor learns from and the critic's loss.
    """
    cfg = self.config
    traj, policy = self.imagine(scope, {k: v for k, v in start.items() if k != 'cont'}, key)
    feat = self.wm.rssm.get_feat(traj)                                       # [H+1, N, F]
    cont = self.wm.heads['cont'](scope.child('cont'), feat[1:]).mode()      # c_1..c_H [H, N]
    weight = sg(jaxutils.imagination_weights(start['cont'], cont, self.discount))  # [H+1, N]
    advantage, losses, new_retnorms, metrics = 0.0, {}, {}, {}
    for name, reward_fn in self.rewards.items():
      critic = self.critic_names[name]
      pre = '' if name == 'extr' else f'{name}_'
      reward = reward_fn(scope, jax.tree.map(lambda x: x[1:], traj))        # r_1..r_H [H, N]
      # On stop-gradiented features, so that the critic's loss shapes the critic only.
      dist = self.critic(scope.child(critic), sg(feat))                     # v_0..v_H [H+1, N]
      if self.grad == 'backprop':
        # The pathwise actor gradient flows through the values into the imagined
        # features, but not into the critic's parameters.
        value = self.critic(scope.child(critic).stop_gradient(), feat).mean()
      else:
        value = sg(dist.mean())
      ret = jaxutils.lambda_return(reward, cont, value, self.discount, cfg.return_lambda)  # [H, N]
      retnorm = jaxutils.perc_ema_update(
          retnorms[critic], ret, cfg.retnorm.decay, cfg.retnorm.perclo, cfg.retnorm.perchi)
      scale = sg(jaxutils.perc_ema_scale(retnorm, cfg.retnorm.max))
      advantage += self.scales[name] * (ret - value[:-1]) / scale         # [H, N]
      new_retnorms[critic] = retnorm
      losses[critic], mets = self.critic_loss(scope, name, dist, sg(feat), sg(ret), weight)
      metrics.update(mets)
      metrics.update({
          f'{pre}reward_mean': reward.mean(), f'{pre}ret_mean': ret.mean(),
          f'{pre}ret_std': ret.std(), f'{pre}value_mean': value.mean(),
          f'{pre}retnorm_lo': retnorm['lo'], f'{pre}retnorm_hi': retnorm['hi'],
          f'{pre}retnorm_scale': scale})
    if self.grad == 'reinforce':
      objective = policy.log_prob(sg(traj['action'][:-1])) * sg(advantage)   # [H, N]
    else:
      objective = advantage   # Pathwise: through actions, dynamics, rewards, values.
    entropy = policy.entropy()                                                 # [H, N]
    loss = -(weight[:-1] * (objective + cfg.actent * entropy)).mean()
    losses[self.actor_name] = cfg.loss_scales.actor * loss
    metrics.update({'loss/actor': losses[self.actor_name], 'actor_ent': entropy.mean(),
                    'adv_mean': advantage.mean(), 'imag_cont_mean': cont.mean(),
                    'weight_mean': weight.mean()})
    return losses, (new_retnorms, metrics)

  def critic_loss(self, scope, name, dist, feat, ret, weight):
    """Critic loss on states k < H with the actor's returns plus the slow-critic
    regulariser (§3.7). dist: the critic at s_0..s_H [H+1, N]; feat [H+1, N, F],
    ret [H, N], weight [H+1, N], all without gradient. Returns (loss, metrics)."""
    dist = jaxutils.TwoHot(dist.logits[:-1], dist.bins)                     # [H, N]
    slow = self.critic(scope.child(self.slow_names[name]), feat[:-1])
    loss = -dist.log_prob(ret)                                               # [H, N]
    if self.config.critic_slowreg == 'logprob':
      reg = -dist.log_prob(sg(slow.mean()))
    elif self.config.critic_slowreg == 'xent':
      slow_probs = sg(jax.nn.softmax(slow.logits, -1))
      reg = -(slow_probs * jax.nn.log_softmax(dist.logits, -1)).sum(-1)
    else:
      raise NotImplementedError(
          f"critic_slowreg must be 'logprob' or 'xent', got {self.config.critic_slowreg!r}.")
    loss = (weight[:-1] * (loss + self.config.loss_scales.slowreg * reg)).mean()
    loss = self.config.loss_scales.critic * loss
    pre = '' if name == 'extr' else f'{name}_'
    return loss, {f'loss/{pre}critic': loss, f'loss/{pre}slowreg': reg.mean()}

  def train(self, state, start, key):
    """Actor update, critic updates, slow-critic EMA (§3.8 steps 2-4).

    The critics' updates use the trajectories and returns of the actor's update
    and do not depend on the actor's new parameters, so all gradients come from
    one pass (ActorCritic.loss); each optimiser then steps on its own.
    state: the training state (params with the updated world model). start:
    posterior states [N, ...] with 'cont' [N]. Returns (state, metrics, finite).
    """
    params, opt = state['params'], dict(state['opt'])
    scales = {name: self.opts[name].loss_scale(opt[name]) for name in self.opts}

    def scaled_loss(own):
      merged = {k: v for part in own.values() for k, v in part.items()}
      losses, aux = self.loss(modules.Scope({**params, **merged}), start, state['retnorm'], key)
      return sum(losses[name] * scales[name] for name in self.opts), aux

    own = {name: modules.subtree(params, o.paths) for name, o in self.opts.items()}
    grads, (retnorms, metrics) = jax.grad(scaled_loss, has_aux=True)(own)
    finite = {}
    for name, o in self.opts.items():
      params, opt[name], finite[name], mets = o.apply(params, opt[name], grads[name])
      metrics.update(mets)
    # Skipped actor steps keep the normaliser too, so one bad batch cannot poison it.
    retnorms = tree_where(
        finite[self.actor_name], retnorms, {k: state['retnorm'][k] for k in retnorms})
    for name in self.critic_names:
      params = self.update_slow(params, name, state['step'])
    state = {**state, 'params': params, 'opt': opt, 'retnorm': {**state['retnorm'], **retnorms}}
    return state, metrics, jnp.all(jnp.stack(list(finite.values())))

  def update_slow(self, params, name, step):
    """ψ̄ <- mix ψ + (1 - mix) ψ̄; mix 1 at the first update (a copy), then the fraction
    every slow_critic_update updates (§3.7)."""
    first = (step == 0).astype(f32)
    due = (step % self.config.slow_critic_update == 0).astype(f32)
    mix = jnp.clip(first + self.config.slow_critic_fraction * due, 0, 1)
    fast = modules.subtree(params, self.critic_names[name])
    slow_name = self.slow_names[name]
    slow = {k.replace(self.critic_names[name], slow_name, 1): v for k, v in fast.items()}
    slow_old = {k: params[k] for k in slow}
    return {**params, **jaxutils.ema_update(slow_old, slow, mix)}


class Dreamer:
  """World model plus task (and optional exploration) behaviour, as pure functions."""

  def __init__(self, obs_space, act_space, config, dtype):
    from . import behaviors   # behaviors.py builds on ActorCritic from this module.
    self.config, self.dtype = config, dtype
    self.obs_space = {k: v for k, v in obs_space.items() if not k.startswith('log_')}
    self.act_space = {k: v for k, v in act_space.items() if k != 'reset'}
    self.wm = WorldModel(self.obs_space, self.act_space, config, dtype)
    self.task = behaviors.make(config.task_behavior, self.wm, self.act_space, config, dtype, '')
    self.expl = None
    if config.expl_behavior not in ('None', None):
      self.expl = behaviors.make(
          config.expl_behavior, self.wm, self.act_space, config, dtype, 'expl_')
    self.model_opt = Optimizer('model', MODEL, config.model_opt, dtype == jnp.float16)
    self.root = jax.random.PRNGKey(config.seed)

  @property
  def behaviors(self):
    return [self.task] + ([self.expl] if self.expl else [])

  def key(self, stream, counter):
    """Randomness from (seed, stream, counter): stream 0 train, 1 policy, 2 report."""
    return jax.random.fold_in(jax.random.fold_in(self.root, stream), counter)

  def init(self, key, data):
    """Creates the training state from a batch [B, T, ...]."""
    data = preprocess(data, self.dtype)

    def create(scope, data):
      carry = self.wm.initial_carry(scope, data['is_first'].shape[0])
      _, (post, _, _) = self.wm.loss(scope, data, carry, jax.random.PRNGKey(0))
      for behavior in self.behaviors:
        behavior.init(scope, post, data)

    params = modules.init(create, key, data)
    opt, retnorm = {'model': self.model_opt.init(params)}, {}
    for behavior in self.behaviors:
      opts, norms = behavior.init_state(params)
      opt.update(opts)
      retnorm.update(norms)
    return {'params': params, 'opt': opt, 'retnorm': retnorm,
            'step': jnp.zeros((), jnp.int32), 'nonfinite': jnp.zeros((), jnp.int32)}

  def initial_carry(self, params, batch_size):
    """Training carry or per-env policy state: (initial RSSM state, zero action)."""
    return self.wm.initial_carry(modules.Scope(params), batch_size)

  def train(self, state, data, carry):
    """One update (§3.8): world model, then each behaviour's actor and critics.

    data: raw batch [B, T, ...]; carry: (RSSM state [B, ...], action [B, A]).
    Returns (state, carry, metrics); metrics are scalars.
    """
    keys = jax.random.split(self.key(0, state['step']), 1 + len(self.behaviors))
    data = preprocess(data, self.dtype)
    opt = dict(state['opt'])
    params, opt['model'], (post, carry, metrics), finite, mets = self.model_opt.update(
        state['params'], opt['model'], self.wm.loss, data, carry, keys[0])
    metrics.update(mets)
    state = {**state, 'params': params, 'opt': opt}
    # All B*T posterior states of the pre-update forward pass start imagination;
    # the rollouts use the updated world model (§3.1).
    post = sg(post)
    start = {k: v.reshape((-1,) + v.shape[2:]) for k, v in post.items()}    # [B*T, ...]
    start['cont'] = data['cont'].reshape(-1)
    for behavior, key in zip(self.behaviors, keys[1:]):
      state, mets, ok = behavior.train(state, start, post, data, key)
      if behavior is self.expl:
        mets = {k if k.startswith('expl_') else f'expl_{k}': v for k, v in mets.items()}
      metrics.update(mets)
      finite &= ok
    nonfinite = jnp.where(finite, 0, state['nonfinite'] + 1).astype(jnp.int32)
    metrics['nonfinite'] = nonfinite   # Consecutive updates skipped for non-finite gradients.
    state = {**state, 'step': state['step'] + 1, 'nonfinite': nonfinite}
    return state, carry, metrics

  def policy(self, params, obs, state, counter, mode='train'):
    """One acting step for N envs (§5.4); every mode samples.

    obs: raw observations [N, ...]; state: (RSSM state [N, ...], action [N, A]).
    is_first resets the state to the initial state with a zero action.
    Returns ({'action': [N, A]}, state).
    """
    obs_key, act_key = jax.random.split(self.key(1, counter))
    obs = preprocess(obs, self.dtype)
    scope = modules.Scope(params)
    latent, prev_action = state
    embed = self.wm.encoder(scope.child('encoder'), obs)                     # [N, E]
    post, _ = self.wm.rssm.obs_step(
        scope.child('rssm'), latent, prev_action, embed, obs['is_first'], obs_key)
    behavior = self.expl if mode == 'explore' and self.expl else self.task
    action = behavior.policy(scope, post, act_key)                           # [N, A]
    return {'action': action}, (post, action)

  def report(self, params, data, counter):
    """World-model losses on a batch and open-loop video predictions.

    The first CONTEXT steps come from the posterior, the rest are imagined with
    the actions from the data. Videos `openl_<key>` stack truth | prediction |
    error on the height axis: uint8 [n, T, 3 H, W, C], n <= VIDEO_SEQUENCES.
    """
    loss_key, obs_key, img_key = jax.random.split(self.key(2, counter), 3)
    data = preprocess(data, self.dtype)
    scope = modules.Scope(params)
    batch, length = data['is_first'].shape
    carry = self.wm.initial_carry(scope, batch)
    _, (_, _, metrics) = self.wm.loss(scope, data, carry, loss_key)
    n, context = min(batch, VIDEO_SEQUENCES), min(CONTEXT, length)
    data = jax.tree.map(lambda x: x[:n], data)
    observed = jax.tree.map(lambda x: x[:, :context], data)
    post, _ = self.wm.observe(scope, observed, self.wm.initial_carry(scope, n), obs_key)
    prev_actions = jnp.swapaxes(data['action'][:, context - 1:-1], 0, 1)     # [T-ctx, n, A]
    prior = self.open_loop(scope, jax.tree.map(lambda x: x[:, -1], post), prev_actions, img_key)
    states = jax.tree.map(lambda a, b: jnp.concatenate([a, b], 1), post, prior)  # [n, T, ...]
    dists = self.wm.heads['decoder'](scope.child('decoder'), self.wm.rssm.get_feat(states))
    for key, dist in dists.items():
      metrics[f'openl_loss/{key}'] = -dist.log_prob(data[key])[:, context:].mean()
      if key in self.wm.heads['decoder'].cnn_shapes:
        truth, pred = data[key].astype(f32), dist.mode()
        error = (pred - truth + 1) / 2
        video = jnp.concatenate([truth, pred, error], 2)                      # [n, T, 3H, W, C]
        metrics[f'openl_{key}'] = (jnp.clip(video, 0, 1) * 255).astype(jnp.uint8)
    return metrics

  def open_loop(self, scope, start, prev_actions, key):
    """Prior states [n, L, ...] from start [n, ...] fed the actions [L, n, A]."""
    keys = jax.random.split(key, prev_actions.shape[0])

    def step(state, inputs):
      action, key = inputs
      state = self.wm.rssm.img_step(scope.child('rssm'), state, action, key)
      return state, state

    _, states = jax.lax.scan(step, start, (prev_actions, keys))
    return jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), states)
