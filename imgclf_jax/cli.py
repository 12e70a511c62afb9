"""What main.py runs: dispatch on --mode, and one-line errors for users."""

import json
import logging as pylogging
import sys

from absl import logging

from imgclf_jax.errors import UserError

MODES = ('train', 'eval')


def run(mode: str, config, workdir: str, step=None):
  """Runs `mode`; a UserError is printed as one line and exits with status 2."""
  # Imported here so that `--help` and flag errors stay fast.
  from imgclf_jax import evaluate  # pylint: disable=g-import-not-at-top
  from imgclf_jax import train  # pylint: disable=g-import-not-at-top
  _quiet_library_logs()
  try:
    if mode == 'train':
      if config is None:
        raise UserError('--config is required for --mode=train, e.g. '
                        '--config=configs/cifar10.py.')
      return train.train_and_evaluate(config, workdir)
    result = evaluate.evaluate_checkpoint(config, workdir, step)
    print(json.dumps(result, indent=2))
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
