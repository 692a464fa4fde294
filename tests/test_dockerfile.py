"""Lints the Dockerfile (no Docker engine runs here): the files it copies exist,
it installs the project with its extras, its documented commands are valid
and are the README's."""

import json
import pathlib
import re
import shlex

import pytest

from embodied.core.config import load_yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / 'Dockerfile'


def instructions():
  """[(INSTRUCTION, arguments)] with continuation lines joined, comments dropped."""
  lines = [line for line in DOCKERFILE.read_text().splitlines()
           if not line.lstrip().startswith('#')]
  text = re.sub(r'\\\n', ' ', '\n'.join(lines))
  result = []
  for line in text.splitlines():
    if line.strip():
      keyword, _, args = line.strip().partition(' ')
      result.append((keyword.upper(), args.strip()))
  return result


def documented(command):
  """Commands shown in the Dockerfile's comments that start with `command`."""
  comments = [line.lstrip('# ').strip() for line in DOCKERFILE.read_text().splitlines()
              if line.startswith('#')]
  return [line for line in comments if line.startswith(command)]


def test_copied_sources_exist_and_are_not_ignored():
  copies = [args for keyword, args in instructions() if keyword in ('COPY', 'ADD')]
  assert copies
  ignored = (ROOT / '.dockerignore').read_text().split()
  for args in copies:
    words = [word for word in shlex.split(args) if not word.startswith('--')]
    for source in words[:-1]:
      assert (ROOT / source).exists(), f'Dockerfile copies {source}, which does not exist'
      assert source.rstrip('/') not in ignored, f'{source} is excluded by .dockerignore'
  copied = {pathlib.Path(source).parts[0] for args in copies for source in shlex.split(args)[:-1]}
  for needed in ('setup.py', 'requirements.txt', 'README.md', 'configs.yaml', 'dreamerv3',
                 'embodied', 'scripts', 'example.py'):
    assert needed in copied, f'the image needs {needed}'


def test_dockerignore_excludes_local_state():
  ignored = (ROOT / '.dockerignore').read_text().split()
  for pattern in ('.git', '.venv', '**/__pycache__', 'logdir*'):
    assert pattern in ignored


def test_installs_project_with_extras_and_osmesa():
  runs = ' '.join(args for keyword, args in instructions() if keyword == 'RUN')
  match = re.search(r'pip install "?\.\[([\w,]+)\]', runs)
  assert match, 'no `pip install .[extras]` of the project'
  assert {'dmc', 'atari', 'plot'} <= set(match.group(1).split(','))
  assert 'libosmesa6' in runs
  env = ' '.join(args for keyword, args in instructions() if keyword == 'ENV')
  assert 'MUJOCO_GL=osmesa' in env


def test_cpu_default_and_gpu_build_args():
  steps = instructions()
  args = dict(args.partition('=')[::2] for keyword, args in steps if keyword == 'ARG')
  assert args['BASE'].startswith('python:3.')  # CPU by default.
  assert args['JAX_EXTRA'] == ''
  assert ('FROM', '${BASE}') in steps
  runs = ' '.join(args for keyword, args in steps if keyword == 'RUN')
  assert 'jax[$JAX_EXTRA]' in runs
  builds = documented('docker build')
  assert any('--build-arg JAX_EXTRA=cuda12' in build for build in builds)
  assert any('--build-arg' not in build for build in builds), 'no CPU build command'


def test_documented_run_command_is_the_default_command():
  (run,) = [cmd for cmd in documented('docker run') if '--gpus' not in cmd]
  words = shlex.split(run)
  command = words[words.index('python'):]
  assert command[1] == 'dreamerv3/train.py' and (ROOT / command[1]).is_file()
  (cmd,) = [args for keyword, args in instructions() if keyword == 'CMD']
  assert json.loads(cmd) == command
  workdir = [args for keyword, args in instructions() if keyword == 'WORKDIR']
  assert workdir, 'without a WORKDIR the relative dreamerv3/train.py is not found'


def test_documented_command_parses_with_existing_blocks():
  from dreamerv3.train import parse
  blocks = load_yaml(ROOT / 'configs.yaml')
  for run in documented('docker run'):
    words = shlex.split(run)
    argv = words[words.index('dreamerv3/train.py') + 1:]
    chosen = argv[argv.index('--configs') + 1]
    assert chosen in blocks, f'{chosen} is not a block of configs.yaml'
    config = parse(argv)
    assert config.task == blocks[chosen]['task']
    assert config.run.logdir.startswith('/logdir/')


@pytest.mark.parametrize('command', ['docker build', 'docker run'])
def test_readme_shows_the_dockerfile_commands(command):
  readme = ROOT / 'README.md'
  missing = [line for line in documented(command) if line not in readme.read_text()]
  assert not missing, f'README.md lacks the Dockerfile commands: {missing}'
  assert re.search(r'not (been )?built', readme.read_text()), 'README must say the image was not built here'
