"""imgclf_jax command line: train, evaluate a checkpoint, or predict images.

    python main.py --config=configs/cifar10.py --workdir=runs/cifar10
    python main.py --config=configs/cifar10.py --workdir=runs/cifar10 --mode=eval
    python main.py --workdir=runs/cifar10 --mode=predict --images='photos/*.jpg'
"""

import ctypes
import ctypes.util
import os


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
config_flags.DEFINE_config_file(
    'config', None, 'Config file (e.g. configs/cifar10.py); override keys with '
    '--config.KEY=VALUE. Optional for --mode=eval (the checkpoint has one).',
    lock_config=True)
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and '
                    'plots; training resumes from it.')
flags.DEFINE_enum('mode', 'train', cli.MODES, 'train: train and evaluate '
                  '(resuming in --workdir); eval: evaluate a checkpoint and '
                  'write its report; predict: classify --images.')
flags.DEFINE_string('step', None, 'Checkpoint for --mode=eval/predict: latest '
                    '(default), best (best validation accuracy) or a step '
                    'number.')
flags.DEFINE_string('images', None, 'For --mode=predict: an image file, a '
                    "folder or a quoted glob ('photos/*.jpg').")
flags.mark_flags_as_required(['workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  cli.run(FLAGS.mode, FLAGS.config, FLAGS.workdir, step=FLAGS.step,
          images=FLAGS.images)


if __name__ == '__main__':
  app.run(main)
