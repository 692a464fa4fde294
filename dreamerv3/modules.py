"""A small functional module system.

A module is a plain Python object that holds its hyperparameters. Its
`__call__(scope, ...)` reads parameters through the `Scope` it is given, so the
parameters themselves live outside, in one flat dict keyed by module path:

  {'rssm/img_in/kernel': array, 'rssm/img_in/norm/scale': array, ...}

`init(fn, key, *args)` runs `fn(scope, *args)` once, creating every parameter it
asks for, and returns the dict. `apply(fn, params, *args)` runs it again reading
those parameters. Both are pure functions of their arguments, so jax.jit,
jax.grad, vmap and device parallelism apply to them directly. Randomness used by
the computation (sampling) is passed as explicit keys; the init key is used
only to create parameters, each from a key derived from its own path.

Example:

  class Dense:
    def __init__(self, units): self.units = units
    def __call__(self, scope, x):
      w = scope.param('kernel', normal_init, (x.shape[-1], self.units))
      return x @ w

  params = init(Dense(3), jax.random.PRNGKey(0), x)
  y = apply(Dense(3), params, x)
"""

import zlib

import jax
import jax.numpy as jnp


class Scope:
  """Gives a module access to the parameters under its path."""

  def __init__(self, params, key=None, path=''):
    self._params = params  # Shared by all scopes of one init/apply call.
    self._key = key        # Not None only while creating parameters.
    self.path = path

  @property
  def creating(self):
    return self._key is not None

  def child(self, name):
    """The scope of a submodule."""
    return Scope(self._params, self._key, f'{self.path}/{name}' if self.path else name)

  def param(self, name, init_fn, shape, dtype=jnp.float32):
    """Returns the parameter `name`, creating it with init_fn(key, shape, dtype)."""
    path = f'{self.path}/{name}' if self.path else name
    if path in self._params:
      value = self._params[path]
      if tuple(value.shape) != tuple(shape):
        raise ValueError(
            f'Parameter {path} has shape {tuple(value.shape)} but the module '
            f'expects {tuple(shape)}.')
      return value
    if not self.creating:
      raise KeyError(
          f'Parameter {path} does not exist. Parameters are created by init(); '
          f'known parameters under this scope: {self.names()}')
    key = jax.random.fold_in(self._key, zlib.crc32(path.encode()))
    value = init_fn(key, tuple(shape), dtype)
    self._params[path] = value
    return value

  def stop_gradient(self):
    """The same scope with its own parameters (those under its path) stop-gradiented:
    what is computed through it passes gradients to its inputs but not to them."""
    if self.creating:
      return self   # Parameters created through it must land in the shared dict.
    frozen = {k: jax.lax.stop_gradient(self._params[k]) for k in self.names()}
    return Scope({**self._params, **frozen}, self._key, self.path)

  def names(self):
    prefix = self.path + '/' if self.path else ''
    return sorted(k for k in self._params if k.startswith(prefix))


def init(fn, key, *args, **kwargs):
  """Creates the parameters of fn(scope, *args, **kwargs) and returns them."""
  params = {}
  fn(Scope(params, key), *args, **kwargs)
  return params


def apply(fn, params, *args, **kwargs):
  """Runs fn(scope, *args, **kwargs) with the given parameters."""
  return fn(Scope(dict(params), None), *args, **kwargs)


def scan(scope, fn, carry, xs, unroll=1):
  """jax.lax.scan that also works while parameters are being created.

  fn(carry, x) -> (carry, y). While creating, the body runs once eagerly on the
  first element so that its parameters exist before lax.scan traces it.
  """
  if scope.creating:
    first = jax.tree.map(lambda x: x[0], xs)
    fn(carry, first)
  return jax.lax.scan(fn, carry, xs, unroll=unroll)


def subtree(params, prefix):
  """The parameters whose path starts with one of the prefixes."""
  prefixes = (prefix,) if isinstance(prefix, str) else tuple(prefix)
  return {k: v for k, v in params.items() if k.split('/')[0] in prefixes}


def count(params):
  return sum(int(v.size) for v in jax.tree.leaves(params))
