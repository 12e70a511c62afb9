"""TensorBoard event files of a workdir: training writes them, and cuts
them back when it resumes.

Training writes two TensorBoard runs, <workdir>/train/ and
<workdir>/validation/, with the same tags (`loss`, `accuracy`, ...), so that
TensorBoard draws a metric's training and validation curves on one chart
(the Flax examples' layout); --mode=eval writes its own run,
<workdir>/eval_<split>/ (eval_report.py), whose point joins them.

A run killed (or preempted) after its last checkpoint has written events of
steps past it; the resumed run writes those steps again. `cut_after` removes
the events past the checkpoint's step from the earlier files first, so that
TensorBoard shows each step once, as metrics.jsonl does (EpochLog.resume).
"""

import glob
import os

from absl import logging
from clu import metric_writers
import tensorflow as tf
from tensorboard.compat.proto import event_pb2

PATTERN = 'events.out.tfevents.*'
# Training's runs (folders of the workdir). Runs written before there were
# any put their events in the workdir itself: those are cut back too.
RUNS = ('train', 'validation')
# The metrics a record holds per run, as `train_<name>`, `validation_<name>`:
# written under <name> in their run.
_PER_RUN = ('loss', 'accuracy', 'tta_loss', 'tta_accuracy')


def files(workdir: str) -> list[str]:
  """Training's event files in `workdir` (its runs' and older ones)."""
  return sorted(path for folder in ('', *RUNS)
                for path in glob.glob(os.path.join(workdir, folder, PATTERN)))


class TrainingWriter:
  """Training's TensorBoard events in the runs of RUNS; on processes other
  than the first (`write` False) nothing."""

  def __init__(self, workdir: str, write: bool = True):
    self._runs = {run: metric_writers.AsyncWriter(metric_writers.SummaryWriter(
        os.path.join(workdir, run))) for run in RUNS} if write else {}

  def write_hparams(self, hparams: dict):
    if self._runs:
      self._runs['train'].write_hparams(hparams)

  def write_running(self, step: int, loss: float, accuracy: float,
                    images_per_second: float | None):
    """At a log point: the epoch's running mean loss and accuracy so far,
    and the images per second since the last log point (None: not known
    yet, after an epoch's first step)."""
    if self._runs:
      scalars = {'loss_running': loss, 'accuracy_running': accuracy}
      if images_per_second is not None:
        scalars['images_per_second'] = images_per_second
      self._runs['train'].write_scalars(step, scalars)

  def write_epoch(self, step: int, record: dict):
    """An epoch's record (metrics.jsonl's line): `train_<m>` and
    `validation_<m>` as <m> in their runs (m in _PER_RUN), the rest
    (learning_rate, seconds) in train."""
    if not self._runs:
      return
    scalars = {run: {} for run in RUNS}
    for key, value in record.items():
      if key in ('epoch', 'step'):
        continue
      run, name = 'train', key
      for prefix in RUNS:
        if key.startswith(prefix + '_') and key[len(prefix) + 1:] in _PER_RUN:
          run, name = prefix, key[len(prefix) + 1:]
      scalars[run][name] = value
    for run, values in scalars.items():
      self._runs[run].write_scalars(step, values)

  def flush(self):
    for writer in self._runs.values():
      writer.flush()


def cut_after(workdir: str, step: int) -> int:
  """Removes the summaries of steps > `step` from the event files in
  `workdir` (each file rewritten beside itself and moved in place: a kill
  leaves the old file or the new one). Returns how many were removed."""
  removed = 0
  for path in files(workdir):
    kept, cut = [], 0
    try:
      for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
        event = event_pb2.Event.FromString(record)
        if event.HasField('summary') and event.step > step:
          cut += 1
        else:
          kept.append(record)
    except tf.errors.DataLossError:
      cut += 1  # the last record, torn by a kill: dropped
    if not cut:
      continue
    temporary = path + '.cut'
    with tf.io.TFRecordWriter(temporary) as writer:
      for record in kept:
        writer.write(record)
    os.replace(temporary, path)
    removed += cut
  if removed:
    logging.info('TensorBoard events: removed %d past step %d (written after '
                 'the checkpoint training resumes from).', removed, step)
  return removed
