"""The recipes of configs/, by name: `--config=cifar10` is configs/cifar10.py
wherever the command runs.

`pip install .` ships configs/ inside the package (imgclf_jax/configs/,
pyproject.toml); in a checkout they are its configs/ folder. A --config value
that is a file is always that file.
"""

import os
import re

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Installed (the wheel's imgclf_jax/configs/), then a checkout's configs/.
_FOLDERS = (os.path.join(_PACKAGE, 'configs'),
            os.path.join(os.path.dirname(_PACKAGE), 'configs'))


def folder() -> str | None:
  """The folder of the shipped recipes, or None (neither installed nor a
  checkout)."""
  for candidate in _FOLDERS:
    if os.path.isfile(os.path.join(candidate, 'default.py')):
      return candidate
  return None


def names() -> list[str]:
  """The recipes' names ('cifar10', 'folder', ...), sorted."""
  where = folder()
  if where is None:
    return []
  return sorted(f[:-3] for f in os.listdir(where)
                if f.endswith('.py') and not f.startswith('_'))


def path_of(name: str) -> str | None:
  """The file of recipe `name` (a name such as 'cifar10', no folder, no .py),
  or None where there is no such recipe."""
  if not re.fullmatch(r'\w+', name) or name not in names():
    return None
  return os.path.join(folder(), name + '.py')


def expand(argv: list[str]) -> list[str]:
  """`argv` with a --config value that is a recipe's name, and not a file
  here, replaced by the recipe's file."""
  argv = list(argv)
  for i, arg in enumerate(argv):
    match = re.fullmatch(r'(--?config=)(\w+)', arg)
    if match:
      prefix, name = match.groups()
    elif re.fullmatch(r'--?config', arg) and i + 1 < len(argv):
      prefix, name = None, argv[i + 1]
    else:
      continue
    path = None if os.path.exists(name) else path_of(name)
    if path is None:
      continue
    if prefix is None:
      argv[i + 1] = path
    else:
      argv[i] = prefix + path
  return argv


def name_for(path: str) -> str | None:
  """The recipe a --config path that does not exist here may mean
  ('configs/cifar10.py' -> 'cifar10'), or None."""
  base = os.path.basename(path)
  base = base[:-3] if base.endswith('.py') else base
  return base if path_of(base) else None
