"""Metric collections (accumulated on device) and the per-epoch JSON-lines log."""

import json
import math
import os

from absl import logging
from clu import metrics as clu_metrics
import flax
import jax
import jax.numpy as jnp

from imgclf_jax import whole_file


@flax.struct.dataclass
class Metrics(clu_metrics.Collection):
  """Mean loss and accuracy over the examples seen (padding excluded)."""
  loss: clu_metrics.Average.from_output('loss')
  accuracy: clu_metrics.Accuracy

  @classmethod
  def from_sums(cls, loss_sum, correct, count):
    """Builds the collection from already-reduced sums (e.g. after psum)."""
    return cls.empty().replace(
        loss=clu_metrics.Average(total=loss_sum, count=count),
        accuracy=clu_metrics.Accuracy(total=correct, count=count))


def merge(total, new):
  """total + new; `total` may be None (nothing accumulated yet)."""
  return new if total is None else total.merge(new)


def to_sums(collection: Metrics) -> dict:
  """A collection's running sums as JSON numbers (float32 values, exact as
  floats), for a checkpoint inside an epoch; from_sum_record's inverse."""
  return {name: [float(getattr(collection, name).total),
                 float(getattr(collection, name).count)]
          for name in ('loss', 'accuracy')}


def from_sum_record(sums: dict) -> Metrics:
  """The collection whose running sums `to_sums` wrote."""
  f32 = lambda v: jnp.asarray(v, jnp.float32)
  return Metrics.empty().replace(
      loss=clu_metrics.Average(total=f32(sums['loss'][0]),
                               count=f32(sums['loss'][1])),
      accuracy=clu_metrics.Accuracy(total=f32(sums['accuracy'][0]),
                                    count=f32(sums['accuracy'][1])))


class Accumulator:
  """Sums the metrics of a stream of pmapped steps without stalling it.

  Any operation on a pmapped step's (un-replicated) output makes the host
  wait for that step. So `add` keeps the newest step's metrics aside and
  merges the previous step's: the host waits for step k-1 while step k is
  already queued, and the device never runs dry while the host fetches the
  next batch. This also keeps about two steps in flight, no more.

  `initial`: the sums of the steps before (a run resumed inside an epoch).
  """

  def __init__(self, initial: Metrics | None = None):
    self._total = initial
    self._newest = None

  def add(self, metrics: Metrics):
    if self._newest is not None:
      self._total = merge(self._total, jax.block_until_ready(self._newest))
    self._newest = metrics

  def result(self) -> Metrics | None:
    """Everything added so far (waits for the newest step)."""
    self.add(None)
    return self._total


def to_floats(collection: Metrics, prefix: str) -> dict:
  return {f'{prefix}{k}': float(v) for k, v in collection.compute().items()}


# Beside metrics.jsonl: the lines `EpochLog.resume` cut that were no record.
DAMAGED_SUFFIX = '.damaged'


