"""Immutable typed Config, configs.yaml loading, and block/flag resolution.

configs.yaml holds `defaults` (every key with its default) and named blocks.
load_config applies the defaults, then the blocks named by `--configs A B`
left to right, then `--dotted.key value` flags. Every value is converted to
the type of its default, so a typo or a wrong type fails before training.
"""

import collections.abc
import contextlib
import difflib
import numbers
import re
import sys

import ruamel.yaml


class ConfigError(ValueError):
  """Bad configuration input; the message is complete and meant for the user."""


class Config(collections.abc.Mapping):
  """Immutable nested config whose leaves are int, float, bool, str or tuples.

  config.rssm.deter == config['rssm.deter']; config['rssm'] is a Config.
  Lists are stored as tuples so that nothing can change in place.
  """

  def __init__(self, mapping=None, **kwargs):
    flat = _flatten(_as_dict(mapping, **kwargs))
    entries = {}  # Top-level key -> leaf value, or dict of the group's flat keys.
    for key, value in flat.items():
      head, dot, rest = key.partition('.')
      if head in entries and isinstance(entries[head], dict) != bool(dot):
        raise ConfigError(f"Config key '{head}' is both a value and a group of keys.")
      if dot:
        entries.setdefault(head, {})[rest] = value
      else:
        entries[head] = value
    children = {k: Config(v) if isinstance(v, dict) else v for k, v in entries.items()}
    object.__setattr__(self, '_flat', flat)
    object.__setattr__(self, '_children', children)

  @property
  def flat(self):
    """Dict of dotted key -> value, in the order of the defaults."""
    return dict(self._flat)

  def __iter__(self):  # Top-level keys; keys(), items(), get() and `in` follow.
    return iter(self._children)

  def __len__(self):
    return len(self._children)

  def __getitem__(self, key):
    node = self
    for part in key.split('.'):
      if not isinstance(node, Config) or part not in node._children:
        raise KeyError(str(unknown_key_error(key, self._flat)))
      node = node._children[part]
    return node

  def __getattr__(self, name):
    if name.startswith('_') or name not in self._children:
      raise AttributeError(str(unknown_key_error(name, self._flat)))
    return self._children[name]

  def __setattr__(self, name, *value):
    raise AttributeError(
        f"Config is immutable (tried to set '{name}'); use config.update({{'{name}': ...}}) "
        'to get a changed copy.')

  __setitem__ = __delattr__ = __setattr__

  def __reduce__(self):  # Pickling (e.g. to env processes) rebuilds from the flat dict.
    return (Config, (self._flat,))

  def __eq__(self, other):
    if isinstance(other, collections.abc.Mapping):
      return self._flat == _flatten(_as_dict(other))
    return NotImplemented

  def __hash__(self):
    return hash(frozenset(self._flat.items()))

  def __str__(self):
    return '\n'.join(self._lines(''))

  def __repr__(self):
    return 'Config(\n' + '\n'.join(self._lines('  ')) + '\n)'

  def _lines(self, indent):
    for key, value in self._children.items():
      if isinstance(value, Config):
        yield f'{indent}{key}:'
        yield from value._lines(indent + '  ')
      else:
        yield f'{indent}{key}: {_format(value)}'

  def update(self, *args, **kwargs):
    """Returns a new Config; keys may be dotted or nested dicts (nested ones update leaves)."""
    flat = dict(self._flat)
    for key, value in _flatten(_as_dict(*args, **kwargs)).items():
      if key not in flat:
        raise unknown_key_error(key, flat)
      flat[key] = convert(key, value, flat[key])
    return Config(flat)

  def save(self, path):
    """Writes the config as nested YAML in the order of the defaults."""
    yaml = ruamel.yaml.YAML(typ='safe', pure=True)
    yaml.default_flow_style = False
    yaml.sort_base_mapping_type_on_output = False
    with open(path, 'w') as f:
      yaml.dump(self._nested(), f)

  @classmethod
  def load(cls, path):
    # save() may write an integral float as 1e+20, so keep every float a float.
    return cls(_load_yaml(path, _PlainConstructor))

  def _nested(self):
    return {k: v._nested() if isinstance(v, Config) else _thaw(v)
            for k, v in self._children.items()}


