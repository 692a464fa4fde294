"""Command-line entry point: python dreamerv3/train.py --configs crafter --run.logdir DIR

Parses the config, builds envs, replay, logger and agent, then runs the loop
named by run.script. Rerunning the same command with the same logdir resumes.
"""

import pathlib
import re
import sys

if __package__ in (None, ''):
  # Run as a script: make the repository root importable.
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import embodied
from embodied.core.config import ConfigError, exit_on_config_error, load_config, load_yaml

# Problems with the user's setup or data, not bugs: a message, no traceback, exit 2.
USER_ERRORS = (
    embodied.replay.ReplayMemoryError, embodied.wrappers.EnvError,
    embodied.core.batch.EnvProcessDied, embodied.CheckpointError,
    embodied.run.common.NonfiniteError)
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
  from_command_line = argv is None
  argv = sys.argv[1:] if from_command_line else list(argv)
  with exit_on_config_error():
    config = parse(argv)
    from dreamerv3 import jaxagent
    if from_command_line:
      jaxagent.restart_with_huge_pages(config)  # Reruns this command once (jax.huge_pages).
    jaxagent.configure_jax(config)  # Before anything touches JAX devices.
    try:
      run(config)   # The loops stop cleanly on SIGINT/SIGTERM (embodied.run.common.SignalStop).
    except USER_ERRORS as e:
      print(f'Error: {e}', file=sys.stderr)
      sys.exit(2)
    except KeyboardInterrupt:
      print('Interrupted. Rerun the same command to continue from the last checkpoint.',
            file=sys.stderr)
      sys.exit(130)


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
    check_memory(config, env)  # Before the agent compiles, which can take minutes.
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
  path = logdir / 'config.yaml'
  try:
    logdir.mkdir(parents=True, exist_ok=True)
    previous = path.read_text() if path.exists() else None
    config.save(path)
  except OSError as e:
    reason = f'{e.strerror} ({e.filename})' if e.strerror else str(e)
    raise ConfigError(
        f'Cannot write to run.logdir {logdir}: {reason}. Choose a writable '
        f'--run.logdir.') from None
  return previous


def check_memory(config, env):
  """Refuses a replay that cannot fit into RAM (run.check_memory); the loop prints the estimate."""
  if not config.run.check_memory or config.run.script == 'eval_only':
    return
  capacity = config.replay_size
  if config.run.script == 'train_eval':
    capacity += config.replay_size // 10   # The eval replay, see run().
  spaces = {**env.obs_space, **{k: v for k, v in env.act_space.items() if k != 'reset'}}
  embodied.replay.memory_report(spaces, capacity, check=True)


# Config keys that never change parameter shapes; listed after the others.
RUNTIME_KEYS = re.compile(
    r'^(run|jax|envs)\.|^(seed|replay_size|replay_online|filter|data_loaders|batch_size|'
    r'batch_length|eval_dir)$')


def mismatch_message(error, logdir, previous, config):
  """The refusal of an incompatible checkpoint: config keys that changed first, then shapes."""
  lines = [f'The checkpoint in {logdir} does not fit the current config.']
  if previous is not None:
    old = embodied.Config(load_yaml_text(previous)).flat
    keys = [k for k, v in config.flat.items() if k in old and old[k] != v]
    changed = lambda keys: ', '.join(f'{k} ({old[k]} -> {config.flat[k]})' for k in keys)
    model = [k for k in keys if not RUNTIME_KEYS.search(k)]
    runtime = [k for k in keys if RUNTIME_KEYS.search(k)]
    if model:
      lines.append(f'Config keys that differ from its config.yaml: {changed(model)}.')
    if runtime:
      lines.append(f'Also changed, but these do not change shapes: {changed(runtime)}.')
  lines.append(str(error))
  lines.append('The checkpoint was left untouched.')
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
  from dreamerv3 import CheckpointMismatchError
  try:
    agent.load(trees['agent'])
  except CheckpointMismatchError as e:
    raise ConfigError(f'run.from_checkpoint {path} does not fit the current config.\n{e}') from None
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
