"""The epoch where overfitting starts: a sustained trend of the smoothed
training and validation curves (curves.png, the log)."""

from absl import logging
import numpy as np

# Overfitting is read from the curves smoothed by a centred mean over
# SMOOTHING epochs. It starts at the first epoch of OVERFIT_PATIENCE
# consecutive epochs in which, compared with the epoch of the lowest
# validation loss before them, the validation loss is higher by more than
# OVERFIT_TOLERANCE (relative), the gap validation minus training loss is
# wider by more than OVERFIT_TOLERANCE times that minimum, and (at the last
# of them) the training loss is lower. A wobble of the validation loss, or a
# rise of both losses together, is not overfitting.
SMOOTHING = 3
OVERFIT_PATIENCE = 3


OVERFIT_TOLERANCE = 0.01


def _smoothed(values) -> np.ndarray:
  """The centred mean over SMOOTHING epochs (fewer at the ends)."""
  values = np.asarray(values, np.float64)
  half = SMOOTHING // 2
  return np.array([values[max(0, i - half):i + half + 1].mean()
                   for i in range(len(values))])


def overfitting(records: list[dict]):
  """Where overfitting starts (see OVERFIT_PATIENCE), or None.

  `records` are metrics.jsonl lines (epoch, train_loss, validation_loss).
  Returns {'epoch': first epoch of the trend, 'best_epoch': the epoch of
  the validation-loss minimum before it, 'epochs': how many consecutive
  epochs from 'epoch' on stay above that minimum, and the smoothed
  'validation_loss', 'train_loss' and 'gap' at best_epoch and at the end of
  that stretch, as [then, later]}.
  """
  if len(records) < OVERFIT_PATIENCE + 1:
    return None
  val = _smoothed([r['validation_loss'] for r in records])
  train = _smoothed([r['train_loss'] for r in records])
  gap = val - train
  for start in range(1, len(records) - OVERFIT_PATIENCE + 1):
    best = int(np.argmin(val[:start]))
    margin = OVERFIT_TOLERANCE * abs(val[best])
    above = val > val[best] + margin
    wider = gap > gap[best] + margin
    stretch = range(start, start + OVERFIT_PATIENCE)
    if (all(above[i] and wider[i] for i in stretch) and
        train[stretch[-1]] < train[best]):
      end = start
      while end + 1 < len(records) and above[end + 1]:
        end += 1
      return {'epoch': int(records[start]['epoch']),
              'best_epoch': int(records[best]['epoch']),
              'epochs': end - start + 1,
              'end_epoch': int(records[end]['epoch']),
              'validation_loss': [float(val[best]), float(val[end])],
              'train_loss': [float(train[best]), float(train[end])],
              'gap': [float(gap[best]), float(gap[end])]}
  return None


def log_overfitting(records: list[dict]):
  """Logs where overfitting starts, or that none is seen; returns the epoch
  or None."""
  found = overfitting(records)
  if found:
    logging.info(
        'Overfitting starts at epoch %d: over %d consecutive epochs (to epoch '
        '%d) the validation loss (mean of %d epochs) stays above its minimum '
        'at epoch %d (%.4f -> %.4f), while the training loss falls (%.4f -> '
        '%.4f) and the gap between them widens (%.4f -> %.4f). The best '
        'checkpoint by validation accuracy is kept (--mode=eval --step=best).',
        found['epoch'], found['epochs'], found['end_epoch'], SMOOTHING,
        found['best_epoch'], *found['validation_loss'], *found['train_loss'],
        *found['gap'])
    return found['epoch']
  if len(records) >= 2:
    logging.info(
        'No overfitting seen: the validation loss (mean of %d epochs) has not '
        'stayed above its minimum for %d epochs while the training loss fell '
        'and the gap between them widened.', SMOOTHING, OVERFIT_PATIENCE)
  return None
