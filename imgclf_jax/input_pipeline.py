"""The tf.data pipeline shared by every dataset source.

    examples (uint8, any size) -> resize -> [cache] -> shuffle (train)
      -> batch -> augment (train) -> normalise -> one-hot labels -> prefetch

The per-image steps (decode, resize, [0, 1] floats, normalise) are the
functions of `preprocess.py`, shared with prediction. Class-imbalance remedies
(`imbalance.py`) hook into the training stream: oversampling replaces the
shuffle, class weights add a per-example `weight`, and minority-class examples
can get a stronger augmentation.

Batches are global: dicts of numpy arrays image [B, S, S, C] float32,
label [B, K] float32 (one-hot), and for training with config.class_weights
weight [B] float32 (loss weight). Training batches are full (the last
partial batch of an epoch is dropped); evaluation batches hold every example
of the split once, the last one partial. Splitting them over devices (and
padding the last) is device_axis.py's job, at the step.
"""

import functools
from typing import Iterator

import jax
import numpy as np
import tensorflow as tf

from imgclf_jax import augment
from imgclf_jax import augment_math
from imgclf_jax import datasets
from imgclf_jax import imbalance
from imgclf_jax import preprocess
from imgclf_jax.errors import UserError


# Batches made ahead of the one the trainer takes.
PREFETCH_BATCHES = 2


def _finish(ds: tf.data.Dataset) -> tf.data.Dataset:
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


def epoch_seeds(seed: int, epoch: int) -> np.ndarray:
  """Two uint32 words that seed everything random in one training epoch."""
  return np.random.SeedSequence([seed, epoch]).generate_state(2)


