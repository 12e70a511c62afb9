"""imgclf_jax command line: train, evaluate a checkpoint, or predict images.

    imgclf-jax --config=cifar10 --workdir=runs/cifar10
    imgclf-jax --workdir=runs/cifar10 --mode=eval --step=best
    imgclf-jax --workdir=runs/cifar10 --mode=predict --images='photos/*.jpg'
    imgclf-jax --workdir=runs/cifar10 --mode=export

(`python main.py` in a checkout takes the same flags. --config takes a
config file or the name of a recipe shipped with the package.)
"""

import os
import sys
import textwrap

from absl import app
from absl import flags
from ml_collections import config_flags

from imgclf_jax.config import keys
from imgclf_jax.config import recipes
from imgclf_jax.errors import UserError
from imgclf_jax import flag_errors
from imgclf_jax import malloc_tuning
from imgclf_jax.modes import dispatch
from imgclf_jax.parallel import distributed
from imgclf_jax.training import preemption

FLAGS = flags.FLAGS
FLAG_NAMES = ('config', 'workdir', 'mode', 'step', 'images', 'export_dir',
              'distributed', 'coordinator_address', 'num_processes',
              'process_id')
# Asking for help: exits 0 after the usage, the flags and the config keys.
HELP_FLAGS = ('--help', '-help', '-h', '-?', '--helpshort', '-helpshort')
# absl's own, longer help (every library's flags); exits 0 after it.
ABSL_HELP_FLAGS = ('--helpfull', '-helpfull', '--helpxml', '-helpxml')


def define_flags(flag_values=FLAGS, sys_argv=None):
  """The command's flags, in `flag_values` (`sys_argv`: the command line
  that --config's overrides are read from, default sys.argv)."""
  config_flags.DEFINE_config_file(
      'config', None, 'Config file (e.g. configs/cifar10.py), executed as '
      'Python: only use files you trust; or a recipe by name (cifar10: '
      'configs/cifar10.py, wherever the command runs). Override keys with '
      '--config.KEY=VALUE (the keys are listed below). Optional for '
      '--mode=eval and predict (the checkpoint has one).',
      flag_values=flag_values, lock_config=True, sys_argv=sys_argv)
  flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and '
                      'plots; training resumes from it.',
                      flag_values=flag_values)
  flags.DEFINE_enum('mode', 'train', dispatch.MODES, 'train: train and evaluate '
                    '(resuming in --workdir); eval: evaluate a checkpoint and '
                    'write its report; predict: classify --images; export: '
                    'write a checkpoint as a TensorFlow SavedModel.',
                    flag_values=flag_values)
  flags.DEFINE_string('step', None, 'Checkpoint for --mode=eval/predict/'
                      'export: latest (default), best (best validation '
                      'accuracy) or a step number.', flag_values=flag_values)
  flags.DEFINE_string('images', None, 'For --mode=predict: an image file, a '
                      "folder or a quoted glob ('photos/*.jpg').",
                      flag_values=flag_values)
  flags.DEFINE_string('export_dir', None, 'For --mode=export: the folder to '
                      'write the SavedModel to (default: '
                      '<workdir>/export/step<N>).', flag_values=flag_values)
  flags.DEFINE_enum('distributed', 'auto', distributed.MODES,
                    'Several processes (jax.distributed): on: join them '
                    '(JAX detects Cloud TPU pods, SLURM, Open MPI and '
                    'Kubernetes; elsewhere give the next three flags); auto: '
                    'when one of those flags is given or srun/mpirun started '
                    'several tasks; off: one process.',
                    flag_values=flag_values)
  flags.DEFINE_string('coordinator_address', None, 'With several processes: '
                      "HOST:PORT of process 0's coordinator (the same on "
                      'every process).', flag_values=flag_values)
  flags.DEFINE_integer('num_processes', None, 'With several processes: how '
                       'many.', lower_bound=1, flag_values=flag_values)
  flags.DEFINE_integer('process_id', None, 'With several processes: this '
                       "one's index, 0 to num_processes - 1.", lower_bound=0,
                       flag_values=flag_values)
  flags.mark_flags_as_required(['workdir'], flag_values=flag_values)


