"""The training batches of an epoch, fixed by the seed and the epoch, from
any batch on (a run resumed inside an epoch gets the uninterrupted run's).

    examples -> shuffle (or oversample) -> [random-resized crop]
      -> batch -> augment -> normalise -> one-hot labels [-> loss weights]

Three paths, by who reads what:
  one process    the whole global batch, from the (cached) resized
                 examples, or with crops from the encoded records.
  folder rows    several processes on an image folder: each takes its rows
                 of every global batch: the (file, label) pairs are shuffled
                 as the images of one process are (the order does not depend
                 on what is shuffled), and a process decodes only its rows'
                 files, augmented as those rows of the whole batch are. So
                 the global batches, and the training, are those of one
                 process with the same seed.
  TFDS shares    several processes on a TFDS dataset: each reads its own
                 records (tfds.split_for_jax_process) and shuffles them, with
                 seeds of its own: the global batches depend on the number
                 of processes.

Class-imbalance remedies (imbalance.py) hook in here: oversampling replaces
the shuffle, class weights add a per-example `weight`, and minority-class
examples can get a stronger augmentation.
"""

from typing import Callable

import numpy as np
import tensorflow as tf

from imgclf_jax.data import batch_transform
from imgclf_jax.data import examples as examples_lib
from imgclf_jax.data import folder_source
from imgclf_jax.data import imbalance
from imgclf_jax.data import iterate
from imgclf_jax.data import preprocess
from imgclf_jax.data import spec as spec_lib
from imgclf_jax.errors import UserError


def epoch_seeds(seed: int, epoch: int) -> np.ndarray:
  """Two uint32 words that seed everything random in one training epoch
  (the shuffle and the batch augmentation; the crops: crop_seeds)."""
  return np.random.SeedSequence([seed, epoch]).generate_state(2)


# The stream of crop_seeds, besides epoch_seeds' (which stay as they were
# before crops existed, so that runs without them draw the same numbers).
_CROP_STREAM = 1


def crop_seeds(seed: int, epoch: int) -> np.ndarray:
  """Two uint32 words that seed the random-resized crops of one training
  epoch; the crop of the example at position i of the split is seeded by
  stateless_fold_in(crop_seeds, i), whatever order the shuffle puts it in."""
  return np.random.SeedSequence([seed, epoch, _CROP_STREAM]).generate_state(2)


def random_resized_crop(seeds, size: int, channels: int, read):
  """fn((index, (record, label))) -> (random-resized crop uint8 [size, size,
  channels], label), the crop seeded by stateless_fold_in(seeds, index): the
  example's position in the split (crop_seeds), whatever order the shuffle
  puts it in. `read`: Source.read (a record's encoded bytes)."""
  seed = tf.constant(np.asarray(seeds).astype(np.int64))

  def crop(index, example):
    record, label = example
    example_seed = tf.random.experimental.stateless_fold_in(seed, index)
    return preprocess.random_resized_crop(read(record), example_seed, size,
                                          channels), label

  return crop


