"""What a person watching training sees: one bar per epoch on a terminal,
plain log lines elsewhere (CI, nohup, SLURM), and one line per epoch.

The bar advances every step without reading anything from the devices; the
running loss and accuracy (and img/s, ETA) are shown at the trainer's log
points, where it reads its metrics anyway (config.log_every_steps).
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

  def __init__(self, epoch: int, num_epochs: int, num_steps: int,
               batch_size: int, interactive: bool | None = None,
               stream=None, done: int = 0):
    self.epoch, self.num_epochs = epoch, num_epochs
    self.num_steps, self.batch_size = num_steps, batch_size
    self.done = done
    self.start = self._last_time = time.perf_counter()
    self._last_done = done
    interactive = is_terminal(stream) if interactive is None else interactive
    self.bar = tqdm.tqdm(
        total=num_steps, desc=f'epoch {epoch + 1}/{num_epochs}',
        unit='step', file=stream or sys.stderr, leave=False,
        dynamic_ncols=True, initial=done) if interactive else None

  def step(self):
    self.done += 1
    if self.bar is not None:
      self.bar.update(1)

  def show(self, loss: float, accuracy: float) -> dict:
    """At a log point: the running loss and accuracy of the epoch so far.
    Returns the images per second since the previous log point."""
    now = time.perf_counter()
    rate = ((self.done - self._last_done) * self.batch_size /
            max(now - self._last_time, 1e-9))
    self._last_time, self._last_done = now, self.done
    if self.bar is not None:
      self.bar.set_postfix_str(
          f'loss {loss:.4f}, accuracy {accuracy:.1%}, {rate:,.0f} img/s',
          refresh=True)
    else:
      left = (self.num_steps - self.done) * self.batch_size / max(rate, 1e-9)
      logging.info('epoch %d/%d: step %d/%d, loss %.4f, accuracy %.1f%%, '
                   '%.0f img/s, epoch ETA %s', self.epoch + 1,
                   self.num_epochs, self.done, self.num_steps, loss,
                   100 * accuracy, rate, format_seconds(left))
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
