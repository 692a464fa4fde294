"""The training loop: act in the env, store transitions, train at a fixed ratio."""

import functools
import pathlib

from embodied.core.basics import Clock, Until
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
  report/ (on the newest training batch), replay/, episode/ (mean over the
  episodes since the last log) and fps/. Everything needed to resume (step,
  agent, replay, schedule, the sampled next batch) is checkpointed to
  logdir/checkpoint every
  args.save_every seconds, at the end, and when the loop stops on an error
  or Ctrl-C; calling train again with the same logdir continues where it
  stopped (docs/reliability.md says how exactly). After args.nonfinite_limit
  consecutive skipped updates it stops with common.NonfiniteError.
  """
  logdir = pathlib.Path(args.logdir)
  step = logger.step
  should_train = common.train_schedule(args)
  should_log = Clock(args.log_every)
  should_save = Clock(args.save_every)
  should_explore = Until(args.expl_until)
  episodes = common.Mean()

  driver = Driver(env)
  driver.on_step(lambda tran, worker: step.increment())
  driver.on_step(common.replay_adder(replay))
  driver.on_episode(lambda ep, worker: episodes.add(common.episode_metrics(ep, args)))

  updates = common.Updates(
      agent, replay, common.batch_size(args, replay), args.nonfinite_limit,
      logdir / 'nonfinite_batch.npz')

  common.check_memory(env, replay.capacity, args.check_memory)
  checkpoint, resumed = common.resume_or_start(
      logdir, logger, step, agent=agent, replay=replay, should_train=should_train,
      updates=updates)   # updates holds the batch sampled for the next update.
  should_save()  # The clock's first call is True; the next save is due in save_every.

  def train_step(tran, worker):
    for _ in range(should_train(step)):
      updates()

  def log():
    metrics, rate = updates.result()
    logger.add(metrics, prefix='train')
    if updates.last_batch is not None:
      logger.add(agent.report(updates.last_batch), prefix='report')
    logger.add(replay.stats(), prefix='replay')
    logger.add(episodes.result(), prefix='episode')
    logger.scalar('fps/train', rate)
    logger.write(fps=True)

  with common.SignalStop() as stop, common.checkpoint_on_failure(checkpoint, step):
    driver.on_step(stop.check)
    random = RandomAgent(env.obs_space, env.act_space, step)
    target = max(args.batch_steps, args.train_fill)
    filled = common.prefill(driver, replay, random.policy, target, 'train')
    if filled or not resumed:   # Also after a resume that was killed during the prefill.
      for _ in range(args.pretrain):
        updates()
    driver.on_step(train_step)
    while step < args.steps:
      mode = 'explore' if should_explore(step) else 'train'
      driver(functools.partial(agent.policy, mode=mode), steps=1)
      if should_log(step):
        log()
      if should_save(step):
        checkpoint.save()
    log()
  checkpoint.save()
