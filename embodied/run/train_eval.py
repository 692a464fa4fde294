"""The training loop with periodic evaluation episodes on separate envs."""

import functools
import pathlib

from embodied.core.basics import Clock, Every, Until
from embodied.core.driver import Driver
from embodied.core.random_agent import RandomAgent
from embodied.run import common


def train_eval(agent, train_env, eval_env, train_replay, eval_replay, logger, args):
  """Like run.train, plus args.eval_eps evaluation episodes every args.eval_every steps.

  Evaluation acts in mode 'eval' on eval_env, starting fresh episodes each
  time; its transitions go to eval_replay (which the agent never trains on)
  and its episode statistics are logged under eval_episode/. With
  args.eval_initial the first evaluation runs before training (and again
  right after a resume). Eval steps do not count towards logger.step.
  Checkpoints, failure handling and the non-finite guard are as in run.train.
  """
  logdir = pathlib.Path(args.logdir)
  step = logger.step
  should_train = common.train_schedule(args)
  should_eval = Every(args.eval_every)
  should_log = Clock(args.log_every)
  should_save = Clock(args.save_every)
  should_explore = Until(args.expl_until)
  episodes, eval_episodes = common.Mean(), common.Mean()

  driver = Driver(train_env)
  driver.on_step(lambda tran, worker: step.increment())
  driver.on_step(common.replay_adder(train_replay))
  driver.on_episode(lambda ep, worker: episodes.add(common.episode_metrics(ep, args)))
  eval_driver = Driver(eval_env)
  eval_driver.on_step(common.replay_adder(eval_replay))
  eval_driver.on_episode(
      lambda ep, worker: eval_episodes.add(common.episode_metrics(ep, args)))

  batch_size = common.batch_size(args, train_replay)
  updates = common.Updates(
      agent, train_replay, batch_size, args.nonfinite_limit, logdir / 'nonfinite_batch.npz')

  common.check_memory(
      train_env, train_replay.capacity + eval_replay.capacity, args.check_memory)
  # The train replay has the same name as in run.train, so scripts can switch.
  checkpoint, resumed = common.resume_or_start(
      logdir, logger, step, agent=agent, replay=train_replay, eval_replay=eval_replay,
      should_train=should_train, updates=updates)
  should_save()  # The clock's first call is True; the next save is due in save_every.

  # Reports on eval data sample in this thread too, from the eval replay's own RNG.
  eval_batches = eval_replay.dataset(batch_size)

  def train_step(tran, worker):
    for _ in range(should_train(step)):
      updates()

  def evaluate():
    eval_driver.reset()
    eval_driver(functools.partial(agent.policy, mode='eval'), episodes=args.eval_eps)
    logger.add(eval_episodes.result(), prefix='eval_episode')

  def log():
    metrics, rate = updates.result()
    logger.add(metrics, prefix='train')
    if updates.last_batch is not None:
      logger.add(agent.report(updates.last_batch), prefix='report')
    logger.add(agent.report(next(eval_batches)), prefix='eval_report')
    logger.add(train_replay.stats(), prefix='replay')
    logger.add(eval_replay.stats(), prefix='eval_replay')
    logger.add(episodes.result(), prefix='episode')
    logger.scalar('fps/train', rate)
    logger.write(fps=True)

  with common.SignalStop() as stop, common.checkpoint_on_failure(checkpoint, step):
    driver.on_step(stop.check)
    random = RandomAgent(train_env.obs_space, train_env.act_space, step)
    filled = common.prefill(
        driver, train_replay, random.policy, max(args.batch_steps, args.train_fill), 'train')
    # The eval prefill gets its own driver, so random episodes are not logged as evals.
    eval_prefill = Driver(eval_env)
    eval_prefill.on_step(common.replay_adder(eval_replay))
    common.prefill(
        eval_prefill, eval_replay, random.policy, max(args.batch_steps, args.eval_fill), 'eval')
    if not args.eval_initial:
      should_eval(step)  # Consume the first call, which is always due.
    if filled or not resumed:   # Also after a resume that was killed during the prefill.
      for _ in range(args.pretrain):
        updates()
    driver.on_step(train_step)
    while step < args.steps:
      if should_eval(step):
        evaluate()
      mode = 'explore' if should_explore(step) else 'train'
      driver(functools.partial(agent.policy, mode=mode), steps=1)
      if should_log(step):
        log()
      if should_save(step):
        checkpoint.save()
    log()
  checkpoint.save()