def _as_dict(mapping=None, **kwargs):
  return {**(mapping.flat if isinstance(mapping, Config) else mapping or {}), **kwargs}


def _flatten(mapping, prefix=''):
  flat = {}
  for key, value in mapping.items():
    if isinstance(value, collections.abc.Mapping):
      flat.update(_flatten(_as_dict(value), f'{prefix}{key}.'))
    else:
      flat[f'{prefix}{key}'] = _freeze(value)
  return flat


def _freeze(value):
  return tuple(_freeze(x) for x in value) if isinstance(value, (list, tuple)) else value


def _thaw(value):
  return [_thaw(x) for x in value] if isinstance(value, tuple) else value


def _format(value):
  if isinstance(value, tuple):
    return '[' + ', '.join(_format(x) for x in value) + ']'
  return repr(value) if value == '' else str(value)


# Type conversion ------------------------------------------------------------

_BOOLS = {'True': True, 'true': True, '1': True, 'False': False, 'false': False, '0': False}


def convert(key, value, default):
  """Converts value (text from a flag, or a YAML value) to the type of the default."""
  try:
    if isinstance(default, tuple):
      return _convert_sequence(value, default)
    return _convert_scalar(value, type(default))
  except ValueError:
    value = _thaw(value)  # Show lists as written.
    raise ConfigError(
        f"Config key '{key}' expects {_type_name(default)}, got {value!r} "
        f'({type(value).__name__}). Example: {flag_example(key, default)}') from None


def _convert_sequence(value, default):
  if isinstance(value, str):  # 'a,b' from the command line.
    value = [x.strip() for x in value.split(',') if x.strip()]
  elif not isinstance(value, (list, tuple)):
    value = [value]
  if not default:
    return _freeze(value)
  return tuple(_convert_scalar(x, type(default[0])) for x in value)


def _convert_scalar(value, kind):
  if kind is bool and isinstance(value, str) and value in _BOOLS:
    return _BOOLS[value]
  if kind in (int, float) and isinstance(value, bool):
    raise ValueError(value)  # True is an int in Python, but never a number here.
  if kind is int and isinstance(value, str):
    try:
      return int(value)
    except ValueError:
      value = float(value)  # '1e5' -> 100000.0, checked below; raises for junk.
  if kind is int and isinstance(value, numbers.Real) and float(value).is_integer():
    return int(value)
  if kind is float and isinstance(value, (str, numbers.Real)):
    return float(value)
  if kind not in (int, float) and (kind is type(None) or isinstance(value, kind)):
    return _freeze(value)
  raise ValueError(value)


def _type_name(default):
  if isinstance(default, tuple):
    return f'list of {type(default[0]).__name__}' if default else 'list'
  if isinstance(default, bool):
    return 'bool (True or False)'
  return type(default).__name__


def flag_example(key, default):
  """A valid command-line flag for the key, e.g. '--jax.jit False'."""
  if isinstance(default, tuple):
    text = ' '.join(str(x) for x in default) or 'a b'
  elif isinstance(default, bool):
    text = str(not default)
  else:
    text = _format(default)
  return f'--{key} {text}'


def unknown_key_error(key, keys):
  """A ConfigError for a key that does not exist, naming the closest keys."""
  keys = list(keys)
  members = [k for k in keys if k.startswith(key + '.')]
  if members:
    return ConfigError(
        f"Config key '{key}' is a group; set its keys instead, e.g. "
        f"{', '.join(members[:4])}{', ...' if len(members) > 4 else '.'}")
  close = difflib.get_close_matches(key, keys, n=3, cutoff=0.6)
  leaf = key.rsplit('.', 1)[-1]
  close += [k for k in keys if k.rsplit('.', 1)[-1] == leaf and k not in close][:3]
  hint = f"Closest keys: {', '.join(close)}." if close else 'No key is similar.'
  return ConfigError(f"Unknown config key '{key}'. {hint} configs.yaml lists every key.")


# YAML -----------------------------------------------------------------------

_NUMBER = re.compile(r'[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?')


