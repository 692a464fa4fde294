import pathlib
import pickle
import re
import subprocess
import sys
import textwrap

import pytest

from embodied.core.config import Config, ConfigError, exit_on_config_error, load_config, load_yaml
from embodied.core.flags import Flags

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = load_yaml(ROOT / 'configs.yaml')


def small_config():
  return Config({
      'seed': 0, 'lr': 1e-4, 'jit': True, 'name': 'None',
      'rssm': {'deter': 64, 'units': 32}, 'actor': {'units': 32, 'layers': 2},
      'keys': ['image'], 'size': [64, 64], 'empty': []})


def configs_with(**blocks):
  return {'defaults': small_config().flat, **blocks}


# Config object ---------------------------------------------------------------

def test_access_forms():
  config = small_config()
  assert config.rssm.deter == 64
  assert config['rssm.deter'] == 64
  assert config['rssm'] == Config({'deter': 64, 'units': 32})
  assert isinstance(config.rssm, Config)
  assert config.flat['actor.layers'] == 2
  assert 'rssm.units' in config and 'rssm' in config and 'rssm.foo' not in config
  assert list(config)[:4] == ['seed', 'lr', 'jit', 'name']
  assert list(config.keys()) == list(config)
  assert dict(config.items())['rssm'] == config.rssm
  assert config.size == (64, 64)
  with pytest.raises(KeyError, match='rssm.deter'):
    config['rssm.detr']
  with pytest.raises(AttributeError):
    config.foo


def test_immutable():
  config = small_config()
  with pytest.raises(AttributeError, match='immutable'):
    config.seed = 1
  with pytest.raises(AttributeError, match='immutable'):
    config.rssm.deter = 1
  with pytest.raises(AttributeError, match='immutable'):
    config['seed'] = 1
  with pytest.raises(AttributeError, match='immutable'):
    del config.seed
  flat = config.flat
  flat['seed'] = 5
  assert config.seed == 0
  updated = config.update({'seed': 3})
  assert (config.seed, updated.seed) == (0, 3)


def test_update_dotted_nested_and_kwargs():
  config = small_config()
  updated = config.update({'rssm': {'deter': 8}}, seed=2)
  assert updated.rssm.deter == 8 and updated.rssm.units == 32 and updated.seed == 2
  assert config.update({'rssm.units': 7}).rssm.deter == 64
  assert config.update(Config({'actor': {'layers': 9}})).actor.layers == 9


@pytest.mark.parametrize('key, value, expected', [
    ('seed', '3', 3), ('seed', 3.0, 3), ('seed', '1e5', 100000), ('seed', '2e5', 200000),
    ('lr', '1e-4', 1e-4), ('lr', 3, 3.0), ('lr', '0.5', 0.5),
    ('jit', 'False', False), ('jit', 'false', False), ('jit', '0', False),
    ('jit', 'true', True), ('jit', '1', True), ('jit', False, False),
    ('name', 'Greedy', 'Greedy'), ('name', 'None', 'None'),
    ('keys', 'image', ('image',)), ('keys', 'image,depth', ('image', 'depth')),
    ('keys', ['a', 'b'], ('a', 'b')), ('size', ['32', '48'], (32, 48)),
    ('size', '32,48', (32, 48)), ('empty', ['x', 1], ('x', 1)),
])
def test_update_converts_to_default_type(key, value, expected):
  result = small_config().update({key: value})[key]
  assert result == expected
  assert type(result) is type(expected)


@pytest.mark.parametrize('key, value, expected_type', [
    ('seed', 3.5, 'int'), ('seed', '1e5x', 'int'), ('seed', True, 'int'),
    ('lr', 'fast', 'float'), ('jit', 'yes', 'bool'), ('jit', 1, 'bool'),
    ('name', 3, 'str'), ('size', ['a'], 'list of int'),
])
def test_wrong_type_names_key_expected_and_value(key, value, expected_type):
  with pytest.raises(ConfigError) as info:
    small_config().update({key: value})
  message = str(info.value)
  assert f"Config key '{key}' expects {expected_type}" in message
  assert repr(value) in message and f'--{key} ' in message


def test_unknown_key_suggests_closest():
  with pytest.raises(ConfigError, match=r"Unknown config key 'rssm.detr'.*rssm\.deter"):
    small_config().update({'rssm.detr': 1})
  with pytest.raises(ConfigError, match=r"'deter'.*rssm\.deter"):
    small_config().update({'deter': 1})
  with pytest.raises(ConfigError, match=r"'rssm' is a group.*rssm\.deter"):
    small_config().update({'rssm': 1})


def test_repr_lists_nested_keys():
  text = str(small_config())
  assert 'rssm:\n  deter: 64\n  units: 32' in text
  assert 'keys: [image]' in text and 'size: [64, 64]' in text and 'name: None' in text
  assert repr(small_config()).startswith('Config(\n  seed: 0')


