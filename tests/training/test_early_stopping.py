"""early_stopping.py: epochs without improvement of the validation loss
(lower is better) or accuracy (higher), and patience 0 (never)."""

from imgclf_jax.training import early_stopping


def test_early_stopping_counts_epochs_without_improvement():
  stopper = early_stopping.EarlyStopping('validation_loss', patience=2)
  losses = [1.0, 0.8, 0.9, 0.85, 0.7, 0.75, 0.8]
  stops = [stopper.update({'epoch': i + 1, 'validation_loss': v})
           for i, v in enumerate(losses)]
  assert stops == [False, False, False, True, False, False, True]
  assert stopper.best_epoch == 5 and stopper.best == 0.7
  accuracy = early_stopping.EarlyStopping('validation_accuracy', patience=1)
  assert not accuracy.update({'epoch': 1, 'validation_accuracy': 0.5})
  assert not accuracy.update({'epoch': 2, 'validation_accuracy': 0.6})
  assert accuracy.update({'epoch': 3, 'validation_accuracy': 0.6})
  never = early_stopping.EarlyStopping('validation_loss', patience=0)
  assert not any(never.update({'epoch': e, 'validation_loss': 1.0})
                 for e in range(1, 5))
