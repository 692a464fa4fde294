"""dreamerv3.inference: load_policy, gymnasium conversions and the README snippet."""

import pathlib
import re
import subprocess
import sys

import gymnasium
import numpy as np
import pytest

from embodied.core.basics import Counter
from embodied.core.checkpoint import Checkpoint
from embodied.core.config import load_config, load_yaml
from embodied.core.random_agent import RandomAgent
from embodied.envs import gym, load_env, wrap_env

ROOT = pathlib.Path(__file__).resolve().parent.parent

# The debug block keeps the MLP encoder/decoder at 5 x 1024 units (8.7M
# parameters); these flags make the test agents small and quick to compile.
SMALL = ['--encoder.mlp_units', '64', '--decoder.mlp_units', '64',
         '--encoder.mlp_layers', '2', '--decoder.mlp_layers', '2']

# Used until README.md holds the snippet between the markers below; the
# README's version imports load_policy from dreamerv3 itself.
FALLBACK_SNIPPET = """
import gymnasium
from dreamerv3.inference import load_policy

policy = load_policy('~/logdir/cartpole')  # the run.logdir of a training run
env = gymnasium.make('CartPole-v1')
obs, _ = env.reset()
state, done = policy.reset(), False
while not done:
  action, state = policy(obs, state)
  obs, reward, terminated, truncated, _ = env.step(action)
  done = terminated or truncated
"""


def readme_snippet():
  """The README's inference snippet (or the fallback) as Python source."""
  text = (ROOT / 'README.md').read_text()
  found = re.search(
      r'<!-- inference-snippet -->\s*```python\n(.*?)```\s*<!-- /inference-snippet -->',
      text, re.S)
  return found.group(1) if found else FALLBACK_SNIPPET


def config_for(task, *flags):
  config, _ = load_config(load_yaml(ROOT / 'configs.yaml'), [
      '--configs', 'debug', '--task', task, *SMALL, *flags])
  return config


def save_untrained_logdir(logdir, task='gym_CartPole-v1'):
  """A logdir as train.py leaves it (config.yaml, checkpoint/) with fresh weights."""
  import dreamerv3.jaxagent
  config = config_for(task, '--run.logdir', str(logdir))
  env = load_env(task, config)
  agent = dreamerv3.jaxagent.JAXAgent(env.obs_space, env.act_space, Counter(), config)
  env.close()
  logdir.mkdir(parents=True, exist_ok=True)
  config.save(logdir / 'config.yaml')
  checkpoint = Checkpoint(logdir / 'checkpoint')
  checkpoint.agent = agent
  checkpoint.save()
  return logdir, agent


class CheckedEnv(gymnasium.Wrapper):
  """Fails on an action outside the action space; counts the steps."""

  steps = 0
  finished = False

  def step(self, action):
    assert self.action_space.contains(action), f'invalid action {action!r}'
    obs, reward, terminated, truncated, info = self.env.step(action)
    CheckedEnv.steps += 1
    CheckedEnv.finished = terminated or truncated
    return obs, reward, terminated, truncated, info


def run_snippet(logdir, monkeypatch):
  """Executes the README snippet on logdir; returns (steps, episode finished)."""
  source = readme_snippet()
  assert "'~/logdir/cartpole'" in source
  source = source.replace("'~/logdir/cartpole'", repr(str(logdir)))
  make = gymnasium.make
  monkeypatch.setattr(gymnasium, 'make', lambda *args, **kwargs: CheckedEnv(make(*args, **kwargs)))
  monkeypatch.setattr(CheckedEnv, 'steps', 0)
  monkeypatch.setattr(CheckedEnv, 'finished', False)
  exec(compile(source, 'README.md', 'exec'), {})
  return CheckedEnv.steps, CheckedEnv.finished


# Conversions, with the NumPy RandomAgent standing in for the trained agent.

class RecordingAgent(RandomAgent):
  """RandomAgent that records its inputs and can return fixed actions."""

  def __init__(self, obs_space, act_space, actions=None):
    super().__init__(obs_space, act_space)
    self.inputs, self.actions = [], list(actions or [])

  def policy(self, obs, state=None, mode='train'):
    self.inputs.append((obs, state, mode))
    outs, _ = super().policy(obs, state, mode)
    if self.actions:
      outs = {'action': np.asarray([self.actions.pop(0)], np.float32)}
    return outs, len(self.inputs)   # Any object serves as the recurrent state.


def make_policy(task, actions=None, mode='eval'):
  from dreamerv3.inference import Policy
  config = config_for(task)
  env = load_env(task, config)
  agent = RecordingAgent(env.obs_space, env.act_space, actions)
  policy = Policy(agent, env, config, mode)
  env.close()
  return policy, agent


