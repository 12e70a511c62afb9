"""command_line.py as the installed `imgclf-jax` command: pyproject.toml
declares it, and the package works without the checkout (configs/, main.py)
on the path: no module of it imports configs/, and the command parses its
flags and loads a config file from any folder. (Not pip-installed here: the
package is put on PYTHONPATH alone, or the wheel `pip install .` would
install is built and unpacked there.)"""

import ast
import glob
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile

import pytest

from imgclf_jax import command_line

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_pyproject_declares_the_command_and_the_library_only():
  with open(os.path.join(ROOT, 'pyproject.toml'), 'rb') as f:
    project = tomllib.load(f)
  assert project['project']['scripts'] == {
      'imgclf-jax': 'imgclf_jax.command_line:run'}
  module, name = project['project']['scripts']['imgclf-jax'].split(':')
  assert module == command_line.__name__ and callable(getattr(command_line,
                                                              name))
  # Every sub-package of the library, and configs/ as imgclf_jax.configs.
  packages = ['imgclf_jax'] + [
      f'imgclf_jax.{d}' for d in os.listdir(os.path.join(ROOT, 'imgclf_jax'))
      if os.path.isfile(os.path.join(ROOT, 'imgclf_jax', d, '__init__.py'))]
  assert sorted(project['tool']['setuptools']['packages']) == sorted(
      packages + ['imgclf_jax.configs'])
  assert project['tool']['setuptools']['package-dir'] == {
      'imgclf_jax.configs': 'configs'}
  # The same packages as requirements.txt (CI's pinned set), tests apart.
  pinned, _ = _requirements()
  declared = {d.split('~=')[0].split('==')[0].lower().replace('_', '-')
              for d in project['project']['dependencies']}
  test_only = {'pytest', 'pytest-xdist'}
  assert declared == pinned - test_only
  assert {d.split('~=')[0] for d in
          project['project']['optional-dependencies']['test']} == test_only


def _requirements():
  """requirements.txt's package names (normalised) and its lines."""
  with open(os.path.join(ROOT, 'requirements.txt')) as f:
    lines = f.read().splitlines()
  names = {line.split('==')[0].lower().replace('_', '-') for line in lines
           if line.strip() and not line.startswith('#')}
  return names, lines


def test_requirements_list_every_package_the_library_imports():
  # Each third-party module a module of imgclf_jax imports comes from a
  # listed package (not only through another one's dependencies).
  modules = set()
  for folder, _, files in os.walk(os.path.join(ROOT, 'imgclf_jax')):
    for name in files:
      if name.endswith('.py'):
        with open(os.path.join(folder, name)) as f:
          tree = ast.parse(f.read())
        for node in ast.walk(tree):
          if isinstance(node, ast.Import):
            modules |= {a.name.split('.')[0] for a in node.names}
          elif isinstance(node, ast.ImportFrom) and not node.level:
            modules.add(node.module.split('.')[0])
  third_party = modules - set(sys.stdlib_module_names) - {'imgclf_jax'}
  distributions = importlib.metadata.packages_distributions()
  pinned, _ = _requirements()
  for module in sorted(third_party):
    names = {d.lower().replace('_', '-') for d in distributions[module]}
    assert names & pinned, f'{module} (from {names}) is not in requirements.txt'


def test_the_readme_sections_requirements_txt_names_exist():
  _, lines = _requirements()
  named = [n for line in lines if line.startswith('#')
           for n in re.findall(r'README\.md \("([^"]+)"\)', line)]
  assert named
  with open(os.path.join(ROOT, 'README.md')) as f:
    headings = {line.lstrip('#').strip() for line in f
                if line.startswith('#')}
  assert set(named) <= headings, set(named) - headings


def _alone(tmp_path, *args, code):
  """Python running `code` in tmp_path with the package alone on its path."""
  site = tmp_path / 'site'
  site.mkdir(exist_ok=True)
  if not (site / 'imgclf_jax').exists():
    (site / 'imgclf_jax').symlink_to(os.path.join(ROOT, 'imgclf_jax'))
  env = dict(os.environ, PYTHONPATH=str(site), TF_CPP_MIN_LOG_LEVEL='2')
  return subprocess.run([sys.executable, '-c', code, *args], cwd=tmp_path,
                        env=env, capture_output=True, text=True, timeout=300)


def test_no_module_of_the_library_imports_configs(tmp_path):
  code = ('import importlib, pkgutil, sys, imgclf_jax\n'
          'names = [m.name for m in pkgutil.walk_packages(\n'
          '    imgclf_jax.__path__, "imgclf_jax.")]\n'
          'for name in names:\n'
          '  importlib.import_module(name)\n'
          'assert "configs" not in sys.modules and "main" not in sys.modules\n'
          'print(len(names))\n')
  done = _alone(tmp_path, code=code)
  assert done.returncode == 0, done.stderr[-3000:]
  # Every module and sub-package of the library was imported.
  assert int(done.stdout) == len(
      [f for folder, _, files in os.walk(os.path.join(ROOT, 'imgclf_jax'))
       for f in files if f.endswith('.py') and f != '__init__.py'] +
      [folder for folder, _, files in os.walk(os.path.join(ROOT, 'imgclf_jax'))
       if '__init__.py' in files][1:])  # the sub-packages (not imgclf_jax)


