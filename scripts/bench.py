"""Benchmark of the DreamerV3 agent on the CPU (issue 4, docs/benchmarks.md).

For each (config, observation type) it measures, in a fresh subprocess so that
peak RSS and compile caches are per case: compile times of the train and policy
steps, seconds per train step (median, p10, p90 after warm-up), FLOPs per train
step counted over every loop iteration, the fp32 matmul peak of this machine
measured in the same process, the utilisation of that peak, policy step times,
replay sampling time, peak RSS and parameter counts.

  python scripts/bench.py                      # debug, cpu, small, medium x vector, image
  python scripts/bench.py --quick              # debug and small, fewer steps (< 3 min idle)
  python -m scripts.bench --configs small --obs vector --json bench.json
  python scripts/bench.py --configs cpu --set rssm.unroll=True --set imag_unroll=True

Observations: `vector` is CartPole-v1's (4 floats, 2 actions), `image` is
Crafter's (64x64x3 uint8, 17 actions). Batch 16 x 64, float32 on the CPU.
"""

import argparse
import json
import math
import pathlib
import resource
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
  sys.path.insert(0, str(ROOT))   # `python scripts/bench.py` imports the tree.

CONFIGS = ('debug', 'cpu', 'small', 'medium')
OBS = ('vector', 'image')
BATCH, LENGTH = 16, 64
MATMUL = 2048
# The first release on the reference machine (issue 4): seconds per train step of
# `small` at a matmul peak of REF_PEAK GFLOP/s.
REF_STEP = {'vector': 2.28, 'image': 25.1}
REF_PEAK = 450.0


# FLOPs counted from the jaxpr, every loop iteration included.

# Primitives that only move or reinterpret data: no arithmetic.
_FREE = {
    'reshape', 'broadcast_in_dim', 'transpose', 'squeeze', 'expand_dims', 'slice',
    'dynamic_slice', 'dynamic_update_slice', 'concatenate', 'pad', 'gather', 'scatter',
    'select_n', 'convert_element_type', 'iota', 'copy', 'copy_p', 'rev', 'stop_gradient',
    'bitcast_convert_type', 'random_bits', 'random_seed', 'random_wrap', 'random_unwrap',
    'random_fold_in', 'random_split', 'threefry2x32', 'shift_right_logical', 'shift_left',
    'and', 'or', 'not', 'xor', 'eq', 'ne', 'lt', 'le', 'gt', 'ge', 'sort', 'argmax',
    'argmin', 'clamp', 'sharding_constraint', 'device_put', 'split', 'square_p'}


def _size(aval):
  return math.prod(getattr(aval, 'shape', ()))


def _subjaxprs(eqn):
  """The jaxprs a higher-order primitive runs once each (pjit, custom_jvp, remat...)."""
  found = []
  for value in eqn.params.values():
    for item in value if isinstance(value, (tuple, list)) else (value,):
      jaxpr = getattr(item, 'jaxpr', item)
      if hasattr(jaxpr, 'eqns'):
        found.append(jaxpr)
  return found


def _taps(size_in, size_out, kernel, stride, pad_lo, lhs_dil, rhs_dil):
  """(output position, kernel tap) pairs of one spatial axis that meet a real input
  element, i.e. not padding and not a zero inserted by lhs dilation."""
  dilated = (size_in - 1) * lhs_dil + 1
  count = 0
  for o in range(size_out):
    for k in range(kernel):
      p = o * stride + k * rhs_dil - pad_lo
      count += 0 <= p < dilated and p % lhs_dil == 0
  return count


