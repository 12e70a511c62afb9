"""What every dataset source gives the input pipeline: a `DatasetInfo`
(class names, channels, split sizes) and a `Source` whose splits are
deterministic `tf.data.Dataset`s of `(image uint8 [H, W, C], label int32)`,
the same examples still encoded (`records`, for decoding only a crop), at
chosen indices, as a process's share, or as a fixed sample. The two kinds:
tfds_source.py and folder_source.py; sources.make_source picks one.

Logical splits: 'train' and 'validation' are resolved once from the
SourceSpec (train_split, validation_split, validation_fraction); any other
name is passed to the source as it is (e.g. 'test', or a TFDS slice
'test[:50%]').
"""

import dataclasses

import numpy as np
import tensorflow as tf

# TF must leave any GPU to JAX: tf.data runs on the host.
tf.config.set_visible_devices([], 'GPU')

# The sample of a split that the normalisation statistics are measured on
# (StatisticsSpec.sample_size) is drawn with this seed, whatever the
# training seed is and whichever process draws it (Source.sample_indices).
SAMPLE_SEED = 20_260_131


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  name: str                     # SourceSpec.dataset as given
  class_names: tuple[str, ...]
  channels: int                 # channels of the decoded images (1 or 3)
  # 'train' and 'validation' -> number of examples; {} for a folder whose
  # classes come from a checkpoint (its splits are read when asked for).
  num_examples: dict

  @property
  def num_classes(self) -> int:
    return len(self.class_names)


class Source:
  """A dataset with resolved splits. Subclasses implement `_load`,
  `_records`, `_count` and `labels` (and `read` where a record is not the
  encoded image itself)."""

  info: DatasetInfo

  def examples(self, split: str, indices=None) -> tf.data.Dataset:
    """(image uint8 [H, W, C], label int32) pairs in a fixed order.

    With `indices` (positions in that order), only those examples, in that
    order, chosen before any image is decoded (an image folder reads only
    their files; a TFDS split reads them as slices where they are a few runs
    of consecutive records, else passes over every record, decoding only
    these).
    """
    return self._load(self._resolve(split), self._checked(split, indices))

  def records(self, split: str, indices=None) -> tf.data.Dataset:
    """(record, label int32) pairs in the order of `examples(split)`, with
    `indices` as there. A record is what `read` turns into the image's
    encoded bytes: a file's path (read only then, so that shuffling records
    moves names, not images) or, for TFDS, the stored encoded image."""
    return self._records(self._resolve(split), self._checked(split, indices))

  def read(self, record):
    """A record's encoded image bytes (a scalar tf.string)."""
    return record

  def sample_indices(self, split: str, size: int) -> np.ndarray:
    """`size` sorted positions of `split` (all of them if it holds no more):
    the sample the normalisation statistics are measured on. Drawn with
    SAMPLE_SEED from the positions 0..n-1 of the whole split (not the
    training seed, not a process's share), so every run and every process
    draws the same.
    Here: uniformly, without repeats."""
    n = self.num_examples(split)
    if n <= size:
      return np.arange(n)
    rng = np.random.default_rng(SAMPLE_SEED)
    return np.sort(rng.choice(n, size, replace=False))

  def _checked(self, split: str, indices):
    if indices is None:
      return None
    indices = np.unique(np.asarray(indices, np.int64))
    n = self.num_examples(split)
    if len(indices) and (indices[0] < 0 or indices[-1] >= n):
      raise IndexError(f'example indices {indices[0]}..{indices[-1]} out '
                       f'of range for the {n} examples of {split!r}')
    return indices

  def num_examples(self, split: str) -> int:
    return self._count(self._resolve(split))

  def process_share(self, split: str, index: int, count: int,
                    encoded: bool = False):
    """(examples, size): process `index` of `count`'s contiguous share of
    `split` (np.array_split's; every example in exactly one share), reading
    only its own files (TfdsSource: its own records); `encoded`: its
    (record, label) pairs instead (see `records`)."""
    indices = np.array_split(np.arange(self.num_examples(split)), count)[index]
    read = self.records if encoded else self.examples
    return read(split, indices), len(indices)

  def split_sizes(self) -> dict:
    """{'train': n, 'validation': n}: what checkpoints record, so that
    training does not resume on a dataset whose splits changed."""
    return {split: self.num_examples(split) for split in ('train', 'validation')}

  def _resolve(self, split: str) -> str:
    return self._splits.get(split, split)

  def labels(self, split: str) -> np.ndarray:
    """The int labels of `split`, in the order of `examples(split)`, read
    without decoding any image (each subclass knows how)."""
    raise NotImplementedError

  def files(self, split: str):
    """The image file of each example of `split`, or None (not from files)."""
    del split
    return None

  def describe_error(self, split: str, error: Exception) -> str:
    """Turns a failure while reading `split` into a message for the user."""
    return f'reading split {split!r} of {self.info.name!r} failed: {error}'



def at_indices(ds: tf.data.Dataset, n: int, indices) -> tf.data.Dataset:
  """The elements of `ds` (n of them) at the sorted `indices`, in order: one
  pass over `ds` that drops the others."""
  chosen = np.zeros(n, bool)
  chosen[np.asarray(indices, np.int64)] = True
  chosen = tf.constant(chosen)
  return ds.enumerate().filter(lambda i, element: chosen[i]).map(
      lambda i, element: element)
