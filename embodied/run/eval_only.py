"""Evaluation without training: run episodes with a loaded agent and log them."""

import functools

from embodied.core.basics import Clock
from embodied.core.driver import Driver
from embodied.run import common


def eval_only(agent, env, logger, args):
  """Acts in mode 'eval' until args.eval_eps episodes end or logger.step reaches args.steps.

  The caller has loaded the agent (run.from_checkpoint). Nothing is trained
  or checkpointed; episode statistics are logged under episode/ every
  args.log_every seconds and at the end. logger.step counts the eval env
  steps summed over envs.
  """
  step = logger.step
  should_log = Clock(args.log_every)
  episodes = common.Mean()
  finished = 0

  def on_episode(episode, worker):
    nonlocal finished
    finished += 1
    episodes.add(common.episode_metrics(episode, args))

  driver = Driver(env)
  driver.on_step(lambda tran, worker: step.increment())
  driver.on_episode(on_episode)
  policy = functools.partial(agent.policy, mode='eval')
  print(f'Evaluating for {args.eval_eps} episodes.')

  while finished < args.eval_eps and step < args.steps:
    driver(policy, steps=1)
    if should_log(step):
      logger.add(episodes.result(), prefix='episode')
      logger.write(fps=True)
  logger.add(episodes.result(), prefix='episode')
  logger.write(fps=True)
