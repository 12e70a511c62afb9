"""What the command runs (command_line.py, main.py): dispatch on --mode, and
one-line errors for users."""

import json
import logging as pylogging
import os
import signal
import sys

from absl import logging

from imgclf_jax.checkpoints import workdir_lock
from imgclf_jax.data import dataset_name
from imgclf_jax.errors import UserError
from imgclf_jax.parallel import distributed
from imgclf_jax.training import preemption

MODES = ('train', 'eval', 'predict', 'export')


def run(mode: str, config, workdir: str, step=None, images=None,
        set_keys=None, export_dir=None):
  """Runs `mode`; a UserError is printed as one line and exits with status 2.

  `step`: None/'latest', 'best' or a step number (eval, predict, export);
  `images`: a file, folder or glob (predict); `set_keys`: the keys of
  `config` set on the command line (--config.KEY=; None: all of them);
  `export_dir`: where export writes (None: <workdir>/export/step<N>).
  A SIGTERM or Ctrl-C outside the training steps (preemption.SignalStop,
  where the command line turned them on) is one `stopped:` line; with
  several processes, the loss of one is one `error:` line
  (distributed.exit_if_peer_lost); so is a full disk anywhere.
  """
  try:
    result = _run(mode, config, workdir, step, images, set_keys, export_dir)
  except preemption.SignalStop as e:
    finish(f'stopped: {stop_message(e, mode, workdir)}', e.status)
  except UserError as e:
    finish(f'error: {e}', 2)
  except Exception as e:  # pylint: disable=broad-except
    distributed.exit_if_peer_lost(e, lambda: restart_advice(mode, workdir))
    full = _disk_full(e, workdir)
    if full:
      finish(f'error: {full}', 2)
    raise
  return result


def _run(mode, config, workdir, step, images, set_keys, export_dir):
  # pylint: disable=g-import-not-at-top
  # Each mode imports its own modules, here: `--help` and flag errors stay
  # fast, and eval, predict and export do not import the trainer.
  _quiet_library_logs()
  check_workdir(mode, workdir)
  if mode == 'train':
    return _train(config, workdir)
  if mode == 'predict':
    from imgclf_jax.modes import predict
    return predict.predict_images(config, workdir, images, step)
  if mode == 'export':
    from imgclf_jax.modes import export
    result = export.export_checkpoint(config, workdir, step, export_dir)
    print(json.dumps(result, indent=2))
    return result
  from imgclf_jax.modes import evaluate
  result = evaluate.evaluate_checkpoint(config, workdir, step, set_keys)
  # The table is in the log; stdout gets one line of JSON for scripts
  # (from the first process of several).
  if distributed.is_primary():
    print(json.dumps(evaluate.summary(result)))
  return result


def _train(config, workdir: str):
  """--mode=train; a stop by Ctrl-C or SIGTERM is one line and its exit
  status."""
  from imgclf_jax.modes import train  # pylint: disable=g-import-not-at-top
  from imgclf_jax.training import loop  # pylint: disable=g-import-not-at-top
  if config is None:
    raise UserError('--config is required for --mode=train: a config file '
                    'or a recipe by name, e.g. --config=cifar10.')
  try:
    return train.train_and_evaluate(config, workdir)
  except loop.Interrupted as e:
    finish(f'interrupted: {e}', 130)
  except loop.Stopped as e:  # SIGTERM or Ctrl-C, with a checkpoint
    finish(f'stopped: {e}', e.status)


def finish(line: str, status: int):
  """Ends the run: the log flushed, `line` on stderr, exit `status`."""
  logging.flush()
  preemption.write_last_line(line, status)
  sys.exit(status)


def stop_message(stop, mode: str, workdir: str) -> str:
  """What a SignalStop stopped, and what is kept."""
  name = signal.Signals(stop.signum).name
  if mode != 'train':
    return (f'{name} received: --mode={mode} stopped before it finished '
            '(no file is left half-written): run the same command again.')
  when = ('during start-up, before its first step' if stop.during_startup
          else 'after its last step')
  return f'{name} received: training stopped {when}; {_kept(workdir)}.'


def _disk_full(error: Exception, workdir: str) -> str | None:
  """The one-line error of a write to a full disk that was not caught where
  it was written (whole_file.py and checkpoint saves say more), or None."""
  from imgclf_jax.checkpoints import integrity  # pylint: disable=g-import-not-at-top
  if not integrity.disk_full(error):
    return None
  return (f'the disk is full ({integrity.describe(error)}): free space on '
          f'the disk of {os.path.abspath(workdir)}, or use a --workdir on '
          'another disk, then run the same command again.')


def restart_advice(mode: str, workdir: str) -> str:
  """What running every process again does (a lost process's error line)."""
  if mode != 'train':
    return 'Run the same command again in every process.'
  return f'Run the same command again in every process: {_kept(workdir)}.'


def _kept(workdir: str) -> str:
  """The last checkpoint on disk, and that a rerun resumes from it."""
  directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
  steps = [int(s) for s in workdir_lock.checkpoint_steps(workdir)]
  if not steps:
    return 'no checkpoint was written yet (a rerun starts anew)'
  return (f'the last checkpoint (step {max(steps)}) is kept in {directory}: '
          'run the same command to resume from it')


def check_before_imports(mode: str, config, set_keys=None):
  """What is checked before TensorFlow and JAX load (seconds): the
  config.dataset that `mode` reads, where it names a folder that is not
  there (training's; eval's when set on the command line, `set_keys`)."""
  if config is None:
    return
  if mode == 'train' or (mode == 'eval' and set_keys is not None and
                         'dataset' in set_keys):
    dataset_name.check(config.dataset)


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
