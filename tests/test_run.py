"""Run loops with the NumPy RandomAgent, dummy envs and the Uniform replay (no JAX)."""

import json
import pathlib

import numpy as np
import pytest

from embodied.core.basics import Counter
from embodied.core.config import Config, load_yaml
from embodied.core.logger import JSONLOutput, Logger, TensorBoardOutput, TerminalOutput
from embodied.core.random_agent import RandomAgent
from embodied.envs import make_envs
from embodied.replay import Uniform
from embodied.run import eval_only, train, train_eval
from embodied.run.common import batch_size

ROOT = pathlib.Path(__file__).resolve().parent.parent
AMOUNT = 2        # Envs per BatchEnv.
EPISODE = 10      # Actions per episode (wrapper.length).
B, T = 4, 8


def make_config(logdir, **run):
  config = Config(load_yaml(ROOT / 'configs.yaml')['defaults'])
  return config.update({
      'task': 'dummy_disc', 'envs.amount': AMOUNT, 'envs.parallel': 'none',
      'wrapper.length': EPISODE, 'batch_size': B, 'batch_length': T, 'replay_size': 1000,
      'run.logdir': str(logdir), 'run.log_every': 0, 'run.save_every': 1e6,
      'run.steps': 100, 'run.train_ratio': 16, 'run.eval_every': 40, 'run.eval_eps': 2,
      'run.log_keys_sum': '^log_match$', **{f'run.{k}': v for k, v in run.items()}})


def run_args(config):
  return config.run.update(batch_steps=config.batch_size * config.batch_length)


class Agent(RandomAgent):
  """RandomAgent that records the step and mode of every policy and train call."""

  def __init__(self, obs_space, act_space, step, config):
    super().__init__(obs_space, act_space, step, config)
    self.step = step
    self.policy_calls = []  # (step, mode)
    self.train_calls = []   # step

  def policy(self, obs, state=None, mode='train'):
    self.policy_calls.append((int(self.step), mode))
    return super().policy(obs, state, mode)

  def train(self, data, state=None):
    assert data['image'].shape == (B, T, 64, 64, 3)
    self.train_calls.append(int(self.step))
    return super().train(data, state)


class Setup:
  """What dreamerv3/train.py builds for a run: envs, replay, logger, agent."""

  def __init__(self, config, outputs=None):
    logdir = pathlib.Path(config.run.logdir)
    self.step = Counter()
    self.env = make_envs(config)
    self.replay = Uniform(T, config.replay_size, logdir / 'replay')
    self.logger = Logger(self.step, outputs or [JSONLOutput(logdir)])
    self.agent = Agent(self.env.obs_space, self.env.act_space, self.step, config)
    self.args = run_args(config)

  def train(self):
    train(self.agent, self.env, self.replay, self.logger, self.args)
    self.env.close()
    return self


def read_metrics(logdir):
  return [json.loads(line) for line in (logdir / 'metrics.jsonl').read_text().splitlines()]


def expected_updates(first, final, ratio, pretrain=1):
  """Pretrain + 1 owed at the first call + one per 1/ratio steps afterwards (algorithm.md §5.3)."""
  return pretrain + 1 + int(np.floor((final - first) * ratio))


def first_agent_step(agent):
  return agent.policy_calls[0][0]


def test_train_ratio_sets_the_number_of_updates(tmp_path):
  run = Setup(make_config(tmp_path, steps=150, train_ratio=16)).train()
  prefill = first_agent_step(run.agent)
  assert prefill > 0 and len(run.replay) >= B * T
  final = int(run.step)
  assert final == 150  # A multiple of AMOUNT.
  # The train callback first runs after the first env's step past the prefill.
  assert run.agent.updates == expected_updates(prefill + 1, final, 16 / (B * T))
  assert run.agent.train_calls[0] == prefill  # Pretrain right after the prefill.


