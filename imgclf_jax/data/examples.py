"""A source's examples as evaluation sees them before normalisation: the
(image uint8 [S, S, C], label) pairs of a split, resized (or, with crops,
the central crops), in the split's order, kept in memory where the cache
policy says (cache.py); subsets of them, per class, or all as numpy."""

import numpy as np
import tensorflow as tf

from imgclf_jax.data import cache
from imgclf_jax.data import imbalance
from imgclf_jax.data import iterate
from imgclf_jax.data import preprocess
from imgclf_jax.data import source_base


class Examples:
  """The resized examples of `source`'s splits at `image_size` (`crop`:
  'none' resizes whole images, else the central crop), cached as `policy`
  decides."""

  def __init__(self, source: source_base.Source, image_size: int, crop: str,
               policy: cache.CachePolicy):
    self.source, self.crop, self.policy = source, crop, policy
    self.image_shape = (image_size, image_size, source.info.channels)
    self._cached = {}
    self._labels = {}

  def labels(self, split: str) -> np.ndarray:
    """The int labels of `split` in its order (read once; no image decoded)."""
    if split not in self._labels:
      self._labels[split] = self.source.labels(split)
    return self._labels[split]

  def class_counts(self, split: str) -> np.ndarray:
    """Examples per class of `split` (labels only; no image is decoded)."""
    return imbalance.class_counts(self.labels(split),
                                  self.source.info.num_classes)

  def resized(self, split: str) -> tf.data.Dataset:
    """(image uint8 [S, S, C], label) pairs of `split` in its order; cached
    where policy.caches(split)."""
    if split not in self._cached:
      ds = self.from_source(split)
      if self.policy.caches(split):
        ds = ds.cache()
      self._cached[split] = ds
    return self._cached[split]

  def subset(self, split: str, indices) -> tf.data.Dataset:
    """resized(split) at `indices` only, in split order (sorted, no repeats).
    Where the split is cached they come from its cache (a pass over it,
    which fills it if it is not yet); elsewhere only their images are
    decoded."""
    if not self.policy.caches(split):
      return self.from_source(split, indices)
    return source_base.at_indices(self.resized(split),
                                  self.source.num_examples(split), indices)

  def from_source(self, split: str, indices=None) -> tf.data.Dataset:
    """resized(split) (at `indices`) decoded from the source, not cached."""
    if self.crop == 'none':
      return self.resize_all(self.source.examples(split, indices))
    return self.central_crops(self.source.records(split, indices))

  def central_crops(self, records: tf.data.Dataset) -> tf.data.Dataset:
    """(record, label) pairs -> (central crop uint8 [S, S, C], label)."""
    size, _, channels = self.image_shape
    read = self.source.read
    return records.map(
        lambda record, label: (preprocess.central_crop(
            read(record), size, channels), label),
        num_parallel_calls=tf.data.AUTOTUNE)

  def resize(self, image, label):
    """One (image uint8 [H, W, C], label) -> (uint8 [S, S, C], label)."""
    size, _, channels = self.image_shape
    return preprocess.resize_image(image, size, channels), label

  def resize_all(self, examples: tf.data.Dataset) -> tf.data.Dataset:
    return examples.map(self.resize, num_parallel_calls=tf.data.AUTOTUNE)

  def class_examples(self, split: str, by_file: bool = False) -> list:
    """subset() of each class present in `split`, in class order
    (`by_file`: their (path, label) records instead, of an image folder)."""
    labels = self.labels(split)
    subset = self.source.records if by_file else self.subset
    return [subset(split, np.flatnonzero(labels == c))
            for c in range(self.source.info.num_classes)
            if np.any(labels == c)]

  def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
    """All of `split` as numpy: uint8 images [N, S, S, C], int32 labels [N]."""
    images, labels = [], []
    for image, label in iterate.as_numpy(
        iterate.finish(self.resized(split).batch(1024)), self.source, split):
      images.append(image)
      labels.append(label)
    return (np.concatenate(images).astype(np.uint8),
            np.concatenate(labels).astype(np.int32))