class _Constructor(ruamel.yaml.constructor.SafeConstructor):
  """Reads plain scalars like 1e6 as numbers, whichever YAML 1.2 resolver is used.

  With exponent_ints, an integral number written with an exponent becomes an
  int (replay_size: 1e6 -> 1000000), so that counts stay ints; 3e-4 is a float.
  """
  exponent_ints = True

  def construct_number(self, node):
    text = node.value
    if node.style is None and _NUMBER.fullmatch(text):
      value = float(text)
      exponent = 'e' in text.lower()
      return int(value) if self.exponent_ints and exponent and value.is_integer() else value
    if node.tag.endswith(':float'):
      return self.construct_yaml_float(node)
    return self.construct_yaml_str(node)


_Constructor.add_constructor('tag:yaml.org,2002:float', _Constructor.construct_number)
_Constructor.add_constructor('tag:yaml.org,2002:str', _Constructor.construct_number)


class _PlainConstructor(_Constructor):
  exponent_ints = False


def _load_yaml(path, constructor):
  yaml = ruamel.yaml.YAML(typ='safe', pure=True)
  yaml.Constructor = constructor
  with open(path) as f:
    return yaml.load(f)


def load_yaml(path):
  """Reads a YAML file into plain dicts; 1e6 -> 1000000 (int), 3e-4 -> 0.0003."""
  return _load_yaml(path, _Constructor)


# Blocks and flags -----------------------------------------------------------

def load_config(configs, argv, strict=True):
  """Resolves defaults, `--configs A B` blocks left to right, then flags.

  configs: the dict read from configs.yaml. argv: command-line tokens without
  the program name. Returns (Config, remaining argv); remaining is empty unless
  strict=False, which returns unknown flags instead of raising.
  """
  from embodied.core.flags import Flags  # flags.py builds on this module.
  # `--configs A B`, `--configs A,B` or `--configs=A,B`, parsed as a list flag.
  chosen, argv = Flags(Config(configs=())).parse(argv, strict=False)
  config = Config(configs['defaults'])
  set_by_blocks = {}  # key -> (value as written, block name) of the last block.
  for name in chosen.configs:
    if name == 'defaults' or name not in configs:
      available = ', '.join(sorted(k for k in configs if k != 'defaults'))
      raise ConfigError(f"Unknown config block '{name}'. Available blocks: {available}.")
    changes = _resolve_block(configs[name], name, config.flat)
    try:
      config = config.update(changes)
    except ConfigError as e:
      raise ConfigError(f"In config block '{name}': {e}") from None
    set_by_blocks.update({k: (v, name) for k, v in changes.items()})
  overrides, remaining = Flags(config).split(argv, strict)
  updated = config.update(overrides)
  for key, text in overrides.items():
    if key in set_by_blocks and updated[key] != config[key]:
      value, name = set_by_blocks[key]
      text = ' '.join(text) if isinstance(text, list) else text
      print(f"Notice: --{key} {text} overrides {_format(value)} set by config "
            f"block '{name}'.", file=sys.stderr)
  return updated, remaining


def _resolve_block(block, name, flat):
  """Returns {full dotted key: value} for a block with dotted, nested or regex keys."""
  changes = {}
  for pattern, value in _flatten(_as_dict(block)).items():
    if pattern in flat:
      changes[pattern] = value
      continue
    if not re.search(r'[*+?()\[\]|^$\\{}]', pattern):
      raise ConfigError(f"In config block '{name}': {unknown_key_error(pattern, flat)}")
    try:
      matches = [k for k in flat if re.fullmatch(pattern, k)]
    except re.error as e:
      raise ConfigError(f"In config block '{name}': bad regex '{pattern}' ({e}).") from None
    if not matches:
      raise ConfigError(f"In config block '{name}': the regex '{pattern}' matches no config key.")
    changes.update(dict.fromkeys(matches, value))
  return changes


@contextlib.contextmanager
def exit_on_config_error():
  """For entry points: a ConfigError prints 'Error: ...' to stderr and exits with 2."""
  try:
    yield
  except ConfigError as e:
    print(f'Error: {e}', file=sys.stderr)
    sys.exit(2)
