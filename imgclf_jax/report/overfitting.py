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
# of them) the training loss is lower and the validation accuracy no higher
# than OVERFIT_TOLERANCE (relative) above its best before them. A wobble of
# the validation loss, or a rise of both losses together, is not
# overfitting; a validation loss that rises while the accuracy still climbs
# is over-confidence (the model grows surer, also of its mistakes), reported
# as such and not marked on curves.png.
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

  `records` are metrics.jsonl lines (epoch, train_loss, validation_loss,
  validation_accuracy; without it the accuracy is taken to have stalled).
  Returns {'kind': 'overfitting', or 'over-confidence' where the validation
  accuracy still rises (only when no later stretch is overfitting),
  'epoch': first epoch of the trend, 'best_epoch': the epoch of the
  validation-loss minimum before it, 'epochs': how many consecutive epochs
  from 'epoch' on stay above that minimum, and the smoothed
  'validation_loss', 'train_loss' and 'gap' at best_epoch and at the end of
  that stretch, as [then, later]; and 'validation_accuracy', its best
  before the trend and its value at the trend's OVERFIT_PATIENCE-th epoch,
  'accuracy_epoch'}.
  """
  if len(records) < OVERFIT_PATIENCE + 1:
    return None
  val = _smoothed([r['validation_loss'] for r in records])
  train = _smoothed([r['train_loss'] for r in records])
  accuracy = (_smoothed([r['validation_accuracy'] for r in records])
              if all('validation_accuracy' in r for r in records) else None)
  gap = val - train
  confident = None
  for start in range(1, len(records) - OVERFIT_PATIENCE + 1):
    best = int(np.argmin(val[:start]))
    margin = OVERFIT_TOLERANCE * abs(val[best])
    above = val > val[best] + margin
    wider = gap > gap[best] + margin
    stretch = range(start, start + OVERFIT_PATIENCE)
    if not (all(above[i] and wider[i] for i in stretch) and
            train[stretch[-1]] < train[best]):
      continue
    end = start
    while end + 1 < len(records) and above[end + 1]:
      end += 1
    found = {'kind': 'overfitting', 'epoch': int(records[start]['epoch']),
             'best_epoch': int(records[best]['epoch']),
             'epochs': end - start + 1,
             'end_epoch': int(records[end]['epoch']),
             'validation_loss': [float(val[best]), float(val[end])],
             'train_loss': [float(train[best]), float(train[end])],
             'gap': [float(gap[best]), float(gap[end])]}
    if accuracy is None:
      return found
    before = float(np.max(accuracy[:start]))
    found['validation_accuracy'] = [before, float(accuracy[stretch[-1]])]
    found['accuracy_epoch'] = int(records[stretch[-1]]['epoch'])
    if accuracy[stretch[-1]] <= before * (1 + OVERFIT_TOLERANCE):
      return found
    confident = confident or {**found, 'kind': 'over-confidence'}
  return confident


def log_overfitting(records: list[dict]):
  """Logs where overfitting starts (or over-confidence), or that none is
  seen; returns the epoch where overfitting starts, or None."""
  found = overfitting(records)
  if found:
    losses = (SMOOTHING, found['validation_loss'][0], found['best_epoch'],
              found['validation_loss'][1], found['end_epoch'])
    accuracy = ''
    if 'validation_accuracy' in found:
      accuracy = '%.1f%% before epoch %d, %.1f%% at epoch %d' % (
          100 * found['validation_accuracy'][0], found['epoch'],
          100 * found['validation_accuracy'][1], found['accuracy_epoch'])
    if found['kind'] == 'over-confidence':
      logging.info(
          'Over-confidence from epoch %d, not overfitting: the validation '
          'loss (mean of %d epochs) rises (%.4f at epoch %d -> %.4f at epoch '
          '%d) while the validation accuracy still improves (%s).',
          found['epoch'], *losses, accuracy)
      return None
    logging.info(
        'Overfitting starts at epoch %d: the validation loss (mean of %d '
        'epochs) rises (%.4f at epoch %d -> %.4f at epoch %d) while the '
        'training loss falls (%.4f -> %.4f)%s. --step=best is the epoch of '
        'the best validation accuracy.', found['epoch'], *losses,
        *found['train_loss'],
        f' and the validation accuracy stalls ({accuracy})' if accuracy else '')
    return found['epoch']
  if len(records) >= 2:
    logging.info(
        'No overfitting seen: the validation loss (mean of %d epochs) has not '
        'stayed above its minimum for %d epochs while the training loss fell '
        'and the gap between them widened.', SMOOTHING, OVERFIT_PATIENCE)
  return None
