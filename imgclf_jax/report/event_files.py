"""TensorBoard event files of a workdir, cut back when training resumes.

A run killed (or preempted) after its last checkpoint has written events of
steps past it; the resumed run writes those steps again. `cut_after` removes
the events past the checkpoint's step from the earlier files first, so that
TensorBoard shows each step once, as metrics.jsonl does (EpochLog.resume).
"""

import glob
import os

from absl import logging
import tensorflow as tf
from tensorboard.compat.proto import event_pb2

PATTERN = 'events.out.tfevents.*'


def files(workdir: str) -> list[str]:
  return sorted(glob.glob(os.path.join(workdir, PATTERN)))


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
