"""progress.py: a bar on a terminal, log lines elsewhere, one line per
epoch."""

import io

from imgclf_jax.training import progress


def test_terminal_gets_a_bar_with_running_metrics():
  stream = io.StringIO()
  bar = progress.EpochProgress(1, 5, num_steps=4, batch_size=32,
                               interactive=True, stream=stream)
  for _ in range(2):
    bar.step()
  rate = bar.show(0.5, 0.75)['images_per_second']
  bar.close()
  text = stream.getvalue()
  assert 'epoch 2/5' in text and '2/4' in text
  assert 'loss 0.5000, accuracy 75.0%' in text
  assert rate > 0


def test_elsewhere_log_lines_with_eta(caplog):
  with caplog.at_level('INFO'):
    lines = progress.EpochProgress(0, 3, num_steps=10, batch_size=8,
                                   interactive=False)
    for _ in range(5):
      lines.step()
    lines.show(1.25, 0.5)
    lines.close()
  assert lines.bar is None
  assert 'epoch 1/3: step 5/10, loss 1.2500, accuracy 50.0%' in caplog.text
  assert 'epoch ETA' in caplog.text


def test_epoch_line_and_seconds():
  record = {'epoch': 3, 'train_loss': 1.31474, 'train_accuracy': 0.7728,
            'validation_loss': 0.66191, 'validation_accuracy': 0.84,
            'learning_rate': 1.4649, 'epoch_seconds': 410.6,
            'validation_tta_accuracy': 0.8512}
  assert progress.epoch_line(record, 12) == (
      'epoch 3/12: train loss 1.3147, accuracy 77.3%; validation loss '
      '0.6619, accuracy 84.0% (with TTA 85.1%); lr 1.46; 6m 51s')
  assert [progress.format_seconds(s) for s in (42.4, 185, 3725)] == [
      '42s', '3m 05s', '1h 02m']
