"""Command-line overrides of config keys: `--dotted.key value`."""

from embodied.core.config import ConfigError, flag_example, unknown_key_error


class Flags:
  """Parses `--key value`, `--key=value` and, for list keys, `--key a b` or `--key a,b`.

  Values stay text here; Config.update converts them to the default's type.
  Tokens that do not start with `--` are values of the flag before them, so
  negative numbers work: `--env.dmc.camera -1`.
  """

  def __init__(self, config):
    self._config = config
    self._defaults = config.flat

  def parse(self, argv, strict=True):
    """Returns (updated Config, remaining argv), see split()."""
    overrides, remaining = self.split(argv, strict)
    return self._config.update(overrides), remaining

  def split(self, argv, strict=True):
    """Returns ({dotted key: text or list of texts}, remaining argv).

    strict: unknown flags and stray values raise ConfigError; otherwise they
    are returned in remaining, each flag with the values that follow it.
    """
    overrides, remaining, tokens = {}, [], list(argv)
    while tokens:
      token = tokens.pop(0)
      if not token.startswith('--'):
        if strict:
          raise ConfigError(
              f"Unexpected argument '{token}'. Flags look like --key value, e.g. --run.steps 1e5.")
        remaining.append(token)
        continue
      key, equals, text = token[2:].partition('=')
      followers = []
      while not equals and tokens and not tokens[0].startswith('--'):
        followers.append(tokens.pop(0))
      values = [text] if equals else followers
      if key not in self._defaults:
        if strict:
          raise unknown_key_error(key, self._defaults)
        remaining += [token, *followers]
      else:
        overrides[key] = self._value(key, values, strict)
        if not strict and not isinstance(self._defaults[key], tuple):
          remaining += values[1:]  # Stray values after a single-valued flag.
    return overrides, remaining

  def _value(self, key, values, strict):
    default = self._defaults[key]
    if not values:
      raise ConfigError(f'Flag --{key} needs a value, e.g. {flag_example(key, default)}')
    if isinstance(default, tuple):
      return values[0] if len(values) == 1 else values  # One text may be 'a,b'.
    if strict and len(values) > 1:
      raise ConfigError(
          f"Flag --{key} takes one value, got {len(values)}: {' '.join(values)}. "
          f'Example: {flag_example(key, default)}')
    return values[0]
