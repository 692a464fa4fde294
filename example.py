"""The shortest complete program: train DreamerV3 on a gymnasium env.

Copy this file to start from your own env. Command-line flags override the
config as in dreamerv3/train.py; without --configs the `cpu` block is used:

  python example.py --run.steps 30000 --run.logdir ~/logdir/cartpole
  python example.py --configs debug --run.steps 500 --run.logdir /tmp/example
"""

import pathlib
import sys

import embodied
import dreamerv3
from embodied.core.config import exit_on_config_error, load_config, load_yaml


def make_env(config):
  import gymnasium
  from embodied.envs import gym, wrap_env
  env = gymnasium.make('CartPole-v1')      # <- your env here
  env = gym.Gym(env, obs_key='vector')     # gymnasium API -> embodied API
  return wrap_env(env, config)             # one-hot / normalised actions, checks


def main(argv=None):
  from_command_line = argv is None
  argv = sys.argv[1:] if from_command_line else list(argv)
  if not any(arg.startswith('--configs') for arg in argv):
    argv = ['--configs', 'cpu', *argv]
  with exit_on_config_error():
    configs = load_yaml(pathlib.Path(dreamerv3.__file__).parent / 'configs.yaml')
    config, _ = load_config(configs, ['--run.logdir', '~/logdir/example', *argv])
  if from_command_line:
    dreamerv3.restart_with_huge_pages(config)  # Faster on the CPU; reruns this command once.
  dreamerv3.configure_jax(config)

  logdir = pathlib.Path(config.run.logdir).expanduser()
  logdir.mkdir(parents=True, exist_ok=True)
  config.save(logdir / 'config.yaml')
  step = embodied.Counter()
  logger = embodied.Logger(step, [
      embodied.logger.TerminalOutput(config.filter, config.run.steps),
      embodied.logger.JSONLOutput(logdir),
      embodied.logger.TensorBoardOutput(logdir),
  ])

  env = embodied.BatchEnv([lambda: make_env(config)], parallel='none')
  agent = dreamerv3.Agent(env.obs_space, env.act_space, step, config)
  replay = embodied.replay.Uniform(
      config.batch_length, config.replay_size, logdir / 'replay')
  args = config.run.update(batch_steps=config.batch_size * config.batch_length)
  try:
    embodied.run.train(agent, env, replay, logger, args)
  finally:
    env.close()
    logger.close()


if __name__ == '__main__':
  main()
