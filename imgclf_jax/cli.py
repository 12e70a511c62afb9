"""What the command runs (command_line.py, main.py): dispatch on --mode, and
one-line errors for users."""

import json
import logging as pylogging
import os
import re
import sys
import traceback

from absl import flags
from absl import logging

from imgclf_jax import distributed
from imgclf_jax.errors import UserError

MODES = ('train', 'eval', 'predict', 'export')


def run(mode: str, config, workdir: str, step=None, images=None,
        set_keys=None, export_dir=None):
  """Runs `mode`; a UserError is printed as one line and exits with status 2.

  `step`: None/'latest', 'best' or a step number (eval, predict, export);
  `images`: a file, folder or glob (predict); `set_keys`: the keys of
  `config` set on the command line (--config.KEY=; None: all of them);
  `export_dir`: where export writes (None: <workdir>/export/step<N>).
  """
  # Imported here so that `--help` and flag errors stay fast.
  from imgclf_jax import evaluate  # pylint: disable=g-import-not-at-top
  from imgclf_jax import predict  # pylint: disable=g-import-not-at-top
  from imgclf_jax import train  # pylint: disable=g-import-not-at-top
  _quiet_library_logs()
  try:
    check_workdir(mode, workdir)
    if mode == 'train':
      if config is None:
        raise UserError('--config is required for --mode=train, e.g. '
                        '--config=configs/cifar10.py.')
      return train.train_and_evaluate(config, workdir)
    if mode == 'predict':
      return predict.predict_images(config, workdir, images, step)
    if mode == 'export':
      from imgclf_jax import export  # pylint: disable=g-import-not-at-top
      result = export.export_checkpoint(config, workdir, step, export_dir)
      print(json.dumps(result, indent=2))
      return result
    result = evaluate.evaluate_checkpoint(config, workdir, step, set_keys)
    # The table is in the log; stdout gets one line of JSON for scripts
    # (from the first process of several).
    if distributed.is_primary():
      print(json.dumps(evaluate.summary(result)))
    return result
  except UserError as e:
    logging.flush()
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  except train.Interrupted as e:
    logging.flush()
    print(f'interrupted: {e}', file=sys.stderr)
    sys.exit(130)
  except train.Stopped as e:  # SIGTERM or Ctrl-C, with a checkpoint
    logging.flush()
    print(f'stopped: {e}', file=sys.stderr)
    sys.exit(e.status)


def check_workdir(mode: str, workdir: str):
  """Refuses, before any work, a --workdir that `mode` could not write to:
  training creates it (or resumes in it); eval and predict write their
  reports and CSVs into it."""
  path = os.path.abspath(workdir)
  if os.path.lexists(path) and not os.path.exists(path):
    raise UserError(f'--workdir={workdir} is a broken symbolic link: fix it or '
                    'give another folder.')
  if os.path.exists(path) and not os.path.isdir(path):
    raise UserError(f'--workdir={workdir} is a file, not a folder: give a '
                    'folder for the checkpoints, logs and reports (training '
                    'creates it).')
  if mode != 'train':
    if os.path.isdir(path) and not _writable(path):
      written = {'eval': 'its report (eval_<split>_step<N>.json, .csv, .png)',
                 'predict': 'predictions_step<N>.csv',
                 'export': 'the SavedModel (export/step<N>/)'}[mode]
      raise UserError(
          f'--workdir={workdir} is not writable, and --mode={mode} writes '
          f'{written} there: make it writable, or copy the run (cp -r '
          f'{workdir} /tmp/run) and give --workdir=/tmp/run.')
    return
  existing = path
  while not os.path.lexists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise UserError(f'--workdir={workdir} cannot be created: {existing} is a '
                    'file, not a folder.')
  checkpoints = os.path.join(path, 'checkpoints')
  if not _writable(existing):
    what = ('is not writable' if existing == path else
            f'cannot be created: {existing} is not writable')
  elif os.path.isdir(checkpoints) and not _writable(checkpoints):
    what = f'has a checkpoints folder that is not writable ({checkpoints})'
  else:
    return
  raise UserError(f'--workdir={workdir} {what}: training writes its '
                  'checkpoints and logs there; give a folder you can write '
                  'to.')


def _writable(folder: str) -> bool:
  """Files can be created in `folder` (a read-only mount and an immutable
  folder are not writable for root either)."""
  return os.access(folder, os.W_OK | os.X_OK)


def _quiet_library_logs():
  """Keeps Orbax's per-save INFO lines and JAX's search for absent
  backends ('Unable to initialize backend tpu') out of the log (warnings
  still show)."""
  def keep(record):
    return record.levelno >= pylogging.WARNING or 'orbax' not in record.pathname
  logging.get_absl_logger().addFilter(keep)
  pylogging.getLogger('jax._src.xla_bridge').setLevel(pylogging.WARNING)


# ----------------------------------------------------------------------------
# Flag errors (command_line.parse_flags)


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
    return (f'--config={path}: cannot read the config file ({reason})'
            f'{_relative_to(path)}: give the path of a config file, e.g. '
            f'--config={_example_config(path)}.')
  raised = _raised_in(error, text, path)
  if raised and "No module named 'configs'" in raised:
    return (f'--config={path}: the config file raised {raised}: configs/ is '
            'not importable here. Start from the package\'s defaults instead: '
            'from imgclf_jax import config_keys; config = '
            'config_keys.get_config().')
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


def _example_config(path: str) -> str:
  """`path` in the checkout this package lies in, where it is there (a
  relative --config given from another folder), else configs/cifar10.py."""
  checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  there = os.path.join(checkout, path)
  if not os.path.isabs(path) and os.path.isfile(there):
    return there
  return 'configs/cifar10.py'


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