def test_train_every_sets_one_update_per_n_env_steps(tmp_path):
  run = Setup(make_config(tmp_path, steps=121, train_every=3, train_ratio=999)).train()
  prefill = first_agent_step(run.agent)
  assert int(run.step) == 122
  assert run.agent.updates == expected_updates(prefill + 1, 122, 1 / 3)


def test_train_logs_metrics_and_writes_a_checkpoint(tmp_path, capsys):
  config = make_config(tmp_path, steps=60)
  outputs = [TerminalOutput(config.filter, config.run.steps), JSONLOutput(tmp_path),
             TensorBoardOutput(tmp_path)]
  Setup(config, outputs).train()
  lines = read_metrics(tmp_path)
  steps = [line['step'] for line in lines]
  assert steps == sorted(steps) and steps[-1] == 60
  keys = set().union(*lines)
  for key in ('train/loss', 'report/reward_mean', 'replay/items', 'episode/score',
              'episode/length', 'episode/sum_match', 'fps/env', 'fps/train'):
    assert key in keys, key
  lengths = {line['episode/length'] for line in lines if 'episode/length' in line}
  assert lengths == {EPISODE}
  assert list((tmp_path / 'checkpoint').glob('ckpt-*/arrays.npz'))
  assert list(tmp_path.glob('events.out.tfevents.*'))
  printed = capsys.readouterr().out
  assert 'Step 60/60 (100.0%)' in printed


def test_resume_continues_steps_without_second_prefill(tmp_path):
  # A coarse schedule, so that a resume that forgot the schedule's bookkeeping
  # would owe a different number of updates than an uninterrupted run.
  first = Setup(make_config(tmp_path, steps=80, train_every=20)).train()
  items = len(first.replay)
  second = Setup(make_config(tmp_path, steps=142, train_every=20)).train()
  # The second run starts from the checkpoint: no prefill, no pretrain.
  assert first_agent_step(second.agent) == 80
  assert second.agent.train_calls[0] > 80
  assert len(second.replay) >= items
  prefill = first_agent_step(first.agent)
  assert second.agent.updates == expected_updates(prefill + 1, 142, 1 / 20)
  steps = [line['step'] for line in read_metrics(tmp_path)]
  assert steps == sorted(steps) and steps[-1] == 142
  # Rerunning a finished run acts and trains no more.
  third = Setup(make_config(tmp_path, steps=142, train_every=20)).train()
  assert third.agent.policy_calls == [] and third.agent.updates == second.agent.updates


def test_train_eval_evaluates_every_eval_every_steps(tmp_path):
  config = make_config(tmp_path, steps=130, eval_every=40, eval_eps=2)
  run = Setup(config)
  eval_env = make_envs(config, mode='eval')
  eval_replay = Uniform(T, 100, tmp_path / 'eval_replay')
  train_eval(run.agent, run.env, eval_env, run.replay, eval_replay, run.logger, run.args)
  run.env.close()
  eval_env.close()
  calls = run.agent.policy_calls
  starts = [step for i, (step, mode) in enumerate(calls)
            if mode == 'eval' and (i == 0 or calls[i - 1][1] != 'eval')]
  first = starts[0]
  assert first == first_agent_step(run.agent)  # eval_initial: before training.
  # One evaluation per loop iteration whose step is due on the grid first + k * 40.
  last_iteration = int(run.step) - AMOUNT
  assert len(starts) == 1 + (last_iteration - first) // 40
  # Each evaluation runs whole episodes of both eval envs: eval_eps = 2 episodes.
  assert len(calls) - len([c for c in calls if c[1] != 'eval']) == len(starts) * (EPISODE + 1)
  lines = read_metrics(tmp_path)
  evals = [line for line in lines if 'eval_episode/score' in line]
  assert len(evals) == len(starts)
  assert {line['eval_episode/length'] for line in evals} == {EPISODE}
  assert len(eval_replay) >= B * T
  assert any('eval_report/reward_mean' in line for line in lines)