class EpochLog:
  """`<workdir>/metrics.jsonl`: one JSON object per line, one line per epoch.

  The trainer appends each epoch's line before saving its checkpoint, and on
  resume `resume` cuts the file back to the records of the checkpoint's
  epochs: a line is never missing for a checkpointed epoch, and one logged by
  a run killed before its checkpoint landed is cut and written again by the
  resumed run. `read` skips (with a warning) a line that is no JSON record,
  e.g. one torn by a kill while it was written, and keeps the last line of
  each epoch. `resume` cuts such lines; those not torn by a kill (garbage: a
  disk error, an edit) are first appended to `metrics.jsonl.damaged`, which
  its warning names. With `write=False` (the processes other than the first of a
  run on several) it only reads.
  """

  def __init__(self, workdir: str, write: bool = True):
    self.path = os.path.join(workdir, 'metrics.jsonl')
    self.damaged_path = self.path + DAMAGED_SUFFIX
    self.write = write

  def append(self, record: dict):
    if not self.write:
      return
    with open(self.path, 'a') as f:
      f.write(json.dumps(record) + '\n')

  def read(self) -> list[dict]:
    """The latest record of each epoch, in epoch order."""
    by_epoch = {}
    for number, _, record, _ in _lines(self._text()):
      if record is None:
        logging.warning('%s line %d is not a JSON record of an epoch: skipped.',
                        self.path, number)
      else:
        by_epoch[record['epoch']] = record
    return [by_epoch[e] for e in sorted(by_epoch)]

  def resume(self, epoch: int, saved: dict | None = None):
    """Keeps the records of epochs 1..`epoch` (the checkpoint training resumes
    from), the last line of each, in epoch order; rewrites the file (a new
    file moved in its place) if that changes it, warning if it cuts anything.
    `saved`: the record the checkpoint holds (of its epoch, `epoch`), written
    back where its line is missing (e.g. torn).
    """
    old = self._text()
    lines = _lines(old)
    kept, cut, past, repeated = {}, [], set(), set()
    damaged = []  # the lines that are no record (not torn by a kill)
    for number, text, record, torn in lines:
      if record is None:
        why = 'cut short, the last line' if torn else 'no JSON record'
        cut.append(f'line {number} ({why}: {text[:60]!r})')
        if not torn:
          damaged.append(text)
      elif record['epoch'] > epoch:
        past.add(record['epoch'])
      else:
        if record['epoch'] in kept:
          repeated.add(record['epoch'])
        kept[record['epoch']] = text
    if past:
      cut.append(f'the records of epochs {sorted(past)}, past the epoch of '
                 f'the checkpoint ({epoch})')
    if repeated:
      cut.append(f'earlier lines of epochs {sorted(repeated)}')
    if cut:
      kept_in = (f' (the lines that are no record are kept in '
                 f'{self.damaged_path})' if damaged and self.write else '')
      logging.warning('%s: cut %s%s; training goes on from epoch %d.',
                      self.path, '; '.join(cut), kept_in, epoch + 1)
    if saved and saved.get('epoch') == epoch and epoch not in kept:
      kept[epoch] = json.dumps(saved)
      logging.warning('%s: the record of epoch %d written again from its '
                      'checkpoint.', self.path, epoch)
    missing = sorted(set(range(1, epoch + 1)) - set(kept))
    if missing:
      logging.warning('%s has no record of epochs %s (before the checkpoint '
                      'of epoch %d): their lines are lost.', self.path,
                      missing, epoch)
    content = ''.join(kept[e] + '\n' for e in sorted(kept))
    if lines and content != old and self.write:
      if damaged:
        _keep_damaged(self.damaged_path, damaged)
      whole_file.write_text(self.path, content)

  def _text(self) -> str:
    try:
      # Garbage may be binary: its bytes kept as they are (for .damaged).
      with open(self.path, errors='surrogateescape') as f:
        return f.read()
    except FileNotFoundError:
      return ''


def _lines(text: str) -> list:
  """(line number, stripped text, record or None, torn) of each non-blank
  line; torn: the last line, without its newline (a kill while writing)."""
  lines = text.split('\n')
  return [(number, line.strip(), _parse(line), number == len(lines))
          for number, line in enumerate(lines, 1) if line.strip()]


def _parse(text: str):
  """A line's record (a JSON object with a whole epoch >= 1), or None."""
  try:
    record = json.loads(text)
  except ValueError:
    return None
  if not isinstance(record, dict):
    return None
  epoch = record.get('epoch')
  if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
    return None
  return record


def _keep_damaged(path: str, lines: list):
  """Appends `lines` to `path`, byte for byte as they were read (the file
  made whole before the log is rewritten without them: a kill in between
  loses nothing)."""
  try:
    with open(path, 'rb') as f:
      before = f.read()
  except FileNotFoundError:
    before = b''
  with whole_file.replacing(path, 'wb') as f:
    f.write(before + ''.join(line + '\n' for line in lines).encode(
        'utf-8', 'surrogateescape'))


def is_finite(values: dict) -> bool:
  return all(math.isfinite(v) for v in values.values())
