"""Early stopping: training ends when the validation metric stops improving."""


class EarlyStopping:
  """Stops when `metric` ('validation_loss': lower is better,
  'validation_accuracy': higher) has not improved for `patience` epochs
  (0: never stops)."""

  def __init__(self, metric: str, patience: int):
    self.metric, self.patience = metric, int(patience)
    self.best, self.best_epoch, self.stopped = None, None, False

  def update(self, record: dict) -> bool:
    """Takes an epoch's record; True when training should stop now."""
    value = record[self.metric]
    sign = -1.0 if self.metric.endswith('loss') else 1.0
    if self.best is None or sign * value > sign * self.best:
      self.best, self.best_epoch = value, record['epoch']
    self.stopped = bool(self.patience) and (
        record['epoch'] - self.best_epoch >= self.patience)
    return self.stopped

  def reason(self) -> str:
    return (f'Stopped early: {self.metric} has not improved for '
            f'{self.patience} epochs since epoch {self.best_epoch} '
            f'({self.best:.4f}).')
