"""The tf.data pipeline shared by every dataset source.

    examples (uint8, any size) -> resize -> [cache] -> shuffle (train)
      -> batch -> augment (train) -> normalise -> one-hot labels -> prefetch

With config.crop='random_resized' the examples stay encoded until cropped:

    records (file names or encoded images) -> shuffle (train)
      -> read, decode a random-resized crop (train) / the central crop (eval)
      -> batch -> augment (train) -> normalise -> one-hot labels -> prefetch

Whether the resized examples are cached in memory (config.cache,
cache_budget_gb) is decided here, once per pipeline for the training and
validation splits together (and for another split alone), and logged with
the numbers. The normalisation statistics are measured over the training
split, or over a fixed sample of it (config.normalization_sample_size,
Source.sample_indices), or taken from the config.

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
import time
from typing import Iterator

from absl import logging
import jax
import numpy as np
import tensorflow as tf

from imgclf_jax.data import augment
from imgclf_jax.data import imbalance
from imgclf_jax.data import preprocess
from imgclf_jax.data import sources
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


# The splits that a training run reads every epoch and caches together.
CACHED_TOGETHER = ('train', 'validation')


def _bytes_text(n: float) -> str:
  if n >= 1e9:
    return f'{n / 1e9:.1f} GB'
  return f'{n / 1e6:.0f} MB' if n >= 1e6 else f'{n / 1e3:.1f} kB'


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

  def __init__(self, source: sources.Source, config, normalization=None,
               process=None):
    self.source = source
    self.config = config
    self.process_index, self.process_count = process or (
        jax.process_index(), jax.process_count())
    self.image_shape = (config.image_size, config.image_size,
                        source.info.channels)
    self.augment_spec = augment.AugmentSpec.from_config(config)
    self._examples_cache = {}
    self._cache_decisions = {}
    self._labels = {}
    self._transforms = {}
    if normalization is not None:
      _warn_if_statistics_differ(config, normalization)
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
    """(image uint8 [S, S, C], label) pairs of `split` as evaluation sees
    them before normalisation (with config.crop, the central crops), in the
    split's order; cached where `caches(split)`."""
    if split not in self._examples_cache:
      ds = self._from_source(split)
      if self.caches(split):
        ds = ds.cache()
      self._examples_cache[split] = ds
    return self._examples_cache[split]

  def resized_subset(self, split: str, indices) -> tf.data.Dataset:
    """resized_examples(split) at `indices` only, in split order (sorted, no
    repeats). Where the split is cached they come from its cache (a pass
    over it, which fills it if it is not yet); elsewhere only their images
    are decoded."""
    if not self.caches(split):
      return self._from_source(split, indices)
    return sources.at_indices(self.resized_examples(split),
                               self.source.num_examples(split), indices)

  def _from_source(self, split: str, indices=None) -> tf.data.Dataset:
    """resized_examples(split) (at `indices`) decoded from the source."""
    if self.config.crop == 'none':
      return self._resized(self.source.examples(split, indices))
    return self._central_crops(self.source.records(split, indices))

  def _central_crops(self, records: tf.data.Dataset) -> tf.data.Dataset:
    """(record, label) pairs -> (central crop uint8 [S, S, C], label)."""
    size, channels, read = (self.config.image_size, self.image_shape[-1],
                            self.source.read)
    return records.map(
        lambda record, label: (preprocess.central_crop(
            read(record), size, channels), label),
        num_parallel_calls=tf.data.AUTOTUNE)

  def caches(self, split: str) -> bool:
    """Whether `split`'s resized examples are kept in memory: config.cache
    True or False as it says; 'auto' when the training and validation splits
    together (another split: alone) take at most config.cache_budget_gb;
    never with config.crop. Decided once per pipeline and logged."""
    group = CACHED_TOGETHER if split in CACHED_TOGETHER else (split,)
    if group not in self._cache_decisions:
      self._cache_decisions[group] = self._decide_cache(group)
    return self._cache_decisions[group]

  def _decide_cache(self, group) -> bool:
    config = self.config
    if config.crop != 'none':
      logging.info('Not caching the %s images: --config.crop=%s decodes a '
                   'new crop of each file every epoch (evaluation: the '
                   'central crop of each file, every time).',
                   ' and '.join(group), config.crop)
      return False
    counts = [self.source.num_examples(split) for split in group]
    s, channels = config.image_size, self.image_shape[-1]
    size = sum(counts) * s * s * channels
    what = (' and '.join(f'{n:,} {split}' for n, split in zip(counts, group)) +
            f' images ({_bytes_text(size)} decoded at {s}x{s}x{channels})')
    budget = config.cache_budget_gb
    if config.cache is True:
      logging.info('Caching the %s in memory (--config.cache=True).', what)
      return True
    if config.cache is False:
      logging.info('Not caching the %s (--config.cache=False): each epoch '
                   'decodes the files.', what)
      return False
    if size <= round(budget * 1e9):
      logging.info('Caching the %s in memory: within --config.cache_budget_gb'
                   '=%g.', what, budget)
      return True
    logging.info('Not caching: the %s would take more than --config.'
                 'cache_budget_gb=%g; each epoch decodes the files.', what,
                 budget)
    return False

  def class_examples(self, split: str, by_file: bool = False) -> list:
    """resized_subset of each class present in `split`, in class order
    (`by_file`: their (path, label) pairs instead, of an image folder)."""
    labels = self.labels(split)
    subset = self.source.records if by_file else self.resized_subset
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
    """Per-channel mean/std in [0, 1] pixel units: of the training split
    (resized_examples: as evaluation sees it), or of the sample
    Source.sample_indices draws of it where it holds more than
    config.normalization_sample_size images, or config's given ones."""
    config, channels = self.config, self.image_shape[-1]
    if config.normalization == 'unit':
      return {'mean': [0.0] * channels, 'std': [1.0] * channels}
    if config.normalization_mean:
      for key in ('normalization_mean', 'normalization_std'):
        if len(config[key]) != channels:
          raise UserError(
              f'--config.{key}={tuple(config[key])!r} has '
              f'{len(config[key])} number(s), but {self.source.info.name!r} '
              f'has {channels} channel(s): give one number per channel.')
      logging.info('Normalisation statistics as given: mean %s, std %s.',
                   list(config.normalization_mean),
                   list(config.normalization_std))
      return {'mean': [float(v) for v in config.normalization_mean],
              'std': [float(v) for v in config.normalization_std]}
    n = self.source.num_examples('train')
    started = time.time()
    if n <= config.normalization_sample_size:
      images, measured = self.resized_examples('train'), f'all {n:,}'
    else:
      indices = self.source.sample_indices(
          'train', config.normalization_sample_size)
      images = self._from_source('train', indices)
      measured = (f'{len(indices):,} of the {n:,} (a fixed sample, '
                  '--config.normalization_sample_size)')
    stats = self._statistics(images)
    logging.info('Normalisation statistics of %s training images in %.1f s: '
                 'mean %s, std %s.', measured, time.time() - started,
                 np.round(stats['mean'], 4).tolist(),
                 np.round(stats['std'], 4).tolist())
    return stats

  def _statistics(self, images: tf.data.Dataset) -> dict:
    """Per-channel mean/std of (uint8 image, label) pairs, in [0, 1] units."""
    channels = self.image_shape[-1]
    ds = _finish(images.batch(1024).map(
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
    crops = config.crop != 'none'
    n = self.source.num_examples('train')
    if config.oversample:  # never with crops (configuration.py)
      ds = imbalance.oversample(self.class_examples('train', by_file),
                                self.class_counts('train'), n, shuffle_seed,
                                config.shuffle_buffer_size)
    else:
      # With crops, each (path, label) or (encoded image, label) record goes
      # with its position in the split, which seeds its crop.
      elements = (self.source.records('train').enumerate() if crops else
                  self.source.records('train') if by_file else
                  self.resized_examples('train'))
      ds = elements.shuffle(
          min(config.shuffle_buffer_size, n), seed=shuffle_seed,
          reshuffle_each_iteration=False)
    crop = self._random_resized_crop(crop_seeds(config.seed, epoch))
    if crops and not by_file:
      ds = ds.map(crop, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(config.batch_size, drop_remainder=True).enumerate().skip(
        start)
    seed = tf.constant([augment_seed, shuffle_seed], tf.int64)
    if not by_file:
      transform = self._train_transform()
      ds = ds.map(lambda index, batch: transform(index, *batch, seed),
                  num_parallel_calls=tf.data.AUTOTUNE)
      return _finish(ds)
    # This process's rows of each global batch, decoded (cropped) here only.
    per_process = config.batch_size // self.process_count
    offset = self.process_index * per_process
    rows = lambda x: x[offset:offset + per_process]

    def own_rows(index, batch):
      own = tf.nest.map_structure(rows, batch)
      return tf.data.Dataset.from_tensor_slices(
          (tf.fill([per_process], index), own))

    def decode(index, example):
      if crops:
        return index, *crop(*example)
      return index, *self._resize(*sources.decode_file(*example))

    ds = ds.flat_map(own_rows).map(
        decode, num_parallel_calls=tf.data.AUTOTUNE).batch(per_process)
    transform = self._train_transform((offset, config.batch_size))
    ds = ds.map(lambda index, images, labels: transform(index[0], images,
                                                        labels, seed),
                num_parallel_calls=tf.data.AUTOTUNE)
    return _finish(ds)

  def _tfds_share(self, epoch: int, start: int) -> tf.data.Dataset:
    """This process's batches of a TFDS training split, read from its own
    records and shuffled (and cropped) with seeds of its own (repeated if
    its share is short of the epoch's steps)."""
    config = self.config
    if config.oversample:
      raise UserError(
          '--config.oversample with several processes needs an image folder '
          '(--config.dataset=folder:...): with a TFDS dataset each process '
          'reads only its own records.')
    own_seeds = [config.seed, epoch, self.process_index]
    shuffle_seed, augment_seed = (int(s) for s in np.random.SeedSequence(
        own_seeds).generate_state(2))
    crops = config.crop != 'none'
    examples, size = self.source.process_share(
        'train', self.process_index, self.process_count, encoded=crops)
    if crops:
      ds = examples
    else:
      ds = self._resized(examples)
      if self.caches('train'):
        ds = ds.cache()
    ds = ds.shuffle(min(config.shuffle_buffer_size, size), seed=shuffle_seed,
                    reshuffle_each_iteration=False).repeat()
    if crops:  # seeded by the position in this process's stream
      crop = self._random_resized_crop(np.random.SeedSequence(
          own_seeds + [_CROP_STREAM]).generate_state(2))
      ds = ds.enumerate().map(crop, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(config.batch_size // self.process_count,
                  drop_remainder=True).take(self.steps_per_epoch)
    ds = ds.enumerate().skip(start)
    seed = tf.constant([augment_seed, shuffle_seed], tf.int64)
    transform = self._train_transform()
    return _finish(ds.map(lambda index, batch: transform(index, *batch, seed),
                          num_parallel_calls=tf.data.AUTOTUNE))

  def _random_resized_crop(self, seeds):
    """(index, (record, label)) -> (random-resized crop uint8 [S, S, C],
    label), the crop seeded by stateless_fold_in(seeds, index): the
    example's position in the split (crop_seeds), whatever order the
    shuffle puts it in."""
    size, channels, read = (self.config.image_size, self.image_shape[-1],
                            self.source.read)
    seed = tf.constant(np.asarray(seeds).astype(np.int64))

    def crop(index, example):
      record, label = example
      example_seed = tf.random.experimental.stateless_fold_in(seed, index)
      return preprocess.random_resized_crop(read(record), example_seed, size,
                                            channels), label

    return crop

  def eval_share(self, split: str):
    """(batches, padding) of this process's share of `split` for
    eval_loop.evaluate_split: with one process all of eval_batches(split)
    and padding None; with several, every process's contiguous share
    (sources.Source.process_share) in batches of eval_batch_size /
    processes, and padding (num_batches, batch size): every process runs as
    many steps, the short ones padded with masked examples."""
    if self.process_count == 1:
      return self.eval_batches(split), None
    n = self.source.num_examples(split)
    if n < self.process_count:
      raise UserError(
          f'split {split!r} has {n} example(s), fewer than the '
          f'{self.process_count} processes: each must evaluate at least one.')
    crops = self.config.crop != 'none'
    examples, _ = self.source.process_share(split, self.process_index,
                                            self.process_count, encoded=crops)
    examples = (self._central_crops(examples) if crops else
                self._resized(examples))
    batch_size = max(1, self.config.eval_batch_size // self.process_count)
    ds = examples.batch(batch_size).map(
        self._eval_transform, num_parallel_calls=tf.data.AUTOTUNE)
    # As many batches as the largest share needs (ceil(n / processes)).
    largest = -(-n // self.process_count)
    num_batches = -(-largest // batch_size)
    return self._numpy(_finish(ds), split), (num_batches, batch_size)

  def eval_dataset(self, split: str, indices=None) -> tf.data.Dataset:
    """Every example of `split` once (or those at `indices`, as
    resized_subset takes them), in batches of config.eval_batch_size (the
    last one partial)."""
    examples = (self.resized_examples(split) if indices is None else
                self.resized_subset(split, indices))
    ds = examples.batch(self.config.eval_batch_size).map(
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

  def eval_batches(self, split: str, indices=None) -> Iterator[dict]:
    return self._numpy(self.eval_dataset(split, indices), split)

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


def _warn_if_statistics_differ(config, normalization: dict):
  """A resumed run (or eval) keeps its checkpoint's statistics: say so where
  the config gives others."""
  given = config.get('normalization_mean')
  if not given:
    return
  mine = {'mean': [float(v) for v in given],
          'std': [float(v) for v in config.normalization_std]}
  if mine != {k: [float(v) for v in normalization[k]] for k in mine}:
    logging.warning(
        'Using the checkpoint\'s normalisation statistics (mean %s, std %s), '
        'not --config.normalization_mean=%s / normalization_std=%s: the '
        'statistics of a run are fixed when it starts.', normalization['mean'],
        normalization['std'], tuple(given), tuple(config.normalization_std))