class TrainStream:
  """The training epochs of `examples` as `spec` says, normalised with
  `normalization`; `loss_weights()`: float32 [K] or None; `process`:
  (index, count) of this process among those of the run."""

  def __init__(self, examples: examples_lib.Examples, spec: spec_lib.DataSpec,
               normalization: dict, loss_weights: Callable,
               process: tuple[int, int]):
    self.examples, self.spec, self.source = examples, spec, examples.source
    self.normalization, self._loss_weights = normalization, loss_weights
    self.process_index, self.process_count = process
    self._transforms = {}

  @property
  def steps_per_epoch(self) -> int:
    batch_size, n = self.spec.batch_size, self.source.num_examples('train')
    if n // batch_size == 0:
      raise UserError(
          f'--config.batch_size={batch_size} is larger than the {n} training '
          'examples: lower it.')
    return n // batch_size

  def transform(self, rows=None):
    """batch_transform.train_transform of this stream; `rows` as there. One
    per `rows`, built on first use (it reads the training labels)."""
    if rows not in self._transforms:
      imbalance_spec = self.spec.imbalance
      self._transforms[rows] = batch_transform.train_transform(
          self.spec.augment, self.normalization,
          self.source.info.num_classes, self._loss_weights(),
          imbalance.minority_augment_fn(
              imbalance_spec.minority_augment, imbalance.minority_classes(
                  self.examples.class_counts('train'),
                  imbalance_spec.minority_fraction)), rows)
    return self._transforms[rows]

  def dataset(self, epoch: int, start: int = 0) -> tf.data.Dataset:
    """The batches of training epoch `epoch` (0-based) from its batch
    `start` on (those before are not transformed). With several processes,
    this process's share of each (see the module)."""
    if self.process_count > 1 and self.source.files('train') is None:
      return self._tfds_share(epoch, start)
    spec = self.spec
    shuffle_seed, augment_seed = (int(s) for s in
                                  epoch_seeds(spec.seed, epoch))
    crop = random_resized_crop(crop_seeds(spec.seed, epoch), spec.image_size,
                               self.examples.image_shape[-1],
                               self.source.read)
    by_file = self.process_count > 1
    ds = self._global_batches(shuffle_seed, crop, by_file).enumerate().skip(
        start)
    seed = tf.constant([augment_seed, shuffle_seed], tf.int64)
    if by_file:
      return self._own_rows(ds, crop, seed)
    transform = self.transform()
    return iterate.finish(ds.map(
        lambda index, batch: transform(index, *batch, seed),
        num_parallel_calls=tf.data.AUTOTUNE))

  def _global_batches(self, shuffle_seed: int, crop, by_file: bool):
    """The epoch's global batches, shuffled (or oversampled): of resized
    (or, with crops, cropped) examples, or `by_file` of (path, label)
    records, or with crops of (position, record) pairs, to decode later."""
    spec, examples = self.spec, self.examples
    crops = spec.crop != 'none'
    n = self.source.num_examples('train')
    if spec.imbalance.oversample:  # never with crops (resolve.py)
      ds = imbalance.oversample(examples.class_examples('train', by_file),
                                examples.class_counts('train'), n,
                                shuffle_seed, spec.shuffle_buffer_size)
    else:
      # With crops, each (path, label) or (encoded image, label) record goes
      # with its position in the split, which seeds its crop.
      elements = (self.source.records('train').enumerate() if crops else
                  self.source.records('train') if by_file else
                  examples.resized('train'))
      ds = elements.shuffle(
          min(spec.shuffle_buffer_size, n), seed=shuffle_seed,
          reshuffle_each_iteration=False)
    if crops and not by_file:
      ds = ds.map(crop, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(spec.batch_size, drop_remainder=True)

  def _own_rows(self, ds: tf.data.Dataset, crop, seed) -> tf.data.Dataset:
    """This process's rows of each (index, global batch of records),
    decoded (cropped) here only, then transformed as those rows."""
    batch_size = self.spec.batch_size
    per_process = batch_size // self.process_count
    offset = self.process_index * per_process
    rows = lambda x: x[offset:offset + per_process]

    def own_rows(index, batch):
      own = tf.nest.map_structure(rows, batch)
      return tf.data.Dataset.from_tensor_slices(
          (tf.fill([per_process], index), own))

    def decode(index, example):
      if self.spec.crop != 'none':
        return index, *crop(*example)
      return index, *self.examples.resize(*folder_source.decode_file(
          *example))

    ds = ds.flat_map(own_rows).map(
        decode, num_parallel_calls=tf.data.AUTOTUNE).batch(per_process)
    transform = self.transform((offset, batch_size))
    return iterate.finish(ds.map(
        lambda index, images, labels: transform(index[0], images, labels,
                                                seed),
        num_parallel_calls=tf.data.AUTOTUNE))

  def _tfds_share(self, epoch: int, start: int) -> tf.data.Dataset:
    """This process's batches of a TFDS training split, read from its own
    records and shuffled (and cropped) with seeds of its own (repeated if
    its share is short of the epoch's steps)."""
    spec = self.spec
    if spec.imbalance.oversample:
      raise UserError(
          '--config.oversample with several processes needs an image folder '
          '(--config.dataset=folder:...): with a TFDS dataset each process '
          'reads only its own records.')
    own_seeds = [spec.seed, epoch, self.process_index]
    shuffle_seed, augment_seed = (int(s) for s in np.random.SeedSequence(
        own_seeds).generate_state(2))
    crops = spec.crop != 'none'
    examples, size = self.source.process_share(
        'train', self.process_index, self.process_count, encoded=crops)
    if crops:
      ds = examples
    else:
      ds = self.examples.resize_all(examples)
      if self.examples.policy.caches('train'):
        ds = ds.cache()
    ds = ds.shuffle(min(spec.shuffle_buffer_size, size), seed=shuffle_seed,
                    reshuffle_each_iteration=False).repeat()
    if crops:  # seeded by the position in this process's stream
      crop = random_resized_crop(
          np.random.SeedSequence(own_seeds + [_CROP_STREAM]).generate_state(
              2), spec.image_size, self.examples.image_shape[-1],
          self.source.read)
      ds = ds.enumerate().map(crop, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(spec.batch_size // self.process_count,
                  drop_remainder=True).take(self.steps_per_epoch)
    ds = ds.enumerate().skip(start)
    seed = tf.constant([augment_seed, shuffle_seed], tf.int64)
    transform = self.transform()
    return iterate.finish(ds.map(
        lambda index, batch: transform(index, *batch, seed),
        num_parallel_calls=tf.data.AUTOTUNE))
