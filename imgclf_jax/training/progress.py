"""What a person watching training sees: one bar per epoch on a terminal,
plain log lines elsewhere (CI, nohup, SLURM), and one line per epoch.

The bar advances every step without reading anything from the devices; the
running loss and accuracy (and img/s, ETA) are shown at the trainer's log
points, where it reads its metrics anyway: every config.log_every_steps
steps, and after a step that ends config.log_every_seconds or more after
the last log point (`seconds_due`, the host's clock only: no wait for the
devices). Images per second and the ETA leave out each epoch's first step,
which holds the compilation (and the input pipeline's start); after that
step alone they are not shown yet.
"""

import sys
import time

from absl import logging
import tqdm


def is_terminal(stream=None) -> bool:
  stream = stream or sys.stderr
  return hasattr(stream, 'isatty') and stream.isatty()


class EpochProgress:
  """The progress of one training epoch of `num_steps` steps of `batch_size`
  images, `done` of them before (a run resumed inside the epoch)."""

  # The bar without tqdm's own rate and remaining time, which would count
  # the first step's compilation: the postfix has them (`show`).
  BAR_FORMAT = ('{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} '
                '[{elapsed}{postfix}]')

  def __init__(self, epoch: int, num_epochs: int, num_steps: int,
               batch_size: int, interactive: bool | None = None,
               stream=None, done: int = 0, log_every_seconds: float = 0.0,
               clock=time.perf_counter):
    self.epoch, self.num_epochs = epoch, num_epochs
    self.num_steps, self.batch_size = num_steps, batch_size
    self.done = done
    self.log_every_seconds = log_every_seconds
    self._clock = clock
    self.start = self._shown_at = clock()
    # Where the rate is measured from: the end of the epoch's first step.
    self._first = done + 1
    self._last_time, self._last_done = None, None
    interactive = is_terminal(stream) if interactive is None else interactive
    self.bar = tqdm.tqdm(
        total=num_steps, desc=f'epoch {epoch + 1}/{num_epochs}',
        unit='step', file=stream or sys.stderr, leave=False,
        dynamic_ncols=True, initial=done,
        bar_format=self.BAR_FORMAT) if interactive else None

  def step(self):
    self.done += 1
    if self.done == self._first:
      self._last_time, self._last_done = self._clock(), self.done
    if self.bar is not None:
      self.bar.update(1)

  def seconds_due(self) -> bool:
    """Whether log_every_seconds (> 0) have passed since the last log point
    (or the epoch's start)."""
    return bool(self.log_every_seconds) and (
        self._clock() - self._shown_at >= self.log_every_seconds)

  def show(self, loss: float, accuracy: float) -> dict:
    """At a log point: the running loss and accuracy of the epoch so far.
    Returns the images per second since the previous log point (from the
    end of the epoch's first step; None after that step alone)."""
    now = self._shown_at = self._clock()
    rate = left = None
    if self._last_done is not None and self.done > self._last_done:
      rate = ((self.done - self._last_done) * self.batch_size /
              max(now - self._last_time, 1e-9))
      left = (self.num_steps - self.done) * self.batch_size / max(rate, 1e-9)
      self._last_time, self._last_done = now, self.done
    speed = ('' if rate is None else
             f', {rate:,.0f} img/s, epoch ETA {format_seconds(left)}')
    if self.bar is not None:
      self.bar.set_postfix_str(
          f'loss {loss:.4f}, accuracy {accuracy:.1%}{speed}', refresh=True)
    else:
      logging.info('epoch %d/%d: step %d/%d, loss %.4f, accuracy %.1f%%%s',
                   self.epoch + 1, self.num_epochs, self.done, self.num_steps,
                   loss, 100 * accuracy, speed)
    return {'images_per_second': rate}

  def close(self):
    if self.bar is not None:
      self.bar.close()


def format_seconds(seconds: float) -> str:
  """'42s', '3m 05s', '1h 02m'."""
  seconds = int(round(seconds))
  if seconds < 60:
    return f'{seconds}s'
  if seconds < 3600:
    return f'{seconds // 60}m {seconds % 60:02d}s'
  return f'{seconds // 3600}h {seconds % 3600 // 60:02d}m'


def epoch_line(record: dict, num_epochs: int) -> str:
  """The one log line of a finished epoch."""
  parts = [f"epoch {record['epoch']}/{num_epochs}:",
           f"train loss {record['train_loss']:.4f}, "
           f"accuracy {record['train_accuracy']:.1%};",
           f"validation loss {record['validation_loss']:.4f}, "
           f"accuracy {record['validation_accuracy']:.1%}"]
  if 'validation_tta_accuracy' in record:
    parts[-1] += f" (with TTA {record['validation_tta_accuracy']:.1%})"
  parts[-1] += ';'
  parts.append(f"lr {record['learning_rate']:.3g}; "
               f"{format_seconds(record['epoch_seconds'])}")
  return ' '.join(parts)