def usage(flag_values=FLAGS) -> str:
  """The help text: how to run, the flags, and every config key."""
  lines = [__doc__.strip(), '', 'flags:']
  for name in FLAG_NAMES:
    flag = flag_values[name]
    default = '' if flag.default is None else f' (default: {flag.default})'
    lines += textwrap.wrap(f'--{name}: {flag.help}{default}', 79,
                           initial_indent='  ', subsequent_indent='    ')
  names = ', '.join(keys.get_config().keys())
  lines += ['', *textwrap.wrap(
      "config keys (--config.KEY=VALUE; each one's default and meaning: "
      f'{keys.__file__}):', 79, subsequent_indent='  ')]
  lines += textwrap.wrap(names, 79, initial_indent='  ',
                         subsequent_indent='  ')
  if recipes.folder() is not None:
    lines += ['', *textwrap.wrap(
        f'recipes (--config=NAME; in {recipes.folder()}): '
        f'{", ".join(recipes.names())}', 79, subsequent_indent='  ')]
  lines += ['', '--helpfull lists the flags of every library as well.']
  return '\n'.join(lines)


def parse_flags(argv, flag_values=FLAGS):
  """absl's flag parsing, where a bad flag value or a config file that cannot
  be loaded is one `error:` line and exit status 2, as dispatch.run's errors;
  --help prints `usage` and exits 0."""
  if any(arg in HELP_FLAGS for arg in argv[1:]):
    print(usage(flag_values))
    sys.exit(0)
  try:
    argv = recipes.expand(argv)
    rest = flag_values(argv)
    config = flag_values['config'].value
    if config is not None:
      config.keys()  # raises OSError where the file could not be read
    return rest
  except SystemExit:
    if any(arg in ABSL_HELP_FLAGS for arg in argv[1:]):
      sys.exit(0)  # absl printed its help, and exits 1 after it
    raise
  except Exception as e:  # pylint: disable=broad-except
    # Only absl's parsers, the config file and its overrides run here.
    message = flag_errors.flag_error(e, argv, flag_values['config'].value)
  print(f'error: {message}', file=sys.stderr)
  sys.exit(2)


def main(argv):
  if len(argv) > 1:
    print(f'error: unexpected argument(s) {argv[1:]}: every option is '
          "--flag=value; quote a glob (--images='photos/*.jpg') so that the "
          'shell does not expand it.', file=sys.stderr)
    sys.exit(2)
  set_keys = (set(config_flags.get_override_values(FLAGS['config']))
              if FLAGS.config is not None else None)
  # Before TF and JAX load (dispatch.run imports them): TF's C++ warnings off;
  # in predict its errors too, since predict names each file it cannot read
  # (`skipped:`) where TF would add an 'Input file read error' line.
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL',
                        '3' if FLAGS.mode == 'predict' else '2')
  malloc_tuning.tune_malloc(FLAGS.config.model if FLAGS.config is not None
                            and FLAGS.mode == 'train' else None)
  try:
    dispatch.check_before_imports(FLAGS.mode, FLAGS.config, set_keys)
    distributed.initialize(FLAGS.distributed, FLAGS.coordinator_address,
                           FLAGS.num_processes, FLAGS.process_id)
  except UserError as e:
    dispatch.finish(f'error: {e}', 2)
  except preemption.SignalStop as e:  # while waiting for the other processes
    dispatch.finish('stopped: ' + dispatch.stop_message(e, FLAGS.mode,
                                                        FLAGS.workdir),
                    e.status)
  dispatch.run(FLAGS.mode, FLAGS.config, FLAGS.workdir, step=FLAGS.step,
          images=FLAGS.images, set_keys=set_keys,
          export_dir=FLAGS.export_dir)


def run():
  """The `imgclf-jax` command (and `python main.py`): the flags, then
  malloc tuning, then dispatch.run.

  SIGTERM and Ctrl-C stop it with one `stopped:` line from the start
  (preemption.stop_on_signals; the training steps stop at a checkpoint);
  once its last line is written, a further one ends it at once, quietly."""
  preemption.stop_on_signals()
  # TensorFlow only feeds data here; without this it announces its oneDNN
  # kernels twice on every start. Set TF_ENABLE_ONEDNN_OPTS=1 to use them.
  os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')
  try:
    define_flags()
    app.run(main, flags_parser=parse_flags)
  except SystemExit as e:
    preemption.exit_at_once_on_signals(e.code if isinstance(e.code, int)
                                       else None)
    raise
  except preemption.SignalStop as e:  # while the flags were read
    preemption.write_last_line(
        f'stopped: {e} received during start-up: nothing was done.', e.status)
    sys.exit(e.status)
