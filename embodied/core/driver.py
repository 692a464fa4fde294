"""Driver: steps a batched env with a policy and reports transitions and episodes."""

import numpy as np


class Driver:
  """Steps a BatchEnv of N envs with a policy.

  A transition is the observation of step t merged with the policy outputs
  computed from it (so `action` is action_t, chosen after seeing obs_t). On
  is_last steps the stored and the sent action is all zeros and the env is
  asked to reset on the next step (algorithm.md §2.1, §5.4).

    driver = Driver(env)
    driver.on_step(lambda tran, worker: ...)     # tran: dict of arrays of one env
    driver.on_episode(lambda ep, worker: ...)    # ep: dict of [T, ...] arrays
    driver(policy, steps=1000)                   # policy(obs, state) -> (outs, state)

  The policy state is kept across calls, so consecutive calls continue the
  same episodes; reset() starts fresh episodes in every env.
  """

  def __init__(self, env):
    self._env = env
    self._amount = len(env)
    self._act_space = {k: v for k, v in env.act_space.items() if k != 'reset'}
    self._on_steps = []
    self._on_episodes = []
    self.reset()

  def reset(self):
    """Forgets the policy state and partial episodes; every env resets next step."""
    self._acts = {
        k: np.zeros((self._amount,) + space.shape, space.dtype)
        for k, space in self._act_space.items()}
    self._acts['reset'] = np.ones(self._amount, bool)
    self._state = None
    self._episodes = [[] for _ in range(self._amount)]

  def on_step(self, callback):
    """Registers callback(transition, worker), called for every env step."""
    self._on_steps.append(callback)

  def on_episode(self, callback):
    """Registers callback(episode, worker) with the episode's stacked [T, ...] arrays."""
    self._on_episodes.append(callback)

  def __call__(self, policy, steps=0, episodes=0):
    """Steps until at least `steps` env steps (summed over envs) or `episodes` episodes."""
    step, episode = 0, 0
    while step < steps or episode < episodes:
      episode += self._step(policy)
      step += self._amount

  def _step(self, policy):
    """One batched step; returns the number of episodes that ended in it."""
    obs = self._env.step(self._acts)
    obs = {k: np.asarray(v) for k, v in obs.items()}
    outs, self._state = policy(obs, self._state)
    outs = {k: np.asarray(v) for k, v in outs.items()}
    missing = sorted(set(self._act_space) - set(outs))
    if missing:
      raise KeyError(
          f'The policy outputs must hold every action key {sorted(self._act_space)}; '
          f'missing {missing} (got {sorted(outs)}).')
    is_last = obs['is_last']  # [N]
    for key in self._act_space:
      outs[key] = _zero_where(outs[key], is_last)
    self._acts = {key: outs[key] for key in self._act_space}
    self._acts['reset'] = is_last.copy()
    transitions = {**obs, **outs}
    ended = 0
    for worker in range(self._amount):
      tran = {k: v[worker] for k, v in transitions.items()}
      for callback in self._on_steps:
        callback(tran, worker)
      ended += self._record(tran, worker)
    return ended

  def _record(self, tran, worker):
    """Adds a transition to the worker's episode; returns 1 if the episode ended."""
    if tran['is_first']:
      # A restarted env may begin a new episode without an is_last first.
      self._episodes[worker].clear()
    self._episodes[worker].append(tran)
    if not tran['is_last']:
      return 0
    steps = self._episodes[worker]
    episode = {k: np.stack([t[k] for t in steps]) for k in steps[0]}
    self._episodes[worker] = []
    for callback in self._on_episodes:
      callback(episode, worker)
    return 1


def _zero_where(value, mask):
  """Zeros the rows of value [N, ...] where mask [N] is true."""
  mask = mask.reshape(mask.shape + (1,) * (value.ndim - 1))
  return np.where(mask, np.zeros_like(value), value)
