"""The training loop: act in the env, store transitions, train at a fixed ratio."""

import functools
import pathlib

from embodied.core.basics import Clock, Until
from embodied.core.checkpoint import Checkpoint
from embodied.core.driver import Driver
from embodied.core.random_agent import RandomAgent
from embodied.run import common


def train(agent, env, replay, logger, args):
  """Trains `agent` on `env` until logger.step reaches args.steps.

  args is config.run with batch_steps = batch_size * batch_length; the batch
  size is batch_steps // replay.length. The step counter (logger.step) counts
  env steps summed over envs, random prefill included.

  Order: load the checkpoint (or save a first one); prefill the replay with
  a random policy to max(batch_steps, train_fill) items unless it holds that
  many already (a resume); on a fresh start args.pretrain updates; then act,
  with updates after every env step as common.train_schedule owes them
  (run.train_ratio, or run.train_every when > 0). Metrics are logged every
  args.log_every seconds: train/ (mean over the updates since the last log),
  report/, replay/, episode/ (mean over the episodes since the last log)
  and fps/. Everything needed to resume (step, agent, replay, schedule) is
  checkpointed to logdir/checkpoint every args.save_every seconds and at the
  end; calling train again with the same logdir continues where it stopped.
  """
  logdir = pathlib.Path(args.logdir)
  step = logger.step
  should_train = common.train_schedule(args)
  should_log = Clock(args.log_every)
  should_save = Clock(args.save_every)
  should_explore = Until(args.expl_until)
  episodes, metrics, updates = common.Mean(), common.Mean(), common.Rate()

  driver = Driver(env)
  driver.on_step(lambda tran, worker: step.increment())
  driver.on_step(common.replay_adder(replay))
  driver.on_episode(lambda ep, worker: episodes.add(common.episode_metrics(ep, args)))

  common.check_memory(env, replay.capacity, args.check_memory)
  checkpoint = Checkpoint(logdir / 'checkpoint')
  checkpoint.step = step
  checkpoint.agent = agent
  checkpoint.replay = replay
  checkpoint.should_train = should_train
  resumed = checkpoint.load_or_save()
  should_save()  # The clock's first call is True; the next save is due in save_every.
  print(f"{'Resumed' if resumed else 'Started'} training at step {int(step)}.")

  random = RandomAgent(env.obs_space, env.act_space, step)
  target = max(args.batch_steps, args.train_fill)
  common.prefill(driver, replay, random.policy, target, 'train')
  dataset = agent.dataset(replay.dataset(common.batch_size(args, replay)))

  state = None

  def update():
    nonlocal state
    _, state, mets = agent.train(next(dataset), state)
    metrics.add(mets)
    updates.add()

  if not resumed:
    for _ in range(args.pretrain):
      update()

  def train_step(tran, worker):
    for _ in range(should_train(step)):
      update()

  driver.on_step(train_step)

  def log():
    logger.add(metrics.result(), prefix='train')
    logger.add(agent.report(next(dataset)), prefix='report')
    logger.add(replay.stats(), prefix='replay')
    logger.add(episodes.result(), prefix='episode')
    logger.scalar('fps/train', updates.result())
    logger.write(fps=True)

  while step < args.steps:
    mode = 'explore' if should_explore(step) else 'train'
    driver(functools.partial(agent.policy, mode=mode), steps=1)
    if should_log(step):
      log()
    if should_save(step):
      checkpoint.save()
  log()
  checkpoint.save()
