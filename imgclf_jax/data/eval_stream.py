"""Evaluation batches: every example of a split once, in its order, in
batches of eval_batch_size (the last one partial), or with several
processes each process's contiguous share, padded to as many batches as the
largest share needs. Splitting them over devices (and padding the last) is
device_axis.py's job, at the step."""

import tensorflow as tf

from imgclf_jax.data import examples as examples_lib
from imgclf_jax.data import iterate
from imgclf_jax.errors import UserError


def dataset(examples: examples_lib.Examples, transform, batch_size: int,
            split: str, indices=None) -> tf.data.Dataset:
  """Every example of `split` once (or those at `indices`, as
  Examples.subset takes them), `transform`ed (batch_transform.
  eval_transform) in batches of `batch_size`."""
  ds = (examples.resized(split) if indices is None else
        examples.subset(split, indices))
  return iterate.finish(ds.batch(batch_size).map(
      transform, num_parallel_calls=tf.data.AUTOTUNE))


def process_share(examples: examples_lib.Examples, transform,
                  batch_size: int, split: str, process: tuple[int, int]):
  """(batches, padding) of process `index` of `count` (`process`): its
  contiguous share of `split` (Source.process_share) in batches of
  batch_size / count, as numpy, and padding (num_batches, batch size):
  every process runs as many steps, the short ones padded with masked
  examples (eval_loop.evaluate_split)."""
  index, count = process
  source = examples.source
  n = source.num_examples(split)
  if n < count:
    raise UserError(
        f'split {split!r} has {n} example(s), fewer than the {count} '
        'processes: each must evaluate at least one.')
  crops = examples.crop != 'none'
  share, _ = source.process_share(split, index, count, encoded=crops)
  share = (examples.central_crops(share) if crops else
           examples.resize_all(share))
  per_process = max(1, batch_size // count)
  ds = share.batch(per_process).map(transform,
                                    num_parallel_calls=tf.data.AUTOTUNE)
  # As many batches as the largest share needs (ceil(n / processes)).
  largest = -(-n // count)
  num_batches = -(-largest // per_process)
  return (iterate.as_numpy(iterate.finish(ds), source, split),
          (num_batches, per_process))