def test_save_load_round_trip(tmp_path):
  config, _ = load_config(CONFIGS, ['--configs', 'crafter', 'debug', '--model_opt.eps', '1e20'])
  config.save(tmp_path / 'config.yaml')
  text = (tmp_path / 'config.yaml').read_text()
  assert 'rssm:\n  deter: 64\n' in text  # Nested, in the order of the defaults.
  assert text.index('seed:') < text.index('jax:') < text.index('rssm:')
  loaded = Config.load(tmp_path / 'config.yaml')
  assert loaded == config
  assert type(loaded.model_opt.eps) is float and type(loaded.replay_size) is int
  assert pickle.loads(pickle.dumps(config)) == config
  assert hash(pickle.loads(pickle.dumps(config))) == hash(config)


# YAML ------------------------------------------------------------------------

def test_yaml_numbers(tmp_path):
  path = tmp_path / 'x.yaml'
  path.write_text(textwrap.dedent("""\
      a: 1e6
      b: 5.5e7
      c: 3e-4
      d: 1000.0
      e: None
      f: '1e5'
      g: [1e2, x]
      h: 7
  """))
  data = load_yaml(path)
  assert data == {'a': 1000000, 'b': 55000000, 'c': 3e-4, 'd': 1000.0, 'e': 'None',
                  'f': '1e5', 'g': [100, 'x'], 'h': 7}
  assert [type(data[k]) for k in 'abcdef'] == [int, int, float, float, str, str]


def test_real_defaults_types():
  config = Config(CONFIGS['defaults'])
  assert config.replay_size == 1000000 and type(config.replay_size) is int
  assert config.run.steps == 10 ** 10 and type(config.run.steps) is int
  assert config.actent == 3e-4 and config.model_opt.lr == 1e-4
  assert type(config.run.train_ratio) is float
  assert config.expl_behavior == 'None'
  assert config.run.log_keys_video == ('image',)


# Blocks and flags ------------------------------------------------------------

def test_blocks_apply_left_to_right():
  configs = configs_with(a={'seed': 1, 'lr': 0.5}, b={'seed': 2})
  assert load_config(configs, ['--configs', 'a', 'b'])[0].seed == 2
  assert load_config(configs, ['--configs', 'b', 'a'])[0].seed == 1
  assert load_config(configs, ['--configs', 'b,a'])[0].seed == 1
  assert load_config(configs, ['--configs=b,a'])[0].seed == 1
  assert load_config(configs, ['--configs', 'a', 'b'])[0].lr == 0.5
  config, rest = load_config(configs, ['--lr', '0.1', '--configs', 'b', 'a', '--jit', 'False'])
  assert (config.seed, config.lr, config.jit, rest) == (1, 0.1, False, [])


def test_block_regex_nested_and_dotted_keys():
  configs = configs_with(
      r={r'.*\.units': 5, 'rssm': {'deter': 6}, 'actor.layers': 7, 'size': [8, 8]})
  config, rest = load_config(configs, ['--configs', 'r'])
  assert (config.rssm.units, config.actor.units) == (5, 5)
  assert (config.rssm.deter, config.actor.layers, config.size) == (6, 7, (8, 8))
  assert rest == []


def test_block_errors():
  bad_regex = configs_with(r={r'.*\.widths': 5})
  with pytest.raises(ConfigError, match=r"block 'r'.*'\.\*\\\.widths' matches no config key"):
    load_config(bad_regex, ['--configs', 'r'])
  with pytest.raises(ConfigError, match=r"block 'r'.*'rssm.detr'.*rssm\.deter"):
    load_config(configs_with(r={'rssm.detr': 1}), ['--configs', 'r'])
  with pytest.raises(ConfigError, match=r"block 'r'.*'seed' expects int"):
    load_config(configs_with(r={'seed': 'x'}), ['--configs', 'r'])


def test_unknown_block_lists_available():
  with pytest.raises(ConfigError) as info:
    load_config(CONFIGS, ['--configs', 'crafter', 'foo'])
  assert str(info.value).startswith(
      "Unknown config block 'foo'. Available blocks: atari, atari100k, bsuite, cpu, crafter, debug,")
  assert 'defaults' not in str(info.value)


