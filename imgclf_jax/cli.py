"""What main.py runs: dispatch on --mode, and one-line errors for users."""

import json
import logging as pylogging
import sys

from absl import logging

from imgclf_jax.errors import UserError

MODES = ('train', 'eval', 'predict')


def run(mode: str, config, workdir: str, step=None, images=None):
  """Runs `mode`; a UserError is printed as one line and exits with status 2.

  `step`: None/'latest', 'best' or a step number (eval and predict);
  `images`: a file, folder or glob (predict).
  """
  # Imported here so that `--help` and flag errors stay fast.
  from imgclf_jax import evaluate  # pylint: disable=g-import-not-at-top
  from imgclf_jax import predict  # pylint: disable=g-import-not-at-top
  from imgclf_jax import train  # pylint: disable=g-import-not-at-top
  _quiet_library_logs()
  try:
    if mode == 'train':
      if config is None:
        raise UserError('--config is required for --mode=train, e.g. '
                        '--config=configs/cifar10.py.')
      return train.train_and_evaluate(config, workdir)
    if mode == 'predict':
      return predict.predict_images(config, workdir, images, step)
    result = evaluate.evaluate_checkpoint(config, workdir, step)
    print(json.dumps(evaluate.summary(result), indent=2))
    return result
  except UserError as e:
    logging.flush()
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


def _quiet_library_logs():
  """Keeps Orbax's per-save INFO lines out of the log (warnings still show)."""
  def keep(record):
    return record.levelno >= pylogging.WARNING or 'orbax' not in record.pathname
  logging.get_absl_logger().addFilter(keep)
