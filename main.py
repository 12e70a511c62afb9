"""imgclf_jax command line: train, evaluate a checkpoint, or predict images.

    python main.py --config=configs/cifar10.py --workdir=runs/cifar10
    python main.py --config=configs/cifar10.py --workdir=runs/cifar10 --mode=eval
    python main.py --workdir=runs/cifar10 --mode=predict --images='photos/*.jpg'
"""

import ctypes
import ctypes.util
import os
import sys


def tune_malloc() -> bool:
  """glibc malloc settings for a training process, applied before JAX and TF
  allocate anything; True if glibc accepted all of them.

  By default glibc serves big buffers (up to 32 MiB) with mmap and gives them
  back to the OS when they are freed, and trims its heaps, so every train
  step maps and page-faults its tens of MB of activations again. Where page
  faults are expensive (VMs) that costs a large part of the step. One arena,
  no mmap and no trimming keep that memory mapped between steps: RSS stays
  at its peak instead of shrinking between steps. Off with
  IMGCLF_JAX_TUNE_MALLOC=0; a no-op where libc has no mallopt (non-glibc).
  """
  if os.environ.get('IMGCLF_JAX_TUNE_MALLOC', '1') == '0':
    return False
  try:
    mallopt = ctypes.CDLL(ctypes.util.find_library('c')).mallopt
  except (OSError, AttributeError, TypeError):
    return False
  # mallopt parameters of glibc's malloc.h: M_ARENA_MAX, M_MMAP_MAX,
  # M_TRIM_THRESHOLD, M_TOP_PAD.
  settings = ((-8, 1), (-4, 0), (-1, 2**31 - 1), (-2, 64 << 20))
  return all([bool(mallopt(param, value)) for param, value in settings])


if __name__ == '__main__':
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  tune_malloc()

from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position
from ml_collections import config_flags  # pylint: disable=g-import-not-at-top,wrong-import-position

from imgclf_jax import cli  # pylint: disable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS


def define_flags(flag_values=FLAGS, sys_argv=None):
  """The flags of main.py, in `flag_values` (`sys_argv`: the command line
  that --config's overrides are read from, default sys.argv)."""
  config_flags.DEFINE_config_file(
      'config', None, 'Config file (e.g. configs/cifar10.py), executed as '
      'Python: only use files you trust. Override keys with '
      '--config.KEY=VALUE. Optional for --mode=eval (the checkpoint has one).',
      flag_values=flag_values, lock_config=True, sys_argv=sys_argv)
  flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and '
                      'plots; training resumes from it.',
                      flag_values=flag_values)
  flags.DEFINE_enum('mode', 'train', cli.MODES, 'train: train and evaluate '
                    '(resuming in --workdir); eval: evaluate a checkpoint and '
                    'write its report; predict: classify --images.',
                    flag_values=flag_values)
  flags.DEFINE_string('step', None, 'Checkpoint for --mode=eval/predict: '
                      'latest (default), best (best validation accuracy) or a '
                      'step number.', flag_values=flag_values)
  flags.DEFINE_string('images', None, 'For --mode=predict: an image file, a '
                      "folder or a quoted glob ('photos/*.jpg').",
                      flag_values=flag_values)
  flags.mark_flags_as_required(['workdir'], flag_values=flag_values)


def parse_flags(argv, flag_values=FLAGS):
  """absl's flag parsing, where a bad flag value or a config file that cannot
  be loaded is one `error:` line and exit status 2, as cli.run's errors."""
  try:
    rest = flag_values(argv)
    config = flag_values['config'].value
    if config is not None:
      config.keys()  # raises OSError where the file could not be read
    return rest
  except Exception as e:  # pylint: disable=broad-except
    # Only absl's parsers, the config file and its overrides run here.
    message = cli.flag_error(e, argv, flag_values['config'].value)
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
  cli.run(FLAGS.mode, FLAGS.config, FLAGS.workdir, step=FLAGS.step,
          images=FLAGS.images, set_keys=set_keys)


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=parse_flags)