def test_flags_forms():
  config, rest = load_config(CONFIGS, [
      '--run.steps', '1e5', '--jax.platform=cpu', '--jax.jit', 'False',
      '--run.log_keys_video', 'image', 'depth', '--encoder.cnn_keys', 'image',
      '--env.atari.size=32,48', '--env.dmc.camera', '-1', '--model_opt.lr', '3e-4',
      '--replay_size', '2e5', '--expl_behavior', 'None'])
  assert config.run.steps == 100000 and config.jax.platform == 'cpu'
  assert config.jax.jit is False
  assert config.run.log_keys_video == ('image', 'depth')
  assert config.encoder.cnn_keys == 'image' and config.env.atari.size == (32, 48)
  assert config.env.dmc.camera == -1 and config.model_opt.lr == 3e-4
  assert config.replay_size == 200000 and config.expl_behavior == 'None'
  assert rest == []


def test_flag_errors():
  with pytest.raises(ConfigError, match=r"Unknown config key 'rssm.detr'.*rssm\.deter"):
    load_config(CONFIGS, ['--rssm.detr', '5'])
  with pytest.raises(ConfigError, match=r"'jax.jit' expects bool.*'yes'"):
    load_config(CONFIGS, ['--jax.jit', 'yes'])
  with pytest.raises(ConfigError, match=r'--jax.jit needs a value.*--jax.jit False'):
    load_config(CONFIGS, ['--jax.jit', '--seed', '1'])
  with pytest.raises(ConfigError, match=r'--seed takes one value, got 2'):
    load_config(CONFIGS, ['--seed', '1', '2'])
  with pytest.raises(ConfigError, match="Unexpected argument 'crafter'"):
    load_config(CONFIGS, ['crafter'])
  with pytest.raises(ConfigError, match=r"'run.steps' expects int, got '1e5x' \(str\)"):
    load_config(CONFIGS, ['--run.steps', '1e5x'])


def test_non_strict_returns_unknown_flags():
  argv = ['--foo', 'a', 'b', '--seed', '3', 'stray', '--bar=1']
  config, rest = load_config(CONFIGS, argv, strict=False)
  assert config.seed == 3
  assert rest == ['--foo', 'a', 'b', 'stray', '--bar=1']
  config, rest = Flags(config).parse(['--seed', '4'])
  assert (config.seed, rest) == (4, [])


def test_notice_when_flag_overrides_block(capsys):
  config, _ = load_config(CONFIGS, [
      '--configs', 'crafter', '--run.train_ratio', '32', '--envs.amount', '1', '--seed', '5'])
  assert config.run.train_ratio == 32.0
  lines = capsys.readouterr().err.strip().splitlines()
  assert lines == [
      "Notice: --run.train_ratio 32 overrides 512 set by config block 'crafter'."]
  # A flag that repeats the block's value, or sets a key no block set: no notice.
  load_config(CONFIGS, ['--configs', 'crafter', '--run.train_ratio', '512.0'])
  assert capsys.readouterr().err == ''


def test_every_real_block_loads():
  blocks = [name for name in CONFIGS if name != 'defaults']
  assert len(blocks) >= 10
  for name in blocks:
    config, _ = load_config(CONFIGS, ['--configs', name])
    assert isinstance(config, Config)
  config, _ = load_config(CONFIGS, ['--configs', 'crafter', 'debug'])
  assert config.task == 'crafter_reward' and config.rssm.deter == 64
  assert config.batch_size == 8 and config.jax.platform == 'cpu'
  config, _ = load_config(CONFIGS, ['--configs', 'atari100k'])
  assert config.run.script == 'train_eval' and config.run.train_ratio == 1024.0
  assert config.run.steps == 150000 and type(config.run.steps) is int
  assert config.jax.precision == 'float32' and config.env.atari.noops == 30


def test_small_preset_leaves_vector_mlps_alone():
  defaults = Config(CONFIGS['defaults'])
  config, _ = load_config(CONFIGS, ['--configs', 'small'])
  assert config.rssm.deter == 512 and config.rssm.units == 512
  assert config.actor.units == 512 and config.critic.layers == 2
  assert config.reward_head.layers == 2 and config.disag_head.units == 512
  assert config.encoder.cnn_depth == 32 and config.decoder.cnn_depth == 32
  for key in ('encoder.mlp_units', 'encoder.mlp_layers', 'decoder.mlp_units',
              'decoder.mlp_layers'):
    assert config[key] == defaults[key]
  changed = {k for k, v in config.flat.items() if defaults[k] != v}
  assert all(re.fullmatch(r'rssm\.deter|.*\.(units|layers|cnn_depth)', k) for k in changed)


def test_exit_on_config_error_prints_one_line_and_exits_2():
  code = textwrap.dedent("""
      from embodied.core.config import ConfigError, exit_on_config_error
      with exit_on_config_error():
        raise ConfigError("Unknown config block 'foo'.")
  """)
  result = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True)
  assert result.returncode == 2
  assert result.stderr == "Error: Unknown config block 'foo'.\n"


def test_exit_on_config_error_passes_other_errors():
  with pytest.raises(KeyError):
    with exit_on_config_error():
      raise KeyError('x')
