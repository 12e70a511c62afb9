"""command_line.py as the installed `imgclf-jax` command: pyproject.toml
declares it, and the package works without the checkout (configs/, main.py)
on the path: no module of it imports configs/, and the command parses its
flags and loads a config file from any folder. (Not pip-installed here: the
package is put on PYTHONPATH alone.)"""

import os
import subprocess
import sys
import tomllib

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
  assert project['tool']['setuptools']['packages']['find'] == {
      'include': ['imgclf_jax', 'imgclf_jax.*']}
  # The same packages as requirements.txt (CI's pinned set), tests apart.
  with open(os.path.join(ROOT, 'requirements.txt')) as f:
    pinned = {line.split('==')[0].lower().replace('_', '-') for line in f
              if line.strip() and not line.startswith('#')}
  declared = {d.split('~=')[0].split('==')[0].lower().replace('_', '-')
              for d in project['project']['dependencies']}
  test_only = {'pytest', 'pytest-xdist'}
  assert declared == pinned - test_only
  assert {d.split('~=')[0] for d in
          project['project']['optional-dependencies']['test']} == test_only


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
