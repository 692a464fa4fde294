"""The import direction: embodied never imports dreamerv3, and its core, replay,
run and envs packages never import JAX."""

import ast
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def imported_modules(path):
  tree = ast.parse(path.read_text())
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      yield node.module


def test_embodied_sources_import_no_jax_and_no_dreamerv3():
  offenders = []
  for path in sorted((ROOT / 'embodied').rglob('*.py')):
    for module in imported_modules(path):
      top = module.split('.')[0]
      if top in ('jax', 'jaxlib', 'optax', 'dreamerv3'):
        offenders.append(f'{path.relative_to(ROOT)} imports {module}')
  assert not offenders, '\n'.join(offenders)


def test_importing_embodied_loads_no_jax():
  code = (
      'import sys, embodied, embodied.envs, embodied.replay, embodied.run\n'
      'import embodied.envs.gym, embodied.envs.crafter, embodied.envs.dummy\n'
      'bad = sorted(m for m in sys.modules if m.split(".")[0] in '
      '("jax", "jaxlib", "optax", "dreamerv3"))\n'
      'print(",".join(bad))\n')
  out = subprocess.run(
      [sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
      check=True)
  assert out.stdout.strip() == '', f'embodied loaded: {out.stdout.strip()}'


def test_the_checker_catches_a_violation(tmp_path):
  bad = tmp_path / 'bad.py'
  bad.write_text('import jax.numpy as jnp\nfrom dreamerv3 import agent\n')
  assert list(imported_modules(bad)) == ['jax.numpy', 'dreamerv3']