def test_train_eval_without_initial_eval(tmp_path):
  config = make_config(tmp_path, steps=100, eval_every=40, eval_initial=False)
  run = Setup(config)
  eval_env = make_envs(config, mode='eval')
  eval_replay = Uniform(T, 100)
  train_eval(run.agent, run.env, eval_env, run.replay, eval_replay, run.logger, run.args)
  first = first_agent_step(run.agent)
  eval_steps = [step for step, mode in run.agent.policy_calls if mode == 'eval']
  assert eval_steps and min(eval_steps) == first + 40


def test_eval_only_runs_episodes_without_training(tmp_path):
  config = make_config(tmp_path, eval_eps=3, steps=10 ** 6)
  run = Setup(config)
  eval_only(run.agent, run.env, run.logger, run.args)
  modes = {mode for _, mode in run.agent.policy_calls}
  assert modes == {'eval'}
  assert run.agent.updates == 0 and run.agent.train_calls == []
  # Both envs end episodes together: 2 rounds of EPISODE + 1 batched steps.
  assert int(run.step) == 2 * AMOUNT * (EPISODE + 1)
  lines = read_metrics(tmp_path)
  assert lines[-1]['step'] == int(run.step)
  assert {line['episode/length'] for line in lines if 'episode/length' in line} == {EPISODE}
  assert not (tmp_path / 'checkpoint').exists()


def test_eval_only_stops_at_run_steps(tmp_path):
  run = Setup(make_config(tmp_path, eval_eps=100, steps=7))
  eval_only(run.agent, run.env, run.logger, run.args)
  assert int(run.step) == 8


def test_batch_size_needs_a_multiple_of_the_replay_length(tmp_path):
  args = run_args(make_config(tmp_path))
  assert batch_size(args, Uniform(T, 100)) == B
  with pytest.raises(ValueError, match='batch_steps'):
    batch_size(args, Uniform(T + 1, 100))


def test_random_agent_samples_each_action_space():
  from embodied.core.base import Space
  act_space = {
      'onehot': Space(np.float32, (4,), 0, 1), 'cont': Space(np.float32, (2,), -1, 1),
      'int': Space(np.int32, (), 2, 4), 'flag': Space(bool), 'reset': Space(bool)}
  agent = RandomAgent({}, act_space, Counter(), None)
  outs, state = agent.policy({'is_first': np.zeros(500, bool)}, 'state', mode='eval')
  assert state == 'state' and set(outs) == {'onehot', 'cont', 'int', 'flag'}
  assert outs['onehot'].shape == (500, 4) and (outs['onehot'].sum(-1) == 1).all()
  assert set(np.unique(outs['onehot'].argmax(-1))) == {0, 1, 2, 3}
  assert outs['cont'].dtype == np.float32 and np.abs(outs['cont']).max() <= 1
  assert outs['cont'].min() < -0.9 and outs['cont'].max() > 0.9
  assert outs['int'].dtype == np.int32 and set(np.unique(outs['int'])) == {2, 3, 4}
  assert outs['flag'].dtype == bool and 0 < outs['flag'].mean() < 1


def test_random_agent_counts_updates_and_restores_them():
  agent = RandomAgent({}, {'reset': None}, None, None)
  data = {'reward': np.arange(6, dtype=np.float32).reshape(2, 3)}
  _, _, metrics = agent.train(data)
  agent.train(data)
  assert metrics['loss'] == pytest.approx(2.5) and agent.updates == 2
  restored = RandomAgent({}, {'reset': None}, None, None)
  restored.load(agent.save())
  assert restored.updates == 2


def test_train_with_continuous_actions(tmp_path):
  run = Setup(make_config(tmp_path, steps=60).update(task='dummy_cont')).train()
  batch = next(run.replay.dataset(16))
  assert batch['action'].shape == (16, T, 2) and batch['is_last'].any()
  # Actions on is_last steps are stored as zeros, the others are samples.
  assert not batch['action'][batch['is_last']].any()
  assert (batch['action'][~batch['is_last']] != 0).all()
  assert run.agent.updates > 1
