"""Command-line entry point: python dreamerv3/train.py --configs crafter --run.logdir DIR

Parses the config, builds envs, replay, logger and agent, then runs the loop
named by run.script. Rerunning the same command with the same logdir resumes.
"""

import pathlib
import sys

if __package__ in (None, ''):
  # Run as a script: make the repository root importable.
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import embodied
from embodied.core.config import ConfigError, exit_on_config_error, load_config, load_yaml

USER_ERRORS = (
    embodied.replay.ReplayMemoryError, embodied.wrappers.EnvError,
    embodied.core.batch.EnvProcessDied, embodied.CheckpointError)
SCRIPTS = ('train', 'train_save', 'train_eval', 'eval_only')
CONFIGS = pathlib.Path(__file__).resolve().parent / 'configs.yaml'


def parse(argv):
  """Returns the resolved config from the command line (raises ConfigError)."""
  config, _ = load_config(load_yaml(CONFIGS), argv)
  if config.run.script not in SCRIPTS:
    raise ConfigError(
        f"Config key 'run.script' must be one of {', '.join(SCRIPTS)}, "
        f"got '{config.run.script}'.")
  return config


def main(argv=None):
  argv = sys.argv[1:] if argv is None else list(argv)
  with exit_on_config_error():
    config = parse(argv)
    from dreamerv3 import jaxagent
    jaxagent.configure_jax(config)  # Before anything touches JAX devices.
    try:
      run(config)
    except USER_ERRORS as e:
      # Problems with the user's setup, not bugs: a message, no traceback.
      print(f'Error: {e}', file=sys.stderr)
      sys.exit(2)


def run(config):
  import dreamerv3
  logdir = resolve_logdir(config)
  print('Logdir:', logdir)
  previous = write_config(config, logdir)
  step = embodied.Counter()
  logger = make_logger(config, logdir, step)
  args = config.run.update(batch_steps=config.batch_size * config.batch_length)
  script = config.run.script
  envs = []
  try:
    env = embodied.envs.make_envs(config, mode='train')
    envs.append(env)
    agent = dreamerv3.Agent(env.obs_space, env.act_space, step, config)
    if config.run.from_checkpoint:
      load_agent(agent, config.run.from_checkpoint)
    if script in ('train', 'train_save'):
      replay = make_replay(config, logdir / 'replay')
      embodied.run.train(agent, env, replay, logger, args)
    elif script == 'train_eval':
      eval_env = embodied.envs.make_envs(config, mode='eval')
      envs.append(eval_env)
      replay = make_replay(config, logdir / 'replay')
      eval_replay = make_replay(
          config, logdir / 'eval_replay', capacity=config.replay_size // 10)
      embodied.run.train_eval(
          agent, env, eval_env, replay, eval_replay, logger, args)
    elif script == 'eval_only':
      if not config.run.from_checkpoint:
        raise ConfigError(
            "run.script eval_only needs --run.from_checkpoint LOGDIR (a logdir "
            "or checkpoint directory of a trained agent).")
      embodied.run.eval_only(agent, env, logger, args)
  except dreamerv3.CheckpointMismatchError as e:
    if previous is not None:
      (logdir / 'config.yaml').write_text(previous)
    raise ConfigError(mismatch_message(e, logdir, previous, config)) from None
  finally:
    for env in envs:
      env.close()
    logger.close()


def resolve_logdir(config):
  """run.logdir, expanded; the default /dev/null becomes a fresh timestamped dir."""
  if config.run.logdir in ('', '/dev/null'):
    import time
    logdir = pathlib.Path('~/logdir').expanduser() / time.strftime('%Y%m%d-%H%M%S')
    print(f'No --run.logdir given: writing to {logdir}')
    return logdir
  return pathlib.Path(config.run.logdir).expanduser()


def write_config(config, logdir):
  """Saves the resolved config; returns the previous file's text, if any."""
  logdir.mkdir(parents=True, exist_ok=True)
  path = logdir / 'config.yaml'
  previous = path.read_text() if path.exists() else None
  config.save(path)
  return previous


def mismatch_message(error, logdir, previous, config):
  lines = [f'The checkpoint in {logdir} does not fit the current config.', str(error)]
  if previous is not None:
    old = embodied.Config(load_yaml_text(previous)).flat
    keys = [k for k, v in config.flat.items() if k in old and old[k] != v]
    if keys:
      changed = ', '.join(f'{k} ({old[k]} -> {config.flat[k]})' for k in keys[:10])
      lines.append(f'Config keys that differ from the saved config.yaml: {changed}.')
  lines.append(
      'The checkpoint was left untouched. Use a new --run.logdir, or start from '
      'its weights with --run.from_checkpoint and a compatible config.')
  return '\n'.join(lines)


def load_yaml_text(text):
  import tempfile
  with tempfile.NamedTemporaryFile('w', suffix='.yaml') as f:
    f.write(text)
    f.flush()
    return load_yaml(f.name)


def load_agent(agent, path):
  from embodied.core.checkpoint import read_tree
  path = pathlib.Path(path).expanduser()
  if (path / 'checkpoint').exists():
    path = path / 'checkpoint'
  trees = read_tree(path)
  if 'agent' not in trees:
    raise ConfigError(f"run.from_checkpoint: {path} holds no agent (found: {sorted(trees)}).")
  agent.load(trees['agent'])
  print(f'Loaded agent from {path}')


def make_replay(config, directory, capacity=None):
  capacity = int(capacity or config.replay_size)
  replay = embodied.replay.Uniform(
      config.batch_length, capacity, directory,
      online=config.replay_online, seed=config.seed)
  return replay


def make_logger(config, logdir, step):
  outputs = embodied.logger.make_outputs(
      logdir, config.run.outputs, config.filter, config.run.steps, config)
  return embodied.Logger(step, outputs)


if __name__ == '__main__':
  main()
