"""How every tf.data dataset of the pipeline is finished and read: prefetch
with the autotuner off (`finish`), and numpy iteration that turns a
decoding failure into one UserError naming the file (`as_numpy`)."""

from typing import Iterator

import tensorflow as tf

from imgclf_jax.errors import UserError

# Batches made ahead of the one the trainer takes.
PREFETCH_BATCHES = 2


def finish(ds: tf.data.Dataset) -> tf.data.Dataset:
  """Prefetching and threading of every dataset the trainer reads.

  tf.data shares the CPU cores with the train step. Its autotuner (on by
  default) was measured here to cost CPU and to stall some epochs by several
  seconds before their last batch (BENCHMARKS.md), so it is off: a map with
  num_parallel_calls=AUTOTUNE then runs tf.data's initial parallelism (one
  call per schedulable core, at most 16) throughout, and PREFETCH_BATCHES
  batches are made ahead.
  """
  options = tf.data.Options()
  options.autotune.enabled = False
  return ds.prefetch(PREFETCH_BATCHES).with_options(options)


def as_numpy(ds: tf.data.Dataset, source, split: str) -> Iterator:
  """Iterates `ds` (read from `split` of `source`) as numpy; a decoding
  failure becomes a UserError naming it (source.describe_error)."""
  iterator = ds.as_numpy_iterator()
  while True:
    try:
      item = next(iterator)
    except StopIteration:
      return
    except tf.errors.OpError as e:
      raise UserError(source.describe_error(split, e)) from None
    yield item
