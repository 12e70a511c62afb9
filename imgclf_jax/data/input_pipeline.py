"""The tf.data pipeline shared by every dataset source: one object that a
run holds, made of parts with one job each.

    examples (uint8, any size) -> resize -> [cache] -> shuffle (train)
      -> batch -> augment (train) -> normalise -> one-hot labels -> prefetch

With crop='random_resized' the examples stay encoded until cropped:

    records (file names or encoded images) -> shuffle (train)
      -> read, decode a random-resized crop (train) / the central crop (eval)
      -> batch -> augment (train) -> normalise -> one-hot labels -> prefetch

  examples.py         a split's resized examples, subsets, labels, arrays
  cache.py            whether a split is kept in memory (logged)
  statistics.py       the normalisation statistics
  batch_transform.py  what is done to a drawn batch (one XLA function)
  train_stream.py     the training epochs (one process, folder rows, TFDS
                      shares; the class-imbalance remedies)
  eval_stream.py      the evaluation batches (or this process's share)
  iterate.py          prefetching, and numpy iteration with decode errors
                      as UserError

The per-image steps (decode, resize, [0, 1] floats, normalise) are the
functions of `preprocess.py`, shared with prediction.

Batches are global: dicts of numpy arrays image [B, S, S, C] float32,
label [B, K] float32 (one-hot), and for training with class weights
weight [B] float32 (loss weight). Training batches are full (the last
partial batch of an epoch is dropped); evaluation batches hold every example
of the split once, the last one partial.
"""

import functools
from typing import Iterator

import jax
import numpy as np
import tensorflow as tf

from imgclf_jax.data import batch_transform
from imgclf_jax.data import cache
from imgclf_jax.data import eval_stream
from imgclf_jax.data import examples as examples_lib
from imgclf_jax.data import imbalance
from imgclf_jax.data import iterate
from imgclf_jax.data import source_base
from imgclf_jax.data import spec as spec_lib
from imgclf_jax.data import statistics
from imgclf_jax.data import train_stream


class InputPipeline:
  """Batches of one dataset source, preprocessed as `spec` says.

  `normalization`: the statistics to use (a resumed run's, the checkpoint's);
  None measures them (statistics.py). `training`: False for a run that
  evaluates a checkpoint: it needs `normalization`, decides each split's
  caching alone, and reads nothing of the training split (a training run
  reads its training and validation splits every epoch, cached together).
  `process`: (index, count) of this process among those of a run on
  several (jax.distributed; default: jax.process_index(), process_count()).
  With several, `train_batches` and `eval_share` give this process's share
  (train_stream.py, eval_stream.py). The normalisation statistics are
  computed from the whole training split by every process (the same numbers
  everywhere).
  """

  def __init__(self, source: source_base.Source, spec: spec_lib.DataSpec,
               normalization=None, process=None, training: bool = True):
    if normalization is None and not training:
      raise ValueError('a pipeline that does not train needs the '
                       "checkpoint's normalisation statistics")
    self.source, self.spec = source, spec
    self.process_index, self.process_count = process or (
        jax.process_index(), jax.process_count())
    self.image_shape = (spec.image_size, spec.image_size,
                        source.info.channels)
    policy = cache.CachePolicy(
        spec.cache, spec.crop, self.image_shape, source.num_examples,
        together=cache.CACHED_TOGETHER if training else ())
    self.examples = examples_lib.Examples(source, spec.image_size, spec.crop,
                                          policy)
    if normalization is not None:
      statistics.warn_if_differ(spec.statistics, normalization)
    self.normalization = normalization or statistics.normalization(
        spec.statistics, self.examples)
    self.train_stream = train_stream.TrainStream(
        self.examples, spec, self.normalization, self.loss_weights,
        (self.process_index, self.process_count))

  @property
  def steps_per_epoch(self) -> int:
    return self.train_stream.steps_per_epoch

  def labels(self, split: str) -> np.ndarray:
    return self.examples.labels(split)

  def class_counts(self, split: str) -> np.ndarray:
    return self.examples.class_counts(split)

  def caches(self, split: str) -> bool:
    return self.examples.policy.caches(split)

  def resized_examples(self, split: str) -> tf.data.Dataset:
    """(image uint8 [S, S, C], label) pairs of `split` as evaluation sees
    them before normalisation (Examples.resized)."""
    return self.examples.resized(split)

  def resized_subset(self, split: str, indices) -> tf.data.Dataset:
    return self.examples.subset(split, indices)

  def class_examples(self, split: str, by_file: bool = False) -> list:
    return self.examples.class_examples(split, by_file)

  def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
    return self.examples.arrays(split)

  def loss_weights(self):
    """Per-class loss weights of ImbalanceSpec.class_weights, or None
    (unweighted; then the training labels are not read)."""
    names, given = self.source.info.class_names, self.spec.imbalance
    if imbalance.parse_class_weights(given.class_weights, names) is None:
      return None
    return imbalance.loss_weights(given.class_weights,
                                  self.class_counts('train'), names)

  @functools.cached_property
  def eval_transform(self):
    """batch_transform.eval_transform with this pipeline's statistics."""
    return batch_transform.eval_transform(self.normalization,
                                          self.source.info.num_classes)

  def train_dataset(self, epoch: int, start: int = 0) -> tf.data.Dataset:
    return self.train_stream.dataset(epoch, start)

  def train_batches(self, epoch: int, start: int = 0) -> Iterator[dict]:
    """The batches of training epoch `epoch` from its batch `start` on, as
    numpy (train_stream.TrainStream.dataset)."""
    return iterate.as_numpy(self.train_dataset(epoch, start), self.source,
                            'train')

  def eval_dataset(self, split: str, indices=None) -> tf.data.Dataset:
    return eval_stream.dataset(self.examples, self.eval_transform,
                               self.spec.eval_batch_size, split, indices)

  def eval_batches(self, split: str, indices=None) -> Iterator[dict]:
    """Every example of `split` once (or those at `indices`) in batches of
    eval_batch_size, as numpy."""
    return iterate.as_numpy(self.eval_dataset(split, indices), self.source,
                            split)

  def eval_share(self, split: str):
    """(batches, padding) of this process's share of `split` for
    eval_loop.evaluate_split: with one process all of eval_batches(split)
    and padding None; with several, eval_stream.process_share's."""
    if self.process_count == 1:
      return self.eval_batches(split), None
    return eval_stream.process_share(
        self.examples, self.eval_transform, self.spec.eval_batch_size, split,
        (self.process_index, self.process_count))
