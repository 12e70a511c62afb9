"""imgclf_jax command line: train, evaluate a checkpoint, or predict images.

    python main.py --config=configs/cifar10.py --workdir=runs/cifar10
    python main.py --config=configs/cifar10.py --workdir=runs/cifar10 --mode=eval
    python main.py --workdir=runs/cifar10 --mode=predict --images='photos/*.jpg'
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from imgclf_jax import malloc_tuning  # pylint: disable=g-import-not-at-top

malloc_tuning.tune_malloc()  # before JAX/TF allocate anything

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from ml_collections import config_flags

from imgclf_jax import cli

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