class InputPipeline:
  """Batches of one dataset source, preprocessed as `config` says.

  `process`: (index, count) of this process among those of a run on
  several (jax.distributed; default: jax.process_index(), process_count()).
  With several, `train_batches` and `eval_share` give this process's share:
    image folders  each process takes its rows of every global batch: the
                   (file, label) pairs are shuffled as the images of one
                   process are (the order does not depend on what is
                   shuffled), and a process decodes only its rows' files,
                   augmented as those rows of the whole batch are. So the
                   global batches, and the training, are those of one
                   process with the same seed.
    TFDS           each process reads its own records
                   (tfds.split_for_jax_process) and shuffles them, with
                   seeds of its own: the global batches depend on the number
                   of processes.
  The normalisation statistics are computed from the whole training split by
  every process (the same numbers everywhere).
  """

  def __init__(self, source: datasets.Source, config, normalization=None,
               process=None):
    self.source = source
    self.config = config
    self.process_index, self.process_count = process or (
        jax.process_index(), jax.process_count())
    self.image_shape = (config.image_size, config.image_size,
                        source.info.channels)
    self.augment_spec = augment_math.AugmentSpec.from_config(config)
    self._examples_cache = {}
    self._labels = {}
    self._transforms = {}
    self.normalization = normalization or self._compute_normalization()

  @property
  def steps_per_epoch(self) -> int:
    steps = self.source.num_examples('train') // self.config.batch_size
    if steps == 0:
      raise UserError(
          f'--config.batch_size={self.config.batch_size} is larger than the '
          f'{self.source.num_examples("train")} training examples: lower it.')
    return steps

  def labels(self, split: str) -> np.ndarray:
    """The int labels of `split` in its order (read once; no image decoded)."""
    if split not in self._labels:
      self._labels[split] = self.source.labels(split)
    return self._labels[split]

  def class_counts(self, split: str) -> np.ndarray:
    """Examples per class of `split` (labels only; no image is decoded)."""
    return imbalance.class_counts(self.labels(split),
                                  self.source.info.num_classes)

  # --- examples --------------------------------------------------------------

  def resized_examples(self, split: str) -> tf.data.Dataset:
    """(image uint8 [S, S, C], label) pairs of `split` as the model sees them
    before normalisation, in the split's order; cached if configured."""
    if split not in self._examples_cache:
      ds = self._resized(self.source.examples(split))
      if self.config.cache:
        ds = ds.cache()
      self._examples_cache[split] = ds
    return self._examples_cache[split]

  def resized_subset(self, split: str, indices) -> tf.data.Dataset:
    """resized_examples(split) at `indices` only, in split order (sorted, no
    repeats). With config.cache they come from the split's cache (a pass
    over it, which fills it if it is not yet); without, only their images
    are decoded."""
    if not self.config.cache:
      return self._resized(self.source.examples(split, indices))
    return datasets.at_indices(self.resized_examples(split),
                               self.source.num_examples(split), indices)

  def class_examples(self, split: str, by_file: bool = False) -> list:
    """resized_subset of each class present in `split`, in class order
    (`by_file`: their (path, label) pairs instead, of an image folder)."""
    labels = self.labels(split)
    subset = ((lambda s, i: self._files(s, i)) if by_file else
              self.resized_subset)
    return [subset(split, np.flatnonzero(labels == c))
            for c in range(self.source.info.num_classes)
            if np.any(labels == c)]

  def _resize(self, image, label):
    return preprocess.resize_image(image, self.config.image_size,
                                   self.image_shape[-1]), label

  def _resized(self, examples: tf.data.Dataset) -> tf.data.Dataset:
    return examples.map(self._resize, num_parallel_calls=tf.data.AUTOTUNE)

  def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
    """All of `split` as numpy: uint8 images [N, S, S, C], int32 labels [N]."""
    images, labels = [], []
    for image, label in self._numpy(
        _finish(self.resized_examples(split).batch(1024)), split):
      images.append(image)
      labels.append(label)
    return (np.concatenate(images).astype(np.uint8),
            np.concatenate(labels).astype(np.int32))

  def _compute_normalization(self) -> dict:
    """Per-channel mean/std of the training split, in [0, 1] pixel units."""
    channels = self.image_shape[-1]
    if self.config.normalization == 'unit':
      return {'mean': [0.0] * channels, 'std': [1.0] * channels}
    ds = _finish(self.resized_examples('train').batch(1024).map(
        lambda image, label: tf.cast(image, tf.float64) / 255.0))
    total = np.zeros(channels)
    total_sq = np.zeros(channels)
    count = 0
    for images in self._numpy(ds, 'train'):
      total += images.sum(axis=(0, 1, 2))
      total_sq += (images ** 2).sum(axis=(0, 1, 2))
      count += images.shape[0] * images.shape[1] * images.shape[2]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean ** 2, 1e-12))
    return {'mean': mean.tolist(), 'std': std.tolist()}

  # --- batches ---------------------------------------------------------------
  #
  # Everything done to a batch after it is drawn (uint8 -> float, augmentation,
  # normalisation, one-hot labels, loss weights) is one tf.function compiled by XLA (jit_compile=True): about half the CPU
  # time of TF's kernels op by op, which matters because tf.data shares the
  # CPU with the train step (BENCHMARKS.md). Each is built once per pipeline,
  # so every epoch's tf.data graph reuses its compilation.

  def _model_input(self, images, labels) -> dict:
    """[0, 1] float images and int labels -> normalised images and one-hot
    labels."""
    return {'image': preprocess.normalize(images, self.normalization),
            'label': tf.one_hot(labels, self.source.info.num_classes)}

  def _train_transform(self, rows=None):
    """(batch index, uint8 images, labels, epoch seed) -> a training batch;
    `rows`: None, or (offset, total): the images are those rows of a global
    batch of `total` (augment.augment_batch). One per `rows` and pipeline."""
    if rows not in self._transforms:
      self._transforms[rows] = self._make_train_transform(rows)
    return self._transforms[rows]

  def _make_train_transform(self, rows):
    config = self.config
    spec = self.augment_spec
    weights = self.loss_weights()
    weights = None if weights is None else tf.constant(weights, tf.float32)
    minority_augment = imbalance.minority_augment_fn(
        imbalance.minority_spec(config),
        imbalance.minority_classes(self.class_counts('train'),
                                   config.minority_fraction))

    def transform(index, images, labels, seed):
      images = preprocess.to_unit_float(images)
      batch_seed = tf.random.experimental.stateless_fold_in(seed, index)
      augmented = augment.augment_batch(images, batch_seed, spec, rows)
      if minority_augment is not None:
        augmented = minority_augment(images, augmented, labels, batch_seed,
                                     rows)
      out = self._model_input(augmented, labels)
      if weights is not None:
        out['weight'] = tf.gather(weights, labels)
      return out

    return tf.function(transform, jit_compile=True)

  @functools.cached_property
  def _eval_transform(self):
    """(uint8 images, labels) -> an evaluation batch."""

    def transform(images, labels):
      return self._model_input(preprocess.to_unit_float(images), labels)

    return tf.function(transform, jit_compile=True)

  def train_dataset(self, epoch: int, start: int = 0) -> tf.data.Dataset:
    """The batches of training epoch `epoch` (0-based), fixed by the seed,
    from its batch `start` on (a run resumed inside the epoch: the same
    batches as the uninterrupted run's; those before are not transformed).
    With several processes, this process's share of each (see the class)."""
    config = self.config
    shuffle_seed, augment_seed = (int(s) for s in
                                  epoch_seeds(config.seed, epoch))
    if self.process_count > 1 and self.source.files('train') is None:
      return self._tfds_share(epoch, start)
    by_file = self.process_count > 1
    n = self.source.num_examples('train')
    if config.oversample:
      ds = imbalance.oversample(self.class_examples('train', by_file),
                                self.class_counts('train'), n, shuffle_seed,
                                config.shuffle_buffer_size)
    else:
      elements = (self._files('train') if by_file else
                  self.resized_examples('train'))
      ds = elements.shuffle(
          min(config.shuffle_buffer_size, n), seed=shuffle_seed,
          reshuffle_each_iteration=False)
    ds = ds.batch(config.batch_size, drop_remainder=True).enumerate().skip(
        start)
    seed = tf.constant([augment_seed, shuffle_seed], tf.int64)
    if not by_file:
      transform = self._train_transform()
      ds = ds.map(lambda index, batch: transform(index, *batch, seed),
                  num_parallel_calls=tf.data.AUTOTUNE)
      return _finish(ds)
    per_process = config.batch_size // self.process_count
    offset = self.process_index * per_process

    def rows(index, batch):  # this process's rows of the global batch
      paths, labels = (x[offset:offset + per_process] for x in batch)
      return tf.data.Dataset.from_tensor_slices(
          (tf.fill([per_process], index), paths, labels))

    ds = ds.flat_map(rows).map(
        lambda index, path, label: (index, *self._resize(
            *datasets.decode_file(path, label))),
        num_parallel_calls=tf.data.AUTOTUNE).batch(per_process)
    transform = self._train_transform((offset, config.batch_size))
    ds = ds.map(lambda index, images, labels: transform(index[0], images,
                                                        labels, seed),
                num_parallel_calls=tf.data.AUTOTUNE)
    return _finish(ds)

  def _tfds_share(self, epoch: int, start: int) -> tf.data.Dataset:
    """This process's batches of a TFDS training split, read from its own
    records and shuffled with seeds of its own (repeated if its share is
    short of the epoch's steps)."""
    config = self.config
    if config.oversample:
      raise UserError(
          '--config.oversample with several processes needs an image folder '
          '(--config.dataset=folder:...): with a TFDS dataset each process '
          'reads only its own records.')
    shuffle_seed, augment_seed = (int(s) for s in np.random.SeedSequence(
        [config.seed, epoch, self.process_index]).generate_state(2))
    examples, size = self.source.process_share(
        'train', self.process_index, self.process_count)
    ds = self._resized(examples)
    if config.cache:
      ds = ds.cache()
    ds = ds.shuffle(min(config.shuffle_buffer_size, size), seed=shuffle_seed,
                    reshuffle_each_iteration=False).repeat()
    ds = ds.batch(config.batch_size // self.process_count,
                  drop_remainder=True).take(self.steps_per_epoch)
    ds = ds.enumerate().skip(start)
    seed = tf.constant([augment_seed, shuffle_seed], tf.int64)
    transform = self._train_transform()
    return _finish(ds.map(lambda index, batch: transform(index, *batch, seed),
                          num_parallel_calls=tf.data.AUTOTUNE))

  def _files(self, split: str, indices=None) -> tf.data.Dataset:
    """(path, label) pairs of an image folder's `split` (at `indices`)."""
    paths, labels = self.source.files(split), self.labels(split)
    if indices is not None:
      paths, labels = paths[indices], labels[indices]
    return tf.data.Dataset.from_tensor_slices((paths, labels))

  def eval_share(self, split: str):
    """(batches, padding) of this process's share of `split` for
    eval_loop.evaluate_split: with one process all of eval_batches(split)
    and padding None; with several, every process's contiguous share
    (datasets.Source.process_share) in batches of eval_batch_size /
    processes, and padding (num_batches, batch size): every process runs as
    many steps, the short ones padded with masked examples."""
    if self.process_count == 1:
      return self.eval_batches(split), None
    n = self.source.num_examples(split)
    if n < self.process_count:
      raise UserError(
          f'split {split!r} has {n} example(s), fewer than the '
          f'{self.process_count} processes: each must evaluate at least one.')
    examples, _ = self.source.process_share(split, self.process_index,
                                            self.process_count)
    batch_size = max(1, self.config.eval_batch_size // self.process_count)
    ds = self._resized(examples).batch(batch_size).map(
        self._eval_transform, num_parallel_calls=tf.data.AUTOTUNE)
    # As many batches as the largest share needs (ceil(n / processes)).
    largest = -(-n // self.process_count)
    num_batches = -(-largest // batch_size)
    return self._numpy(_finish(ds), split), (num_batches, batch_size)

  def eval_dataset(self, split: str) -> tf.data.Dataset:
    """Every example of `split` once, in batches of config.eval_batch_size
    (the last one partial)."""
    ds = self.resized_examples(split).batch(self.config.eval_batch_size).map(
        self._eval_transform, num_parallel_calls=tf.data.AUTOTUNE)
    return _finish(ds)

  def loss_weights(self):
    """Per-class loss weights of config.class_weights, or None (unweighted)."""
    names = self.source.info.class_names
    if imbalance.parse_class_weights(self.config.class_weights, names) is None:
      return None
    return imbalance.loss_weights(self.config.class_weights,
                                  self.class_counts('train'),
                                  self.source.info.class_names)

  def train_batches(self, epoch: int, start: int = 0) -> Iterator[dict]:
    return self._numpy(self.train_dataset(epoch, start), 'train')

  def eval_batches(self, split: str) -> Iterator[dict]:
    return self._numpy(self.eval_dataset(split), split)

  def _numpy(self, ds: tf.data.Dataset, split: str) -> Iterator:
    """Iterates as numpy; a decoding failure becomes a UserError naming it."""
    iterator = ds.as_numpy_iterator()
    while True:
      try:
        item = next(iterator)
      except StopIteration:
        return
      except tf.errors.OpError as e:
        raise UserError(self.source.describe_error(split, e)) from None
      yield item