def test_discrete_gym_obs_become_the_agent_keys_and_actions_become_ints():
  policy, agent = make_policy('gym_CartPole-v1')
  env = gymnasium.make('CartPole-v1')
  obs, _ = env.reset(seed=1)
  state = policy.reset()
  for _ in range(3):
    action, state = policy(obs, state)
    assert type(action) is int and env.action_space.contains(action)
    obs, *_ = env.step(action)
  obs0, state0, mode = agent.inputs[0]
  np.testing.assert_array_equal(obs0['vector'], env.reset(seed=1)[0][None])
  assert obs0['vector'].dtype == np.float32 and mode == 'eval' and state0 is None
  assert [bool(inputs[0]['is_first'][0]) for inputs in agent.inputs] == [True, False, False]
  assert [inputs[1] for inputs in agent.inputs] == [None, 1, 2]   # The state is carried.


def test_discrete_action_is_the_argmax_of_the_one_hot():
  policy, _ = make_policy('gym_CartPole-v1', actions=[[0.2, 0.8], [0.9, 0.1]])
  obs = np.zeros(4, np.float32)
  action, state = policy(obs)
  assert action == 1
  assert policy(obs, state)[0] == 0


def test_continuous_action_is_denormalised_and_clipped_to_the_bounds():
  # Pendulum torque is in [-2, 2]; the agent acts in [-1, 1].
  policy, _ = make_policy('gym_Pendulum-v1', actions=[[0.5], [-1.7]])
  obs, _ = gymnasium.make('Pendulum-v1').reset(seed=0)
  action, state = policy(obs)
  np.testing.assert_allclose(action, [1.0])
  assert action.dtype == np.float32
  np.testing.assert_allclose(policy(obs, state)[0], [-2.0])


def test_custom_gym_env_keeps_its_obs_key():
  from dreamerv3.inference import Policy
  config = config_for('gym_CartPole-v1')
  env = wrap_env(gym.Gym(gymnasium.make('CartPole-v1'), obs_key='state'), config)
  agent = RecordingAgent(env.obs_space, env.act_space)
  policy = Policy(agent, env, config)
  action, _ = policy(np.ones(4, np.float32))
  np.testing.assert_array_equal(agent.inputs[0][0]['state'], np.ones((1, 4)))
  assert action in (0, 1)


def test_non_gym_task_takes_and_returns_env_dicts():
  policy, agent = make_policy('dummy_disc', mode='train')
  env = load_env('dummy_disc', policy.config)
  obs = env.step({'action': np.zeros(5, np.float32), 'reset': True})
  state = None
  for _ in range(3):
    action, state = policy(obs, state)
    obs = env.step(action)
  assert action['reset'] is False and action['action'].shape == (5,)
  assert [bool(inputs[0]['is_first'][0]) for inputs in agent.inputs] == [True, False, False]
  assert agent.inputs[0][2] == 'train'
  with pytest.raises(KeyError, match="'vector'"):
    policy({'image': obs['image']})


def test_load_policy_without_config_names_the_file(tmp_path):
  from dreamerv3.inference import load_policy
  with pytest.raises(FileNotFoundError, match='config.yaml'):
    load_policy(tmp_path)


# The real agent.

def test_readme_snippet_runs_on_a_saved_agent(tmp_path, monkeypatch):
  """Fast path: a checkpoint with untrained weights, saved as training does."""
  from dreamerv3.inference import load_policy
  logdir, agent = save_untrained_logdir(tmp_path / 'logdir')
  # An env built by hand as in example.py, which trains with config.task unset.
  env = wrap_env(gym.Gym(gymnasium.make('CartPole-v1')), agent.config)
  policy = load_policy(logdir, env=env)
  assert isinstance(policy(np.zeros(4, np.float32))[0], int)
  for key, value in agent.params.items():
    np.testing.assert_array_equal(np.asarray(policy.agent.params[key]), np.asarray(value))
  steps, finished = run_snippet(logdir, monkeypatch)
  assert finished and steps > 0


@pytest.fixture(scope='module')
def trained_logdir(tmp_path_factory):
  """A CartPole agent trained for 300 steps by the real command (shared by the module)."""
  logdir = tmp_path_factory.mktemp('cartpole')
  subprocess.run(
      [sys.executable, 'dreamerv3/train.py', '--configs', 'debug', '--task', 'gym_CartPole-v1',
       '--run.steps', '300', '--envs.parallel', 'none', '--run.logdir', str(logdir), *SMALL],
      cwd=ROOT, check=True, capture_output=True, timeout=900)
  return logdir


@pytest.mark.slow
def test_readme_snippet_runs_on_a_trained_agent(trained_logdir, monkeypatch):
  steps, finished = run_snippet(trained_logdir, monkeypatch)
  assert finished and steps > 0


@pytest.mark.slow
def test_load_policy_loads_the_newest_checkpoint(trained_logdir):
  from dreamerv3.inference import load_policy
  from embodied.core.checkpoint import read_tree
  saved = read_tree(trained_logdir)['agent']
  policy = load_policy(trained_logdir, mode='train')
  for key, value in policy.agent.params.items():
    np.testing.assert_array_equal(np.asarray(value), saved[f'params/{key}'])
  assert policy.mode == 'train'
