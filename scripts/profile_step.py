"""Where the time of one train step goes: XLA's operations ranked by time.

Builds the agent of a bench case (scripts/bench.py: batch 16 x 64, float32, CPU,
synthetic data), times some steps, counts the page faults and the kernel time
per step, then records a few steps with the JAX profiler and ranks the
compiled step's operations by their own time (a loop's time excludes its body's
operations, which are listed themselves). Names are those of the optimised HLO;
`--hlo FILE` writes it, to look an operation up.

  python scripts/profile_step.py --config cpu --obs vector
  python scripts/profile_step.py --config small --obs image --top 40 --hlo /tmp/hlo.txt
  python scripts/profile_step.py --config cpu --set jax.huge_pages=False

Like the bench, it runs with malloc on transparent huge pages where train.py
would (jax.huge_pages); `--set jax.huge_pages=False` measures without.
"""

import argparse
import collections
import contextlib
import gzip
import io
import json
import pathlib
import re
import resource
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
  sys.path.insert(0, str(ROOT))

from scripts import bench  # noqa: E402

# Profiler events that are not operations of the step (executor, waits, Python).
NOT_OPS = ('$', 'ThunkExecutor', 'SlinkyThreadPool')


def exclusive_times(events):
  """{name: (microseconds, count)} of complete events, minus nested events' time."""
  by_thread = collections.defaultdict(list)
  for event in events:
    if event.get('ph') == 'X':
      by_thread[(event['pid'], event['tid'])].append(event)
  own, count = collections.defaultdict(float), collections.Counter()
  for thread_events in by_thread.values():
    thread_events.sort(key=lambda e: (e['ts'], -e.get('dur', 0)))
    open_events = []
    for event in thread_events:
      while open_events and open_events[-1]['ts'] + open_events[-1]['dur'] <= event['ts']:
        open_events.pop()
      if open_events:
        own[open_events[-1]['name']] -= event['dur']
      own[event['name']] += event['dur']
      count[event['name']] += 1
      open_events.append(event)
  return {name: (own[name], count[name]) for name in own}


def operation_table(times, steps, top):
  """Lines: per-kind totals (name without its .N suffix), then the top operations."""
  ops = {n: v for n, v in times.items() if not n.startswith(NOT_OPS)}
  total = sum(us for us, _ in ops.values())
  kinds = collections.defaultdict(float)
  for name, (us, _) in ops.items():
    kinds[re.sub(r'\.\d+$', '', name)] += us
  lines = [f'Operations: {total / 1e3 / steps:.1f} ms per step, summed over threads.', '',
           f'{"ms/step":>9} {"share":>6}  kind']
  for kind, us in sorted(kinds.items(), key=lambda x: -x[1])[:top]:
    lines.append(f'{us / 1e3 / steps:9.1f} {us / total:6.1%}  {kind}')
  lines += ['', f'{"ms/step":>9} {"calls":>6}  operation']
  for name, (us, calls) in sorted(ops.items(), key=lambda x: -x[1][0])[:top]:
    lines.append(f'{us / 1e3 / steps:9.1f} {calls // steps:6d}  {name}')
  return lines


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--config', default='cpu', choices=bench.CONFIGS)
  parser.add_argument('--obs', default='vector', choices=bench.OBS)
  parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE')
  parser.add_argument('--steps', type=int, default=10, help='timed steps')
  parser.add_argument('--profiled', type=int, default=3, help='steps under the profiler')
  parser.add_argument('--top', type=int, default=25)
  parser.add_argument('--hlo', default='', help='write the optimised HLO of the step here')
  args = parser.parse_args(argv)
  config = bench._config(args.config, args.obs, args.set)
  from dreamerv3 import jaxagent
  if argv is None:   # Our own command line: rerun it on huge pages (jax.huge_pages).
    jaxagent.restart_with_huge_pages(config)
  import jax
  import numpy as np
  from embodied.core.basics import Counter
  spaces, act_space = bench._spaces(args.obs)
  with contextlib.redirect_stdout(io.StringIO()):
    agent = jaxagent.JAXAgent(spaces, act_space, Counter(), config)
  data = agent._device_batch(bench._synthetic(spaces, act_space, (bench.BATCH, bench.LENGTH)))
  carry = agent._initial_carry(agent.params, bench.BATCH)

  def step():
    nonlocal carry
    _, carry, metrics = agent.train(data, carry)
    jax.block_until_ready((agent._state, carry, metrics))

  for _ in range(2):
    step()
  before, times = resource.getrusage(resource.RUSAGE_SELF), []
  for _ in range(args.steps):
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
  after = resource.getrusage(resource.RUSAGE_SELF)
  huge = jaxagent.huge_pages_in_use()
  print(f'{args.config} {args.obs}, huge pages {"on" if huge else "off"}: '
        f'median {np.median(times):.3f} s per step (p10 {np.percentile(times, 10):.3f}, '
        f'p90 {np.percentile(times, 90):.3f}); per step '
        f'{(after.ru_minflt - before.ru_minflt) / args.steps:,.0f} page faults, '
        f'{(after.ru_utime - before.ru_utime) / args.steps:.3f} s user and '
        f'{(after.ru_stime - before.ru_stime) / args.steps:.3f} s kernel CPU time.')
  if args.hlo:
    pathlib.Path(args.hlo).write_text(
        agent._train.lower(agent._state, data, carry).compile().as_text())
  with tempfile.TemporaryDirectory() as tmp:
    jax.profiler.start_trace(tmp, create_perfetto_trace=True)
    for _ in range(args.profiled):
      step()
    jax.profiler.stop_trace()
    [trace] = pathlib.Path(tmp).rglob('perfetto_trace.json.gz')
    events = json.loads(gzip.decompress(trace.read_bytes()))
  events = events['traceEvents'] if isinstance(events, dict) else events
  print('\n'.join(operation_table(exclusive_times(events), args.profiled, args.top)))


if __name__ == '__main__':
  main()
