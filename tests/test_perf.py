"""Tests of the performance work (issue 4): faster forms compute the same numbers,
and the benchmark's FLOP counter counts what XLA would compute."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dreamerv3 import agent as agentlib
from dreamerv3 import jaxutils, modules, nets
from scripts import bench

HWIO = ('NHWC', 'HWIO', 'NHWC')
HWOI = ('NHWC', 'HWOI', 'NHWC')


def lax_conv_transpose(x, kernel, stride):
  return jax.lax.conv_transpose(x, kernel, (stride, stride), 'SAME', dimension_numbers=HWOI)


# Convolutions as matrix products.

@pytest.mark.parametrize('kernel,stride,size', [(4, 2, 8), (4, 2, 7), (2, 2, 6), (6, 3, 9), (3, 1, 5)])
def test_space_to_depth_conv_equals_lax_conv(kernel, stride, size):
  rng = np.random.default_rng(kernel * 10 + size)
  x = jnp.asarray(rng.normal(size=(2, size, size + 1, 3)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(kernel, kernel, 3, 5)), jnp.float32)
  want = jax.lax.conv_general_dilated(x, w, (stride, stride), 'SAME', dimension_numbers=HWIO)
  got = nets.conv_matmul(x, w, stride)
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_space_to_depth_conv_gradients_equal_lax():
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(3, 8, 8, 4)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(4, 4, 4, 6)), jnp.float32)
  target = jnp.asarray(rng.normal(size=(3, 4, 4, 6)), jnp.float32)
  lax_conv = lambda x, w, s: jax.lax.conv_general_dilated(x, w, (s, s), 'SAME', dimension_numbers=HWIO)
  loss = lambda conv: lambda x, w: jnp.sum(jnp.square(conv(x, w, 2) - target))
  want = jax.grad(loss(lax_conv), (0, 1))(x, w)
  got = jax.grad(loss(nets.conv_matmul), (0, 1))(x, w)
  for g, h in zip(got, want):
    np.testing.assert_allclose(g, h, rtol=1e-4, atol=1e-4)


def test_depth_to_space_inverts_space_to_depth():
  x = jnp.arange(2 * 4 * 6 * 3, dtype=jnp.float32).reshape(2, 4, 6, 3)
  blocks = nets.space_to_depth(x, 2)
  assert blocks.shape == (2, 2, 3, 12)
  np.testing.assert_array_equal(blocks[0, 0, 0], x[0, :2, :2].reshape(-1))   # (row, column, C)
  np.testing.assert_array_equal(nets.depth_to_space(blocks, 2), x)


# Sub-pixel transposed convolution.

@pytest.mark.parametrize('kernel,stride', [(4, 2), (3, 2), (5, 3), (4, 1), (2, 2), (6, 2)])
def test_subpixel_conv_transpose_equals_lax_conv_transpose(kernel, stride):
  rng = np.random.default_rng(kernel * 10 + stride)
  x = jnp.asarray(rng.normal(size=(2, 5, 6, 3)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(kernel, kernel, 4, 3)), jnp.float32)
  want = lax_conv_transpose(x, w, stride)
  got = nets.conv_transpose_matmul(x, w, stride)
  assert got.shape == want.shape == (2, 5 * stride, 6 * stride, 4)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_subpixel_conv_transpose_gradients_equal_lax():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(3, 4, 4, 6)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(4, 4, 5, 6)), jnp.float32)
  target = jnp.asarray(rng.normal(size=(3, 8, 8, 5)), jnp.float32)
  loss = lambda conv: lambda x, w: jnp.sum(jnp.square(conv(x, w, 2) - target))
  want = jax.grad(loss(lax_conv_transpose), (0, 1))(x, w)
  got = jax.grad(loss(nets.conv_transpose_matmul), (0, 1))(x, w)
  for g, h in zip(got, want):
    np.testing.assert_allclose(g, h, rtol=1e-4, atol=1e-4)


def test_subpixel_taps_of_kernels_4_and_3_at_stride_2():
  # out[2m] = x[m-1] w0 + x[m] w2 and out[2m+1] = x[m] w1 + x[m+1] w3.
  table, starts = nets.subpixel_taps(4, 2)
  assert table == [[0, 1], [2, 3]] and starts == [-1, 0]
  # Kernel 3: out[2m] = x[m-1] w0 + x[m] w2, out[2m+1] = x[m] w1 (3 marks no tap).
  table, starts = nets.subpixel_taps(3, 2)
  assert table == [[0, 1], [2, 3]] and starts == [-1, 0]


@pytest.mark.parametrize('transpose', [False, True])
def test_conv2d_module_equals_lax_with_its_parameters(transpose):
  x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 4, 4, 8)), jnp.float32)
  conv = nets.Conv2D(3, 4, 2, transpose=transpose, bias=True)
  params = modules.init(conv, jax.random.PRNGKey(0), x)
  params['bias'] = jnp.arange(3, dtype=jnp.float32)
  got = modules.apply(conv, params, x)
  if transpose:
    want = lax_conv_transpose(x, params['kernel'], 2)
  else:
    want = jax.lax.conv_general_dilated(x, params['kernel'], (2, 2), 'SAME', dimension_numbers=HWIO)
  np.testing.assert_allclose(got, want + params['bias'], rtol=1e-5, atol=1e-5)


# The flat optimiser.

def test_flat_optimizer_equals_optax_on_the_parameter_tree():
  rng = np.random.default_rng(2)
  params = {'a/w': jnp.asarray(rng.normal(size=(3, 2)), jnp.float32),
            'a/b': jnp.asarray(rng.normal(size=(2,)), jnp.float32),
            'other/w': jnp.ones(4)}
  options = {'opt': 'adam', 'lr': 0.05, 'eps': 1e-5, 'clip': 1.0, 'wd': 0.0, 'warmup': 0}
  opt = agentlib.Optimizer('a', ['a'], options, loss_scaling=False)
  tx = jaxutils.make_optimizer(0.05, 1e-5, 1.0)   # Clipping is active: the norms exceed 1.

  def loss(scope, target):
    w, b = scope.param('a/w', None, (3, 2)), scope.param('a/b', None, (2,))
    value = jnp.sum(jnp.square(jnp.tanh(w) + b - target)) * jnp.sum(scope.param('other/w', None, (4,)))
    return value, {}

  state, tree_params = opt.init(params), modules.subtree(params, 'a')
  tree_state = tx.init(tree_params)
  for step in range(3):
    target = jnp.asarray(rng.normal(size=(3, 2)), jnp.float32)
    params, state, _, finite, metrics = opt.update(params, state, loss, target)
    grads = jax.grad(lambda own: loss(modules.Scope({**params, **own}), target)[0])(tree_params)
    updates, tree_state = tx.update(grads, tree_state, tree_params)
    tree_params = jax.tree.map(lambda p, u: p + u, tree_params, updates)
    assert bool(finite)
    for key in tree_params:
      np.testing.assert_allclose(params[key], tree_params[key], rtol=1e-6, atol=1e-6)
    norm = np.sqrt(sum(np.square(np.asarray(g, np.float64)).sum() for g in grads.values()))
    assert float(metrics['a_grad_norm']) == pytest.approx(norm, rel=1e-5)
  np.testing.assert_array_equal(params['other/w'], jnp.ones(4))


# The FLOP counter of scripts/bench.py.

def test_flops_of_a_scan_count_every_iteration():
  x, w = jnp.ones((8, 16)), jnp.ones((16, 16))

  def fn(x, w):
    return jax.lax.scan(lambda c, _: (c @ w, None), x, None, length=5)[0]

  matmul, _ = bench.train_flops(fn, x, w)
  assert matmul == 5 * 2 * 8 * 16 * 16


def test_flops_of_convolutions_match_xla_cost_analysis():
  x, w = jnp.ones((2, 8, 8, 4)), jnp.ones((4, 4, 4, 6))
  dims = ('NHWC', 'HWIO', 'NHWC')
  fns = {
      'strided': lambda x, w: jax.lax.conv_general_dilated(x, w, (2, 2), 'SAME', dimension_numbers=dims),
      'transposed': lambda x, w: jax.lax.conv_transpose(x, w, (2, 2), 'SAME', dimension_numbers=HWOI),
  }
  for name, fn in fns.items():
    kernel = w if name == 'strided' else w.transpose(0, 1, 3, 2)
    for grad in (fn, jax.grad(lambda x, w: fn(x, w).sum(), 1)):
      matmul, _ = bench.train_flops(grad, x, kernel)
      xla = jax.jit(grad).lower(x, kernel).compile().cost_analysis()['flops']
      assert matmul == pytest.approx(xla, rel=0.02), name


def test_flops_skip_dead_code_and_take_the_dearest_branch():
  x = jnp.ones((4, 4))

  def fn(x, flag):
    unused = x @ x @ x     # Dead: XLA never computes it.
    del unused
    return jax.lax.cond(flag, lambda: x @ x @ x, lambda: x)

  matmul, _ = bench.train_flops(fn, x, True)
  assert matmul == 2 * (2 * 4 * 4 * 4)


def test_format_table_has_a_row_per_result():
  row = {name: 1.0 for name, _ in bench.COLUMNS}
  row.update(config='small', obs='vector', params=10, loadavg='0.5')
  lines = bench.format_table([row, {**row, 'speed_vs_first_release': None}]).splitlines()
  column = lines[0].split().index('speed_vs_first_release')
  assert len(lines) == 3 and lines[0].split()[0] == 'config'
  assert lines[1].split()[column] == '1.00' and lines[2].split()[column] == '-'


def test_bench_config_routes_observations_and_applies_overrides():
  config = bench._config('cpu', 'image', ['rssm.unroll=True', 'run.train_ratio=32'])
  assert config.encoder.cnn_keys == 'image' and config.encoder.mlp_keys == '$^'
  assert config.rssm.unroll is True and config.run.train_ratio == 32
  assert (config.batch_size, config.batch_length) == (bench.BATCH, bench.LENGTH)
  assert config.rssm.deter == 128   # The cpu block.
  vector = bench._config('small', 'vector')
  assert vector.decoder.mlp_keys == 'vector' and vector.rssm.deter == 512


@pytest.mark.slow
def test_bench_case_reports_every_documented_field():
  result = bench.run_case('debug', 'vector', steps=1, warmup=0)
  for key in ('config', 'obs', 'params', 'compile_s', 'train_step_s', 'flops_per_step',
              'gflops', 'matmul_peak_gflops', 'utilization', 'speed_vs_first_release',
              'policy_step_ms', 'replay_sample_s', 'peak_rss_mb'):
    assert key in result, key
  assert result['flops_per_step'] > result['xla_cost_analysis_flops'] > 0   # Scans counted fully.
  assert 0 < result['utilization'] < 1.5


# scripts/profile_step.py: ranking the profiler's events by their own time.

def test_profile_exclusive_times_subtract_nested_events():
  from scripts import profile_step
  event = lambda name, ts, dur, tid=1: {'ph': 'X', 'name': name, 'ts': ts, 'dur': dur,
                                        'pid': 1, 'tid': tid}
  events = [
      event('while.1', 0, 100), event('dot.1', 10, 30), event('dot.1', 50, 20),
      event('fusion.2', 60, 5),                  # Nested twice: inside dot.1 inside while.1.
      event('fusion.3', 0, 40, tid=2),          # Another thread overlapping in time.
      {'ph': 'M', 'name': 'thread_name', 'pid': 1, 'tid': 1}]
  times = profile_step.exclusive_times(events)
  assert times == {'while.1': (50.0, 1), 'dot.1': (45.0, 2), 'fusion.2': (5.0, 1),
                   'fusion.3': (40.0, 1)}
  lines = profile_step.operation_table(
      {**times, 'ThunkExecutor::Execute': (999.0, 1), 'fusion.4': (60.0, 2)}, steps=1, top=2)
  assert lines[0] == 'Operations: 0.2 ms per step, summed over threads.'
  assert lines[3].split() == ['0.1', '52.5%', 'fusion']      # fusion.2 + .3 + .4 = 105 of 200 us.
  assert lines[4].split() == ['0.1', '25.0%', 'while']
  assert [line.split()[-1] for line in lines[7:]] == ['fusion.4', 'while.1']


def test_bench_conv_lists_the_layers_of_the_image_encoder_and_decoder(capsys):
  from scripts import bench_conv
  # 64 -> 32 -> 16 -> 8 -> 4 with depth 32, then back up to 64 x 64 x 3.
  assert bench_conv.layers(32) == [
      ('conv', 64, 3, 32), ('conv', 32, 32, 64), ('conv', 16, 64, 128), ('conv', 8, 128, 256),
      ('transpose', 4, 256, 128), ('transpose', 8, 128, 64), ('transpose', 16, 64, 32),
      ('transpose', 32, 32, 3)]
  bench_conv.main(['--depth', '2', '--batch', '1', '--repeats', '1'])
  lines = capsys.readouterr().out.splitlines()
  assert len(lines) == 9 and lines[1].split()[:3] == ['conv', '64x64x3', '2']


def test_bench_observe_stops_only_the_parameter_gradients(capsys):
  from scripts import bench_observe
  rssm = nets.RSSM(deter=8, units=8, stoch=3, classes=3)
  embed = jnp.asarray(np.random.default_rng(0).normal(size=(2, 4, 5)), jnp.float32)
  inputs = (jnp.zeros((2, 4, 2)), jnp.zeros((2, 4), bool).at[:, 0].set(True), jax.random.PRNGKey(0))
  params = modules.init(bench_observe.observe_loss(rssm, True), jax.random.PRNGKey(1), embed, *inputs)
  grads = {}
  for param_grads in (True, False):
    loss = bench_observe.observe_loss(rssm, param_grads)
    grads[param_grads] = jax.grad(lambda p, e: modules.apply(loss, p, e, *inputs), (0, 1))(params, embed)
  assert all(float(jnp.abs(g).sum()) == 0 for g in grads[False][0].values())
  assert float(jnp.abs(grads[True][0]['gru/kernel']).sum()) > 0
  np.testing.assert_allclose(grads[False][1], grads[True][1], rtol=1e-5, atol=1e-7)
  bench_observe.main(['--deter', '8', '--embed', '4', '--classes', '3', '--batch', '2',
                      '--length', '3', '--repeats', '1'])
  lines = capsys.readouterr().out.splitlines()
  assert [line.rsplit(None, 2)[0].strip() for line in lines[2:]] == [
      'forward', 'forward + backward', 'forward + backward, no parameter gradients']


def test_bench_lax_conv_switch_swaps_in_xla_convolutions_with_the_same_results(monkeypatch):
  from scripts import bench_conv
  x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 8, 8, 3)), jnp.float32)
  encoder, decoder = nets.Conv2D(4, 4, 2), nets.Conv2D(3, 4, 2, transpose=True)
  params = [modules.init(m, jax.random.PRNGKey(0), x) for m in (encoder, decoder)]
  want = [modules.apply(m, p, x) for m, p in zip((encoder, decoder), params)]
  for name in ('conv_matmul', 'conv_transpose_matmul'):   # Restored after the test.
    monkeypatch.setattr(nets, name, getattr(nets, name))
  bench.use_lax_convolutions()
  assert nets.conv_matmul is bench_conv.lax_conv
  assert nets.conv_transpose_matmul is bench_conv.lax_conv_transpose
  for m, p, w in zip((encoder, decoder), params, want):
    np.testing.assert_allclose(modules.apply(m, p, x), w, rtol=1e-5, atol=1e-5)
