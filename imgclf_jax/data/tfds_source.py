"""A TFDS image-classification dataset as a source (source_base.Source),
prepared first where it is not yet (tfds_download.py)."""

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from imgclf_jax.data import source_base
from imgclf_jax.data import spec as spec_lib
from imgclf_jax.data import tfds_download
from imgclf_jax.errors import UserError

# A TFDS split's sample is this many contiguous runs of records
# (TfdsSource.sample_indices), each read as a TFDS slice.
SAMPLE_BLOCKS = 64


class TfdsSource(source_base.Source):
  """Any TFDS image-classification dataset, read with `tfds.builder`."""

  def __init__(self, name: str, spec: spec_lib.SourceSpec):
    self._builder = _tfds_builder(name, spec.data_dir)
    self._counted = {}
    info = self._builder.info
    image_key, label_key = _supervised_keys(info, name)
    self._image_key, self._label_key = image_key, label_key
    available = list(info.splits.keys())
    train = spec.train_split
    if spec.validation_split:
      validation = spec.validation_split
    elif 'validation' in available:
      validation = 'validation'
    elif '[' in train or '+' in train:
      raise UserError(
          f'--config.train_split={train!r} is a slice or a sum of splits, and '
          f'{name!r} has no validation split to hold out of it: give the '
          "held-out part too, e.g. --config.train_split='train[:90%]' "
          "--config.validation_split='train[90%:]'.")
    else:  # hold out the last fraction of the train split
      n = self._count(train)
      held_out = max(1, int(round(n * spec.validation_fraction)))
      validation = f'{train}[{n - held_out}:]'
      train = f'{train}[:{n - held_out}]'
    self._splits = {'train': train, 'validation': validation}
    channels = info.features[image_key].shape[-1]
    self.info = source_base.DatasetInfo(
        name=name,
        class_names=tuple(info.features[label_key].names),
        channels=int(channels) if channels else 3,
        num_examples={k: self._count(v) for k, v in self._splits.items()})

  def _count(self, split: str) -> int:
    splits = self._builder.info.splits
    if not splits:
      # No split metadata (e.g. under tfds.testing.mock_data): count once.
      if split not in self._counted:
        self._counted[split] = int(self._builder.as_dataset(
            split=split).reduce(0, lambda n, _: n + 1))
      return self._counted[split]
    try:
      return splits[split].num_examples
    except (KeyError, ValueError) as e:
      raise UserError(
          f'dataset {self._builder.name!r} has no split {split!r} ({e}); its '
          f'splits are {sorted(splits.keys())}: set --config.train_split, '
          '--config.validation_split or --config.eval_split accordingly.'
      ) from None

  def _load(self, split: str, indices=None) -> tf.data.Dataset:
    self._count(split)  # clear error for unknown splits
    image_key, label_key = self._image_key, self._label_key
    read_config = tfds.ReadConfig(try_autocache=False)
    if indices is None:
      ds = self._builder.as_dataset(split=split, shuffle_files=False,
                                    read_config=read_config)
      return ds.map(
          lambda ex: (ex[image_key], tf.cast(ex[label_key], tf.int32)),
          num_parallel_calls=tf.data.AUTOTUNE)
    # Only the chosen records are decoded.
    image_feature = self._builder.info.features[image_key]
    return self._records(split, indices).map(
        lambda data, label: (image_feature.decode_example(data), label),
        num_parallel_calls=tf.data.AUTOTUNE)

  def process_share(self, split: str, index: int, count: int,
                    encoded: bool = False):
    """(examples, size) of tfds.split_for_jax_process: TFDS's even split of
    `split`'s records over the processes (the size is an upper bound);
    `encoded`: (record, label) pairs, the images not decoded."""
    resolved = self._resolve(split)
    n = self._count(resolved)
    share = tfds.split_for_jax_process(resolved, process_index=index,
                                       process_count=count)
    image_key, label_key = self._image_key, self._label_key
    ds = self._builder.as_dataset(
        split=share, shuffle_files=False,
        read_config=tfds.ReadConfig(try_autocache=False),
        decoders={image_key: tfds.decode.SkipDecoding()} if encoded else None)
    return ds.map(lambda ex: (ex[image_key], tf.cast(ex[label_key], tf.int32)),
                  num_parallel_calls=tf.data.AUTOTUNE), -(-n // count)

  def _records(self, split: str, indices=None) -> tf.data.Dataset:
    """(encoded image, label) of `split` (at `indices`), no image decoded.

    Indices that form at most SAMPLE_BLOCKS runs of consecutive positions are
    read as TFDS slices of the underlying splits (only the shards holding
    them are opened, and read up to the run's end); others in one pass over
    the split's records, keeping the chosen ones.
    """
    n = self._count(split)  # clear error for unknown splits
    image_key, label_key = self._image_key, self._label_key
    read_config = tfds.ReadConfig(try_autocache=False)
    decoders = {image_key: tfds.decode.SkipDecoding()}
    slices = None if indices is None else self._slices(split, indices)
    ds = self._builder.as_dataset(
        split=slices or split, shuffle_files=False, read_config=read_config,
        decoders=decoders)
    if indices is not None and slices is None:
      ds = source_base.at_indices(ds, n, indices)
    return ds.map(
        lambda ex: (ex[image_key], tf.cast(ex[label_key], tf.int32)),
        num_parallel_calls=tf.data.AUTOTUNE)

  def _slices(self, split: str, indices):
    """A TFDS split spec that reads exactly the sorted `indices` of `split`
    ('train[3:9]+train[40:42]'), or None: too many runs, or no split
    metadata to resolve `split` with (e.g. under tfds.testing.mock_data)."""
    if not len(indices):
      return None
    breaks = np.flatnonzero(np.diff(indices) != 1) + 1
    starts = indices[np.r_[0, breaks]]
    ends = indices[np.r_[breaks - 1, len(indices) - 1]] + 1
    if len(starts) > SAMPLE_BLOCKS or not self._builder.info.splits:
      return None
    # `split` (itself maybe a slice or a sum) as absolute ranges of the
    # prepared splits, in reading order.
    infos = self._builder.info.splits
    parts = tfds.core.ReadInstruction.from_spec(split).to_absolute(infos)
    spec, offset = [], 0
    for part in parts:  # from_ None: 0; to None: the split's end
      first = part.from_ or 0
      size = (infos[part.splitname].num_examples if part.to is None
              else part.to) - first
      for a, b in zip(starts, ends):
        a, b = max(a, offset), min(b, offset + size)
        if a < b:
          spec.append(f'{part.splitname}[{first + a - offset}:'
                      f'{first + b - offset}]')
      offset += size
    return '+'.join(spec)

  def sample_indices(self, split: str, size: int) -> np.ndarray:
    """As Source.sample_indices, but SAMPLE_BLOCKS runs of consecutive
    records (of ceil(size / SAMPLE_BLOCKS) each, the last one shorter) at
    positions drawn with SAMPLE_SEED, so that reading the sample opens only
    the shards holding them. TFDS shuffles a dataset's records when it
    prepares it, so runs of records are as good a sample as single ones;
    where the dataset was prepared unshuffled (info.disable_shuffling), or
    the split is too small for the runs, the sample is drawn uniformly (and
    reading it passes over every record, decoding only the sample)."""
    n = self.num_examples(split)
    length = -(-size // SAMPLE_BLOCKS)
    if (n <= size or self._builder.info.disable_shuffling or
        n // length < SAMPLE_BLOCKS):
      return super().sample_indices(split, size)
    rng = np.random.default_rng(source_base.SAMPLE_SEED)
    blocks = np.sort(rng.choice(n // length, SAMPLE_BLOCKS, replace=False))
    return (blocks[:, None] * length + np.arange(length)).ravel()[:size]

  def labels(self, split: str) -> np.ndarray:
    split = self._resolve(split)
    self._count(split)  # clear error for unknown splits
    ds = self._builder.as_dataset(
        split=split, shuffle_files=False,
        read_config=tfds.ReadConfig(try_autocache=False),
        decoders={self._image_key: tfds.decode.SkipDecoding()})
    label_key = self._label_key
    labels = ds.map(lambda ex: ex[label_key],
                    num_parallel_calls=tf.data.AUTOTUNE)
    return np.fromiter(labels.as_numpy_iterator(), np.int64).astype(np.int32)



def _tfds_builder(name: str, data_dir):
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise UserError(
        f'--config.dataset={name!r}: no TFDS dataset of that name. Use a name '
        'from tfds.list_builders() (e.g. cifar10, mnist, fashion_mnist) or '
        'folder:/path/to/root for your own images.') from None
  if not tfds_download.is_prepared(builder):
    tfds_download.prepare(builder, name)
  return builder


def _supervised_keys(info, name):
  keys = info.supervised_keys
  if not keys or len(keys) != 2:
    raise UserError(f'TFDS dataset {name!r} has no (image, label) supervised '
                    'keys: it is not an image-classification dataset.')
  image_key, label_key = keys
  if (not isinstance(info.features[image_key], tfds.features.Image) or
      not isinstance(info.features[label_key], tfds.features.ClassLabel)):
    raise UserError(f'TFDS dataset {name!r} is not an image-classification '
                    'dataset (needs an Image feature and a ClassLabel).')
  return image_key, label_key

