"""Learning test in the style of brax's fast envs: a trivial env the agent must solve.

Each episode shows one of three targets as a one-hot vector at every step; each
step's reward is 1 when the previous action matched the target. A random policy
earns a third of the 16 steps; the agent has to learn the reward through its
world model and the policy through imagination, within a short run on the CPU.
"""

import pathlib

import numpy as np

from embodied.core.base import Space
from embodied.core.basics import Counter
from embodied.core.config import load_config, load_yaml

from dreamerv3 import jaxagent

ROOT = pathlib.Path(__file__).resolve().parent.parent
CLASSES, LENGTH, ENVS = 3, 16, 4


class MatchEnv:
  """Batched numpy env: obs = the episode's one-hot target; reward 1 if the previous
  action matched it."""

  def __init__(self, envs, seed):
    self.rng = np.random.default_rng(seed)
    self.envs = envs
    self.time = np.zeros(envs, int)
    self.target = self.rng.integers(0, CLASSES, envs)

  obs_space = {
      'target': Space(np.float32, (CLASSES,), 0, 1), 'reward': Space(np.float32),
      'is_first': Space(bool), 'is_last': Space(bool), 'is_terminal': Space(bool)}
  act_space = {'action': Space(np.float32, (CLASSES,), 0, 1), 'reset': Space(bool)}

  def step(self, action):
    """action [N, C] one-hot or None at the start; returns the obs dict [N, ...]."""
    first = np.ones(self.envs, bool) if action is None else self.time == LENGTH
    reward = np.zeros(self.envs, np.float32)
    if action is not None:
      reward = (action.argmax(-1) == self.target).astype(np.float32) * ~first
    self.time = np.where(first, 0, self.time + 1)
    self.target = np.where(first, self.rng.integers(0, CLASSES, self.envs), self.target)
    return {'target': np.eye(CLASSES, dtype=np.float32)[self.target], 'reward': reward,
            'is_first': first, 'is_last': self.time == LENGTH,
            'is_terminal': np.zeros(self.envs, bool)}


def sample(buffer, size, rng, batch, length):
  """Uniform windows [B, T] of one env's stream each, with is_first[0] = True.

  buffer: key -> [steps, envs, ...]; the first `size` steps are filled.
  """
  envs = rng.integers(0, ENVS, batch)
  starts = rng.integers(0, size - length + 1, batch)
  index = starts[:, None] + np.arange(length)                           # [B, T]
  data = {k: v[index, envs[:, None]] for k, v in buffer.items()}
  data['is_first'][:, 0] = True
  return data


def test_agent_learns_to_match_the_target():
  # Tiny networks, and learning rates 10x the defaults so that a few hundred
  # updates suffice (at the defaults the reward head alone needs ~1000).
  config, _ = load_config(load_yaml(ROOT / 'configs.yaml'), [
      '--configs', 'debug', '--encoder.mlp_layers', '2', '--decoder.mlp_layers', '2',
      '--encoder.mlp_units', '64', '--decoder.mlp_units', '64',
      '--batch_size', '16', '--batch_length', '16', '--seed', '1',
      '--model_opt.lr', '1e-3', '--actor_opt.lr', '3e-4', '--critic_opt.lr', '3e-4'])
  env = MatchEnv(ENVS, seed=0)
  agent = jaxagent.JAXAgent(env.obs_space, env.act_space, Counter(), config)
  rng, steps = np.random.default_rng(0), 1400
  buffer = {k: np.zeros((steps, ENVS) + v.shape, v.dtype) for k, v in env.obs_space.items()}
  buffer['action'] = np.zeros((steps, ENVS, CLASSES), np.float32)
  obs, policy_state, carry, returns, episode = env.step(None), None, None, [], np.zeros(ENVS)
  for step in range(steps):
    outs, policy_state = agent.policy(obs, policy_state, mode='train')
    action = np.where(obs['is_last'][:, None], 0, outs['action'])  # The driver zeroes it.
    for key in buffer:
      buffer[key][step] = action if key == 'action' else obs[key]
    obs = env.step(action)
    episode += obs['reward']
    returns += list(episode[obs['is_last']])
    episode[obs['is_last']] = 0
    if step >= 32 and step % 2 == 0:   # 16 x 16 replayed steps per 2 x 4 env steps.
      _, carry, metrics = agent.train(sample(buffer, step + 1, rng, 16, 16), carry)
  initial, final = np.mean(returns[:12]), np.mean(returns[-12:])
  assert np.isfinite(float(metrics['model_loss']))
  assert initial < 0.6 * LENGTH, (initial, returns)   # A third of the steps by chance.
  assert final >= 0.8 * LENGTH, (final, returns)