def _conv_macs(eqn):
  """Multiply-adds of a convolution that touch real inputs (as XLA's cost analysis)."""
  lhs, rhs = eqn.invars[0].aval.shape, eqn.invars[1].aval.shape
  out = eqn.outvars[0].aval.shape
  dims, params = eqn.params['dimension_numbers'], eqn.params
  macs = out[dims.out_spec[0]] * out[dims.out_spec[1]] * rhs[dims.rhs_spec[1]]
  for i, (lhs_d, rhs_d, out_d) in enumerate(zip(
      dims.lhs_spec[2:], dims.rhs_spec[2:], dims.out_spec[2:])):
    macs *= _taps(lhs[lhs_d], out[out_d], rhs[rhs_d], params['window_strides'][i],
                  params['padding'][i][0], params['lhs_dilation'][i], params['rhs_dilation'][i])
  return macs


def train_flops(fn, *args):
  """(matmul FLOPs, other FLOPs) of fn(*args) after dead-code elimination, which
  drops what XLA would not compute (e.g. primal values of linear functions)."""
  import jax
  from jax._src.interpreters import partial_eval as pe   # No public DCE API yet.
  closed = jax.make_jaxpr(fn)(*args)
  jaxpr, _ = pe.dce_jaxpr(closed.jaxpr, [True] * len(closed.jaxpr.outvars))
  return count_flops(jaxpr)


def count_flops(jaxpr):
  """(matmul FLOPs, other FLOPs) of a jaxpr, scan bodies times their length.

  dot_general and convolutions count 2 per multiply-add; elementwise arithmetic
  and reductions 1 per element (as XLA's cost analysis); data movement nothing.
  cond counts its most expensive branch; a while loop (trip count unknown at
  trace time) counts its body once.
  """
  jaxpr = getattr(jaxpr, 'jaxpr', jaxpr)
  matmul = other = 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    out = eqn.outvars[0].aval
    if name == 'scan':
      inner = count_flops(eqn.params['jaxpr'])
      matmul += eqn.params['length'] * inner[0]
      other += eqn.params['length'] * inner[1]
    elif name == 'cond':
      inner = max((count_flops(b) for b in eqn.params['branches']), key=sum)
      matmul, other = matmul + inner[0], other + inner[1]
    elif name == 'dot_general':
      (lhs_contract, _), _ = eqn.params['dimension_numbers']
      lhs = eqn.invars[0].aval.shape
      matmul += 2 * _size(out) * math.prod(lhs[d] for d in lhs_contract)
    elif name == 'conv_general_dilated':
      matmul += 2 * _conv_macs(eqn)
    elif _subjaxprs(eqn):
      for sub in _subjaxprs(eqn):
        inner = count_flops(sub)
        matmul, other = matmul + inner[0], other + inner[1]
    elif name.startswith('reduce_') or name in ('argmax', 'cumsum', 'cumprod', 'cumlogsumexp'):
      other += _size(eqn.invars[0].aval)
    elif name not in _FREE:
      other += _size(out)
  return matmul, other


# Measurements inside one case's process.

def _spaces(obs):
  from embodied.core.base import Space, make_obs_space
  import numpy as np
  if obs == 'vector':
    sensors, actions = {'vector': Space(np.float32, (4,))}, 2
  else:
    sensors, actions = {'image': Space(np.uint8, (64, 64, 3))}, 17
  return make_obs_space(sensors), {'action': Space(np.float32, (actions,), 0, 1)}


def _config(name, obs, overrides=()):
  """The config of a case; overrides are 'key=value' strings (--set)."""
  from embodied.core.config import load_config, load_yaml
  args = ['--configs', name, '--jax.platform', 'cpu', '--jax.precision', 'float32',
          '--jax.prealloc', 'False', '--batch_size', str(BATCH), '--batch_length', str(LENGTH)]
  keys = ('image', '$^') if obs == 'image' else ('$^', 'vector')
  for part in ('encoder', 'decoder'):
    args += [f'--{part}.cnn_keys', keys[0], f'--{part}.mlp_keys', keys[1]]
  for item in overrides:
    key, _, value = item.partition('=')
    args += [f'--{key}', value]
  return load_config(load_yaml(ROOT / 'configs.yaml'), args)[0]


