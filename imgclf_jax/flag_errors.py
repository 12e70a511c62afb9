"""One line for an error in the command line: a config file that cannot be
read or raises, a bad flag or override value (command_line.parse_flags)."""

import os
import re
import traceback

from absl import flags

from imgclf_jax.config import recipes


def flag_error(error: Exception, argv, config) -> str:
  """The one line for an error raised while parsing the command line `argv`:
  a config file that cannot be read or raises, a bad flag or override value.
  `config`: the --config flag's value so far (its keys' types, or None)."""
  path = _config_path(argv)
  text = str(error)
  if isinstance(error, SyntaxError) and path:
    return (f'--config={path}: the config file has a syntax error at line '
            f'{error.lineno}: {error.msg}. Fix it.')
  if isinstance(error, OSError) and path and 'config' in text.lower():
    cause = error
    while cause.__cause__ is not None:
      cause = cause.__cause__
    reason = str(cause).strip().splitlines()[-1].strip()
    name = recipes.name_for(path)
    hint = (f'the recipe by name: --config={name}' if name else
            "a recipe's name, e.g. --config=cifar10 (--help lists them)")
    return (f'--config={path}: cannot read the config file ({reason})'
            f'{_relative_to(path)}: give the path of a config file, or '
            f'{hint}.')
  raised = _raised_in(error, text, path)
  if raised and "No module named 'configs'" in raised:
    return (f'--config={path}: the config file raised {raised}: configs/ is '
            'not importable here. Start from the package\'s defaults instead: '
            'from imgclf_jax.config import keys; config = '
            'keys.get_config().')
  if raised:
    return (f'--config={path}: the config file raised {raised}. Fix it '
            '(config files are Python; get_config() must return the config).')
  match = re.match(r'flag (--config\.([\w.]+))=(.*?): ', text, re.S)
  if isinstance(error, flags.Error) and match:
    flag, key = match.group(1), match.group(2)
    try:  # the key's value in the config file: its type, and an example
      value = config[key]
      hint = (f' ({flag} takes a value of type {type(value).__name__}, '
              f'e.g. {flag}={value})') if value is not None else ''
    except (KeyError, AttributeError, TypeError):
      hint = ''
    return ' '.join(text.split())[5:] + hint + '.'
  for arg in argv:
    key = re.match(r'--?config\.(\w+)', arg)
    if (key and isinstance(error, (AttributeError, KeyError)) and
        re.search(rf'\b{key.group(1)}\b', text)):  # no such key
      guess = re.search(r'Did you mean "(\w+)"', text)
      hint = f' (did you mean --config.{guess.group(1)}?)' if guess else ''
      return (f'{arg}: the config has no key {key.group(1)!r}{hint}: '
              '--help lists the keys.')
  return ' '.join(text.split()) + ' (--help lists the flags).'



def _relative_to(path: str) -> str:
  """Where a relative config path was looked for ('' for an absolute one)."""
  if os.path.isabs(path):
    return ''
  return f', looked for in the current folder {os.getcwd()}'


def _config_path(argv):
  """The config file named by --config in argv (without a ':arguments')."""
  for i, arg in enumerate(argv):
    if re.fullmatch(r'--?config', arg) and i + 1 < len(argv):
      return argv[i + 1].split(':')[0]
    if re.match(r'--?config=', arg):
      return arg.split('=', 1)[1].split(':')[0]
  return None


def _raised_in(error, text, path):
  """'Type: message (line N)' where `error` came out of the config file at
  `path`, else None. (absl passes on a ValueError or TypeError of the file as
  a flags.Error holding the traceback's text.)"""
  if not path:
    return None
  real = os.path.realpath(path)
  if isinstance(error, flags.Error):
    if 'Error whilst parsing config file' not in text:
      return None
    lines = [l for l in text.strip().splitlines() if l.strip()]
    where = re.findall(r'File "(.*?)", line (\d+)', text)
    line = [n for f, n in where if os.path.realpath(f) == real]
    return lines[-1].strip() + (f' (line {line[-1]})' if line else '')
  frames = [f for f in traceback.extract_tb(error.__traceback__)
            if os.path.realpath(f.filename) == real]
  if not frames:
    return None
  message = ' '.join(str(error).split())
  return (f'{type(error).__name__}{": " + message if message else ""} '
          f'(line {frames[-1].lineno})')