def test_the_command_without_the_checkout(tmp_path):
  run = 'from imgclf_jax.command_line import run; run()'
  shown = _alone(tmp_path, '--help', code=run)
  assert shown.returncode == 0, shown.stderr[-3000:]
  assert 'config keys (--config.KEY=VALUE;' in shown.stdout
  # A config file of the user's, outside the checkout, starts from the
  # package's defaults; its keys are checked as configs/'s are.
  (tmp_path / 'mine.py').write_text(
      'from imgclf_jax.config import keys\n\n\ndef get_config():\n'
      '  config = keys.get_config()\n  config.num_epochs = 2\n'
      '  return config\n')
  typo = _alone(tmp_path, '--config=mine.py', '--workdir=w',
                '--config.num_epoch=3', code=run)
  assert typo.returncode == 2 and 'Traceback' not in typo.stderr
  assert typo.stderr.splitlines() == [
      "error: --config.num_epoch=3: the config has no key 'num_epoch' (did "
      'you mean --config.num_epochs?): --help lists the keys.']
  # One that imports configs/ (not on the path here) is told what to import.
  (tmp_path / 'old.py').write_text(
      'from configs import default\n\n\ndef get_config():\n'
      '  return default.get_config()\n')
  old = _alone(tmp_path, '--config=old.py', '--workdir=w', code=run)
  assert old.returncode == 2 and old.stderr.splitlines() == [
      "error: --config=old.py: the config file raised ModuleNotFoundError: No "
      "module named 'configs' (line 1): configs/ is not importable here. "
      "Start from the package's defaults instead: from imgclf_jax.config "
      'import keys; config = keys.get_config().']


def _wheel_site(tmp_path):
  """The wheel that `pip install .` installs, built from a copy of the
  checkout's packaged files and unpacked into tmp_path/site."""
  if importlib.util.find_spec('setuptools') is None:
    pytest.skip('setuptools (the build backend) is not installed')
  source = tmp_path / 'source'
  source.mkdir()
  for name in ('pyproject.toml', 'README.md'):
    shutil.copy(os.path.join(ROOT, name), source / name)
  for name in ('imgclf_jax', 'configs'):
    shutil.copytree(os.path.join(ROOT, name), source / name,
                    ignore=shutil.ignore_patterns('__pycache__'))
  built = subprocess.run(
      [sys.executable, '-m', 'pip', 'wheel', '--no-deps',
       '--no-build-isolation', '--no-index', '-q', '-w', str(tmp_path / 'dist'),
       str(source)], capture_output=True, text=True, timeout=300)
  assert built.returncode == 0, built.stderr[-3000:]
  (wheel,) = glob.glob(str(tmp_path / 'dist' / '*.whl'))
  site = tmp_path / 'site'
  with zipfile.ZipFile(wheel) as z:
    z.extractall(site)
  return site


def test_the_installed_command_runs_the_recipes_by_name(tmp_path):
  site = _wheel_site(tmp_path)
  shipped = site / 'imgclf_jax' / 'configs'
  assert sorted(os.listdir(shipped)) == sorted(
      f for f in os.listdir(os.path.join(ROOT, 'configs'))
      if f.endswith('.py'))
  env = dict(os.environ, PYTHONPATH=str(site), TF_CPP_MIN_LOG_LEVEL='2')
  elsewhere = tmp_path / 'elsewhere'
  elsewhere.mkdir()

  def command(*args):
    return subprocess.run(
        [sys.executable, '-c', 'from imgclf_jax.command_line import run; run()',
         *args], cwd=elsewhere, env=env, capture_output=True, text=True,
        timeout=300)

  shown = command('--help')
  assert shown.returncode == 0, shown.stderr[-3000:]
  assert '--config=cifar10 --workdir=runs/cifar10' in shown.stdout
  # (--help wraps the line, also inside the folder's path.)
  assert ''.join(f'recipes (--config=NAME; in {shipped}): cifar10,'.split()
                 ) in ''.join(shown.stdout.split())
  # The recipe is loaded by name (its keys checked, its folder dataset
  # overridden); a path that is not there names the recipe to give.
  typo = command('--config=cifar10', '--workdir=w', '--config.num_epoch=3')
  assert typo.returncode == 2 and typo.stderr.splitlines() == [
      "error: --config.num_epoch=3: the config has no key 'num_epoch' (did "
      'you mean --config.num_epochs?): --help lists the keys.']
  missing = command('--config', 'folder', '--workdir=w',
                    f'--config.dataset=folder:{tmp_path}/nothing')
  assert missing.returncode == 2 and missing.stderr.splitlines() == [
      f'error: --config.dataset=folder:{tmp_path}/nothing: no such folder. '
      'Point it at a folder laid out root/<class>/<image> or '
      'root/<split>/<class>/<image>.']
  path = command('--config=configs/cifar10.py', '--workdir=w')
  assert path.returncode == 2 and path.stderr.splitlines() == [
      'error: --config=configs/cifar10.py: cannot read the config file '
      "([Errno 2] No such file or directory: 'configs/cifar10.py'), looked "
      f'for in the current folder {elsewhere}: give the path of a config '
      'file, or the recipe by name: --config=cifar10.']
  assert not (elsewhere / 'w').exists()