def _synthetic(spaces, act_space, lead, seed=0):
  """Random arrays of every space with leading dims `lead`; one-hot actions."""
  import numpy as np
  rng = np.random.default_rng(seed)
  out = {}
  for key, space in spaces.items():
    if space.dtype == np.uint8:
      out[key] = rng.integers(0, 256, lead + space.shape, dtype=np.uint8)
    elif space.dtype == bool:
      out[key] = np.zeros(lead + space.shape, bool)
    else:
      out[key] = rng.normal(size=lead + space.shape).astype(space.dtype)
  classes = act_space['action'].shape[0]
  out['action'] = np.eye(classes, dtype=np.float32)[rng.integers(0, classes, lead)]
  return out


def _quantiles(times):
  import numpy as np
  return {'median': float(np.median(times)), 'p10': float(np.percentile(times, 10)),
          'p90': float(np.percentile(times, 90))}


def matmul_peak(repeats=20):
  """Median GFLOP/s of a jitted float32 2048^3 matrix product: (per wall second,
  per CPU second of this process). The second is less sensitive to other load."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  a = jnp.asarray(np.random.default_rng(0).normal(size=(MATMUL, MATMUL)), jnp.float32)
  product = jax.jit(lambda a, b: a @ b)
  product(a, a).block_until_ready()
  times, cpu = [], []
  for _ in range(repeats):
    start, start_cpu = time.perf_counter(), time.process_time()
    product(a, a).block_until_ready()
    times.append(time.perf_counter() - start)
    cpu.append(time.process_time() - start_cpu)
  flops = 2 * MATMUL ** 3 / 1e9
  return flops / float(np.median(times)), flops / float(np.median(cpu))


def _bench_train(agent, data, steps, warmup):
  """Compile time, FLOPs and step times of agent.train on one device batch."""
  import jax
  start = time.perf_counter()
  carry = agent._initial_carry(agent.params, BATCH)
  matmul, other = train_flops(agent.dreamer.train, agent._state, data, carry)
  lowered = agent._train.lower(agent._state, data, carry)
  compile_start = time.perf_counter()
  compiled = lowered.compile()
  compile_s = time.perf_counter() - compile_start
  trace_s = compile_start - start
  xla_flops = (compiled.cost_analysis() or {}).get('flops', float('nan'))
  times, cpu = [], []
  for i in range(warmup + steps):
    if i == warmup:
      usage = resource.getrusage(resource.RUSAGE_SELF)
    start, start_cpu = time.perf_counter(), time.process_time()
    _, carry, metrics = agent.train(data, carry)
    jax.block_until_ready((agent._state, carry, metrics))
    times.append(time.perf_counter() - start)
    cpu.append(time.process_time() - start_cpu)
  after = resource.getrusage(resource.RUSAGE_SELF)
  return {'page_faults_per_step': (after.ru_minflt - usage.ru_minflt) / steps,
          'system_s_per_step': (after.ru_stime - usage.ru_stime) / steps,
          'compile_s': compile_s, 'trace_s': trace_s, 'first_step_s': times[0],
          'times': times[warmup:], 'cpu_times': cpu[warmup:], 'flops_per_step': matmul + other, 'matmul_flops': matmul,
          'xla_cost_analysis_flops': float(xla_flops)}


def _bench_policy(agent, spaces, act_space, repeats):
  """Per-call time of agent.policy for 1, 4 and 16 envs, first calls separately."""
  import numpy as np
  result = {}
  for envs in (1, 4, 16):
    obs = _synthetic(spaces, act_space, (envs,))
    obs.pop('action')
    start = time.perf_counter()
    _, state = agent.policy(obs)
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
      start = time.perf_counter()
      _, state = agent.policy(obs, state)
      times.append(time.perf_counter() - start)
    result[envs] = {'first_s': first, 'call_s': float(np.median(times))}
  return result


def _bench_replay(spaces, act_space, repeats, steps=2000):
  """Seconds per batch of embodied.replay.Uniform.dataset filled with synthetic steps."""
  import numpy as np
  from embodied.replay import Uniform
  replay = Uniform(LENGTH, 10 ** 6)
  episode = _synthetic(spaces, act_space, (steps,))
  for t in range(steps):
    replay.add({k: v[t] for k, v in episode.items()})
  dataset = replay.dataset(BATCH)
  next(dataset)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    next(dataset)
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def use_lax_convolutions():
  """Makes nets.Conv2D call XLA's convolutions instead of the matmul forms, for
  comparing the two (--lax-conv)."""
  from dreamerv3 import nets
  from scripts import bench_conv
  nets.conv_matmul = bench_conv.lax_conv
  nets.conv_transpose_matmul = bench_conv.lax_conv_transpose


def run_case(name, obs, steps, warmup, lax_conv=False, overrides=()):
  """All measurements of one (config, obs) case, as a dict for the JSON list."""
  if lax_conv:
    use_lax_convolutions()
  import contextlib
  import io
  import jax
  import numpy as np
  from embodied.core.basics import Counter
  from dreamerv3 import jaxagent, modules
  config = _config(name, obs, overrides)
  spaces, act_space = _spaces(obs)
  start = time.perf_counter()
  with contextlib.redirect_stdout(io.StringIO()):
    agent = jaxagent.JAXAgent(spaces, act_space, Counter(), config)
  init_s = time.perf_counter() - start
  data = agent._device_batch(_synthetic(spaces, act_space, (BATCH, LENGTH)))
  params, state = agent.params, agent._state
  trainable = {k: v for k, v in params.items() if not k.split('/')[0].endswith('slow_critic')}
  state_mb = sum(x.nbytes for x in jax.tree.leaves((state['params'], state['opt']))) / 2 ** 20
  peak, peak_cpu = matmul_peak()
  train = _bench_train(agent, data, steps, warmup)
  peak_after, peak_cpu_after = matmul_peak()
  policy = _bench_policy(agent, spaces, act_space, repeats=50)
  replay_s = _bench_replay(spaces, act_space, repeats=20)
  step = _quantiles(train['times'])
  seconds = step['median']
  peak = max(peak, peak_after)   # The less contended of the two measurements.
  peak_cpu = max(peak_cpu, peak_cpu_after)
  cpu_s = float(np.median(train['cpu_times']))
  result = {
      'config': name, 'obs': obs, 'conv': 'lax' if lax_conv else 'matmul',
      'overrides': list(overrides),
      'params': modules.count(params),
      'trainable_params': modules.count(trainable), 'state_mb': state_mb,
      'init_s': init_s, 'compile_s': train['compile_s'], 'trace_s': train['trace_s'],
      'first_step_s': train['first_step_s'],
      'policy_compile_s': policy[16]['first_s'],
      'train_step_s': seconds, 'train_step_p10_s': step['p10'], 'train_step_p90_s': step['p90'],
      'train_steps': len(train['times']),
      'flops_per_step': train['flops_per_step'], 'matmul_flops_per_step': train['matmul_flops'],
      'xla_cost_analysis_flops': train['xla_cost_analysis_flops'],
      'gflops': train['flops_per_step'] / seconds / 1e9, 'matmul_peak_gflops': peak,
      'utilization': train['flops_per_step'] / seconds / 1e9 / peak,
      'page_faults_per_step': train['page_faults_per_step'],
      'system_s_per_step': train['system_s_per_step'],
      'train_step_cpu_s': cpu_s, 'matmul_peak_gflops_per_cpu_s': peak_cpu,
      'cpu_utilization': train['flops_per_step'] / cpu_s / 1e9 / peak_cpu,
      'speed_vs_first_release': (REF_STEP[obs] * REF_PEAK / (seconds * peak)
                                 if name == 'small' else None),
      'policy_step_ms': policy[16]['call_s'] / 16 * 1e3,
      'policy_call_ms': {str(n): p['call_s'] * 1e3 for n, p in policy.items()},
      'replay_sample_s': replay_s, 'replay_fraction': replay_s / seconds,
      'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
      'huge_pages': jaxagent.huge_pages_in_use(),
      'loadavg': _loadavg(), 'steps_info': f'{warmup} warm-up + {steps} timed'}
  return result


def _case_environ(name, obs, overrides):
  """The environment of a case (None: ours): malloc on huge pages where train.py uses them."""
  import contextlib
  import io
  from dreamerv3 import jaxagent
  with contextlib.redirect_stderr(io.StringIO()):   # The case prints the config's notices.
    config = _config(name, obs, overrides)
  return jaxagent.huge_pages_environ(config)


def _loadavg():
  try:
    return pathlib.Path('/proc/loadavg').read_text().split()[0]
  except OSError:
    return '?'


# The driver: one subprocess per case, a table, JSON.

COLUMNS = (
    ('config', '{}'), ('obs', '{}'), ('params', '{:,}'), ('compile_s', '{:.1f}'),
    ('train_step_s', '{:.3f}'), ('train_step_p10_s', '{:.3f}'), ('train_step_p90_s', '{:.3f}'),
    ('flops_per_step', '{:.3g}'), ('gflops', '{:.1f}'), ('matmul_peak_gflops', '{:.0f}'),
    ('utilization', '{:.1%}'), ('speed_vs_first_release', '{:.2f}'), ('policy_step_ms', '{:.2f}'),
    ('replay_sample_s', '{:.4f}'), ('page_faults_per_step', '{:.0f}'), ('peak_rss_mb', '{:.0f}'),
    ('loadavg', '{}'))


def format_table(results):
  header = [name for name, _ in COLUMNS]
  rows = [[('-' if r.get(k) is None else fmt.format(r[k])) for k, fmt in COLUMNS]
          for r in results]
  widths = [max(len(x) for x in column) for column in zip(header, *rows)]
  lines = ['  '.join(x.rjust(w) for x, w in zip(row, widths)) for row in [header] + rows]
  return '\n'.join(lines)


def _steps(name, args):
  if args.steps:
    return args.steps, args.warmup
  if args.quick:
    return (5, 1) if name == 'debug' else (2, 1)
  return 20, 2


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--configs', nargs='+', default=None, choices=CONFIGS)
  parser.add_argument('--obs', nargs='+', default=list(OBS), choices=OBS)
  parser.add_argument('--quick', action='store_true', help='debug and small, fewer steps')
  parser.add_argument('--steps', type=int, default=0, help='timed train steps (default 20)')
  parser.add_argument('--warmup', type=int, default=2, help='untimed steps after compiling')
  parser.add_argument('--json', default='', help='write the results to this file')
  parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                      help='config override for every case, e.g. --set rssm.unroll=True')
  parser.add_argument('--lax-conv', action='store_true',
                      help="XLA's convolutions instead of the matmul forms (for comparison)")
  parser.add_argument('--case', default='', help=argparse.SUPPRESS)  # config:obs, in-process
  args = parser.parse_args(argv)
  if args.case:
    name, obs = args.case.split(':')
    steps, warmup = _steps(name, args)
    print(json.dumps(run_case(name, obs, steps, warmup, args.lax_conv, args.set)))
    return
  configs = args.configs or (['debug', 'small'] if args.quick else list(CONFIGS))
  results = []
  for name in configs:
    for obs in args.obs:
      command = [sys.executable, str(pathlib.Path(__file__).resolve()), '--case', f'{name}:{obs}']
      command += ['--quick'] * args.quick + ['--lax-conv'] * args.lax_conv
      command += [f'--set={item}' for item in args.set]
      if args.steps:
        command += ['--steps', str(args.steps), '--warmup', str(args.warmup)]
      print(f'Running {name} {obs} ...', file=sys.stderr, flush=True)
      out = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True, cwd=ROOT,
                           env=_case_environ(name, obs, args.set))
      results.append(json.loads(out.stdout.strip().splitlines()[-1]))
      print(format_table(results[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
  print(format_table(results))
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(results, indent=2) + '\n')


if __name__ == '__main__':
  main()
