"""imgclf_jax command line: train, or evaluate a checkpoint.

    python main.py --config=configs/cifar10.py --workdir=runs/cifar10
    python main.py --config=configs/cifar10.py --workdir=runs/cifar10 --mode=eval
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

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
                  '(resuming in --workdir); eval: evaluate a checkpoint.')
flags.DEFINE_integer('step', None, 'Checkpoint step for --mode=eval '
                     '(default: the latest).')
flags.mark_flags_as_required(['workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  cli.run(FLAGS.mode, FLAGS.config, FLAGS.workdir, step=FLAGS.step)


if __name__ == '__main__':
  app.run(main)
