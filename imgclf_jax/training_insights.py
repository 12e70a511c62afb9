"""What training shows besides its metrics: class balance and overfitting.

  class_distribution.png / .json   examples per class of the training and
                                   validation splits, written before training
                                   (with a warning when the imbalance is large)
  overfitting_epoch(records)       where validation loss turns up while the
                                   training loss still falls (curves.png, log)
"""

import json
import os

from absl import logging
import numpy as np

from imgclf_jax import imbalance
from imgclf_jax import report_plots

CLASS_DISTRIBUTION = 'class_distribution'


def overfitting_epoch(records: list[dict]):
  """The first epoch after the validation-loss minimum that has a higher
  validation loss and a lower training loss than that minimum's epoch; None
  when there is no such epoch (no overfitting seen yet).

  `records` are metrics.jsonl lines (epoch, train_loss, validation_loss).
  """
  if len(records) < 2:
    return None
  val = np.array([r['validation_loss'] for r in records], np.float64)
  train = np.array([r['train_loss'] for r in records], np.float64)
  best = int(np.argmin(val))
  for i in range(best + 1, len(records)):
    if val[i] > val[best] and train[i] < train[best]:
      return int(records[i]['epoch'])
  return None


def log_overfitting(records: list[dict]):
  """Logs the overfitting epoch (if any) and returns it."""
  epoch = overfitting_epoch(records)
  if epoch is not None:
    by_epoch = {r['epoch']: r for r in records}
    best = min(records, key=lambda r: r['validation_loss'])
    logging.info(
        'Overfitting starts at epoch %d: validation loss %.4f, up from its '
        'minimum %.4f at epoch %d, while training loss fell to %.4f (from '
        '%.4f). The best checkpoint by validation accuracy is kept '
        '(--mode=eval --step=best).', epoch, by_epoch[epoch]['validation_loss'],
        best['validation_loss'], best['epoch'], by_epoch[epoch]['train_loss'],
        best['train_loss'])
  elif len(records) >= 2:
    logging.info('No overfitting seen: validation loss has not turned up '
                 'while training loss fell.')
  return epoch


def write_class_distribution(pipeline, config, workdir: str) -> dict:
  """class_distribution.png and .json for the training and validation splits.

  Logs a warning (imbalance.describe) when the training split's largest class
  has more than config.imbalance_warning_ratio times the smallest's examples.
  """
  class_names = list(pipeline.source.info.class_names)
  counts = {split: pipeline.class_counts(split)
            for split in ('train', 'validation')}
  summary = imbalance.describe(counts['train'], class_names, config)
  path = os.path.join(workdir, CLASS_DISTRIBUTION + '.png')
  ratio = summary['imbalance_ratio']
  layout = report_plots.plot_class_distribution(
      class_names, counts, path,
      title=('examples per class (train imbalance ratio '
             f'{ratio:.1f})' if ratio is not None else
             'examples per class (a class has no training examples)'))
  result = {'class_names': class_names,
            **{split: [int(c) for c in v] for split, v in counts.items()},
            **summary, 'layout': layout}
  with open(os.path.join(workdir, CLASS_DISTRIBUTION + '.json'), 'w') as f:
    json.dump(result, f, indent=2)
  return result
