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


class Clock:
  """A clock the test moves: the seconds each step and log point take."""

  def __init__(self):
    self.now = 100.0

  def __call__(self):
    return self.now


def test_the_first_steps_compilation_is_left_out_of_the_rate_and_eta(caplog):
  # 12 steps of 8 images: the first takes 25 s (compiling), the others 1 s.
  clock = Clock()
  with caplog.at_level('INFO'):
    lines = progress.EpochProgress(0, 5, num_steps=12, batch_size=8,
                                   interactive=False, clock=clock)
    clock.now += 25
    lines.step()
    assert lines.show(2.0, 0.25) == {'images_per_second': None}
    for _ in range(3):
      clock.now += 1
      lines.step()
    rate = lines.show(1.5, 0.5)['images_per_second']
  assert rate == 8.0  # 3 steps of 8 images in 3 s
  assert caplog.messages == [
      'epoch 1/5: step 1/12, loss 2.0000, accuracy 25.0%',
      'epoch 1/5: step 4/12, loss 1.5000, accuracy 50.0%, 8 img/s, epoch ETA '
      '8s']


def test_log_points_every_n_seconds_as_well(caplog):
  clock = Clock()
  lines = progress.EpochProgress(0, 1, num_steps=43, batch_size=8,
                                 interactive=False, clock=clock,
                                 log_every_seconds=30)
  due = []
  for step in range(1, 11):
    clock.now += 8  # each step 8 s: due after the 4th, 8th since the last
    lines.step()
    if lines.seconds_due():
      due.append(step)
      lines.show(1.0, 0.5)
  assert due == [4, 8]
  never = progress.EpochProgress(0, 1, num_steps=43, batch_size=8,
                                 interactive=False, clock=clock)
  clock.now += 3600
  assert not never.seconds_due()  # log_every_seconds 0: by steps only


def test_the_bar_shows_no_rate_of_its_own():
  # tqdm's own s/step and remaining time would count the compilation: the
  # bar leaves them out; its postfix has img/s and the ETA from show().
  stream, clock = io.StringIO(), Clock()
  bar = progress.EpochProgress(0, 5, num_steps=4, batch_size=32,
                               interactive=True, stream=stream, clock=clock)
  clock.now += 25
  bar.step()
  clock.now += 1
  bar.step()
  bar.show(0.5, 0.75)
  bar.close()
  text = stream.getvalue()
  assert 'loss 0.5000, accuracy 75.0%, 32 img/s, epoch ETA 2s' in text
  assert 's/step' not in text and 'step/s' not in text and '<' not in text


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
