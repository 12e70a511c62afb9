"""The tf.data pipeline shared by every dataset source.

    examples (uint8, any size) -> resize -> [cache] -> shuffle (train)
      -> batch -> augment (train) -> normalise -> one-hot labels
      -> split over devices -> prefetch

The per-image steps (decode, resize, [0, 1] floats, normalise) are the
functions of `preprocess.py`, shared with prediction. Class-imbalance remedies
(`imbalance.py`) hook into the training stream: oversampling replaces the
shuffle, class weights add a per-example `weight`, and minority-class examples
can get a stronger augmentation.

Batches are dicts of numpy arrays with a leading device axis:
  image [D, B/D, S, S, C] float32, label [D, B/D, K] float32 (one-hot),
  for evaluation mask [D, B/D] float32 (0 marks padding), and for training
  with config.class_weights weight [D, B/D] float32 (loss weight).
Training batches are full (the last partial batch of an epoch is dropped);
evaluation batches are padded so every example is seen exactly once.
"""

from typing import Iterator

import numpy as np
import tensorflow as tf

from imgclf_jax import augment
from imgclf_jax import datasets
from imgclf_jax import imbalance
from imgclf_jax import preprocess
from imgclf_jax.errors import UserError


def epoch_seeds(seed: int, epoch: int) -> np.ndarray:
  """Two uint32 words that seed everything random in one training epoch."""
  return np.random.SeedSequence([seed, epoch]).generate_state(2)


class InputPipeline:
  """Batches of one dataset source, preprocessed as `config` says."""

  def __init__(self, source: datasets.Source, config, num_devices: int,
               normalization=None):
    self.source = source
    self.config = config
    self.num_devices = num_devices
    self.image_shape = (config.image_size, config.image_size,
                        source.info.channels)
    self._augment_names = augment.parse_augment(config.augment)
    self._examples_cache = {}
    self._class_counts = {}
    self.normalization = normalization or self._compute_normalization()

  @property
  def steps_per_epoch(self) -> int:
    steps = self.source.num_examples('train') // self.config.batch_size
    if steps == 0:
      raise UserError(
          f'--config.batch_size={self.config.batch_size} is larger than the '
          f'{self.source.num_examples("train")} training examples: lower it.')
    return steps

  def class_counts(self, split: str) -> np.ndarray:
    """Examples per class of `split` (labels only; no image is decoded)."""
    if split not in self._class_counts:
      self._class_counts[split] = imbalance.class_counts(
          self.source.labels(split), self.source.info.num_classes)
    return self._class_counts[split]

  # --- examples --------------------------------------------------------------

  def resized_examples(self, split: str) -> tf.data.Dataset:
    """(image uint8 [S, S, C], label) pairs of `split` as the model sees them
    before normalisation, in the split's order; cached if configured."""
    if split not in self._examples_cache:
      size, channels = self.config.image_size, self.image_shape[-1]

      def resize(image, label):
        return preprocess.resize_image(image, size, channels), label

      ds = self.source.examples(split).map(
          resize, num_parallel_calls=tf.data.AUTOTUNE)
      if self.config.cache:
        ds = ds.cache()
      self._examples_cache[split] = ds
    return self._examples_cache[split]

  def _compute_normalization(self) -> dict:
    """Per-channel mean/std of the training split, in [0, 1] pixel units."""
    channels = self.image_shape[-1]
    if self.config.normalization == 'unit':
      return {'mean': [0.0] * channels, 'std': [1.0] * channels}
    ds = self.resized_examples('train').batch(1024).map(
        lambda image, label: tf.cast(image, tf.float64) / 255.0)
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

  def _finish(self, ds: tf.data.Dataset) -> tf.data.Dataset:
    """Normalises, one-hots and splits batches over the devices."""
    normalization = self.normalization
    num_classes = self.source.info.num_classes
    devices = self.num_devices

    def finish(batch):
      out = {'image': preprocess.normalize(batch['image'], normalization),
             'label': tf.one_hot(batch['label'], num_classes)}
      for key in ('mask', 'weight'):
        if key in batch:
          out[key] = batch[key]
      return {k: tf.reshape(v, [devices, -1, *v.shape[1:]])
              for k, v in out.items()}

    return ds.map(finish, num_parallel_calls=tf.data.AUTOTUNE).prefetch(
        tf.data.AUTOTUNE)

  def train_dataset(self, epoch: int) -> tf.data.Dataset:
    """The batches of training epoch `epoch` (0-based), fixed by the seed."""
    config = self.config
    shuffle_seed, augment_seed = (int(s) for s in
                                  epoch_seeds(config.seed, epoch))
    n = self.source.num_examples('train')
    if config.oversample:
      ds = imbalance.oversample(self.resized_examples('train'),
                                self.class_counts('train'), n, shuffle_seed,
                                config.shuffle_buffer_size)
    else:
      ds = self.resized_examples('train').shuffle(
          min(config.shuffle_buffer_size, n), seed=shuffle_seed,
          reshuffle_each_iteration=False)
    ds = ds.batch(config.batch_size, drop_remainder=True).enumerate()
    names = self._augment_names
    seed = tf.constant([augment_seed, shuffle_seed], tf.int64)
    weights = self.loss_weights()
    weights = None if weights is None else tf.constant(weights, tf.float32)
    minority_augment = None
    if augment.parse_augment(config.minority_augment):
      minority_augment = imbalance.minority_augment_fn(
          config, imbalance.minority_classes(self.class_counts('train'),
                                             config.minority_fraction))

    def augment_one(index, batch):
      image, label = batch
      image = preprocess.to_unit_float(image)
      batch_seed = tf.random.experimental.stateless_fold_in(seed, index)
      augmented = augment.augment_batch(image, batch_seed, config, names)
      if minority_augment is not None:
        augmented = minority_augment(image, augmented, label, batch_seed)
      out = {'image': augmented, 'label': label}
      if weights is not None:
        out['weight'] = tf.gather(weights, label)
      return out

    ds = ds.map(augment_one, num_parallel_calls=tf.data.AUTOTUNE)
    return self._finish(ds)

  def eval_dataset(self, split: str) -> tf.data.Dataset:
    """Every example of `split` once, padded to whole batches (mask 0)."""
    batch_size = self.config.eval_batch_size
    n = self.source.num_examples(split)
    padding = (-n) % batch_size
    ds = self.resized_examples(split)
    if padding:
      pad = tf.data.Dataset.from_tensors(
          (tf.zeros(self.image_shape, tf.uint8), tf.constant(-1, tf.int32)))
      ds = ds.concatenate(pad.repeat(padding))

    def to_float(image, label):
      return {'image': preprocess.to_unit_float(image), 'label': label,
              'mask': tf.cast(label >= 0, tf.float32)}

    ds = ds.batch(batch_size, drop_remainder=True).map(
        to_float, num_parallel_calls=tf.data.AUTOTUNE)
    return self._finish(ds)

  def loss_weights(self):
    """Per-class loss weights of config.class_weights, or None (unweighted)."""
    names = self.source.info.class_names
    if imbalance.parse_class_weights(self.config.class_weights, names) is None:
      return None
    return imbalance.loss_weights(self.config.class_weights,
                                  self.class_counts('train'),
                                  self.source.info.class_names)

  def train_batches(self, epoch: int) -> Iterator[dict]:
    return self._numpy(self.train_dataset(epoch), 'train')

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
