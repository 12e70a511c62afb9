"""Where images come from: a TFDS dataset or an image folder.

Both kinds of source give the same thing to the input pipeline: a
`DatasetInfo` (class names, channels, split sizes) and, per split, a
deterministic `tf.data.Dataset` of `(image uint8 [H, W, C], label int32)`,
and the same examples still encoded (`records`, for decoding only a crop).
Everything after that (resize, cache, shuffle, augment, batch) is shared code in
`input_pipeline.py`.

Logical splits: 'train' and 'validation' are resolved once from the config
(`train_split`, `validation_split`, `validation_fraction`); any other name is
passed to the source as it is (e.g. 'test', or a TFDS slice 'test[:50%]').
"""

import dataclasses
import os
import pathlib

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from imgclf_jax.data import dataset_name
from imgclf_jax.data import preprocess
from imgclf_jax.data import tfds_download
from imgclf_jax.errors import UserError

# TF must leave any GPU to JAX: tf.data runs on the host.
tf.config.set_visible_devices([], 'GPU')

FOLDER_PREFIX = dataset_name.FOLDER_PREFIX
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif')
FOLDER_VALIDATION_NAMES = ('validation', 'val', 'valid')
# A root with a subfolder of one of these names is in the splits layout
# (root/<split>/<class>/<file>); any other root in the classes layout
# (root/<class>/<file>). See FolderSource.
FOLDER_SPLIT_NAMES = ('train', *FOLDER_VALIDATION_NAMES, 'test')
SPLITS, CLASSES = 'splits', 'classes'
# The held-out validation part of a folder's train split is drawn with this
# seed, whatever config.seed is, so every run validates on the same images.
FOLDER_SPLIT_SEED = 20_240_613
# The sample of a split that the normalisation statistics are measured on
# (config.normalization_sample_size) is drawn with this seed, whatever
# config.seed is and whichever process draws it (Source.sample_indices).
SAMPLE_SEED = 20_260_131
# A TFDS split's sample is this many contiguous runs of records
# (TfdsSource.sample_indices), each read as a TFDS slice.
SAMPLE_BLOCKS = 64


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  name: str                     # config.dataset as given
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
    SAMPLE_SEED from the positions 0..n-1 of the whole split (not config.seed,
    not a process's share), so every run and every process draws the same.
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


# ----------------------------------------------------------------------------
# TFDS


class TfdsSource(Source):
  """Any TFDS image-classification dataset, read with `tfds.builder`."""

  def __init__(self, name: str, config):
    self._builder = _tfds_builder(name, config.data_dir)
    self._counted = {}
    info = self._builder.info
    image_key, label_key = _supervised_keys(info, name)
    self._image_key, self._label_key = image_key, label_key
    available = list(info.splits.keys())
    train = config.train_split
    if config.validation_split:
      validation = config.validation_split
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
      held_out = max(1, int(round(n * config.validation_fraction)))
      validation = f'{train}[{n - held_out}:]'
      train = f'{train}[:{n - held_out}]'
    self._splits = {'train': train, 'validation': validation}
    channels = info.features[image_key].shape[-1]
    self.info = DatasetInfo(
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
    n = self._count(split)  # clear error for unknown splits
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
      ds = at_indices(ds, n, indices)
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
    rng = np.random.default_rng(SAMPLE_SEED)
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


def at_indices(ds: tf.data.Dataset, n: int, indices) -> tf.data.Dataset:
  """The elements of `ds` (n of them) at the sorted `indices`, in order: one
  pass over `ds` that drops the others."""
  chosen = np.zeros(n, bool)
  chosen[np.asarray(indices, np.int64)] = True
  chosen = tf.constant(chosen)
  return ds.enumerate().filter(lambda i, element: chosen[i]).map(
      lambda i, element: element)


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


# ----------------------------------------------------------------------------
# Image folders


class FolderSource(Source):
  """Images of an image folder, decoded to RGB, in one of two layouts:

    splits   root/<split>/<class_name>/<file>: when one of root's subfolders
             is named train, validation, val, valid or test (or the config's
             train_split, validation_split or eval_split). Training reads
             root/<train_split>; validation is root/<validation_split>, else
             root/validation, root/val or root/valid, else validation_fraction
             of each class of the train split. Any other split is its folder.
    classes  root/<class_name>/<file> (the Keras / torchvision layout): any
             other root. Its splits are 'train' and 'validation', the latter
             validation_fraction of each class.

  Training takes the classes from the train split's (or root's) folders.
  With `class_names` (eval and predict: the checkpoint's) those are the
  classes: a split's class folders must be among them (it may lack some),
  and a split is read without the train split (root/test/<class>/ alone).
  """

  def __init__(self, root: str, config, class_names=None):
    self._root = root = os.path.abspath(os.path.expanduser(root))
    dataset_name.check_folder(root)
    self._subfolders = sorted(d.name for d in os.scandir(root) if _is_dir(d))
    names = {*FOLDER_SPLIT_NAMES, config.train_split, config.validation_split,
             config.eval_split} - {''}
    self.layout = SPLITS if names & set(self._subfolders) else CLASSES
    self._config = config
    self._files = {}  # logical split or ('folder', name) -> (paths, labels)
    self._splits = {}
    self._from_checkpoint = class_names is not None
    if class_names is None:
      self._class_names = self._training_classes()
      sizes = {k: self.num_examples(k) for k in ('train', 'validation')}
    else:
      self._class_names, sizes = tuple(class_names), {}
    self.info = DatasetInfo(name=f'{FOLDER_PREFIX}{root}',
                            class_names=self._class_names, channels=3,
                            num_examples=sizes)

  def _train_dir(self) -> str:
    """The folder of the training images (and classes): root/<train_split>,
    or root itself in the classes layout."""
    if self.layout == CLASSES:
      return self._root
    train = self._config.train_split
    if train not in self._subfolders:
      found = [d for d in self._subfolders if not d.startswith('.')]
      raise UserError(
          f'image folder {self._root} has split folders {found} but no '
          f'{train!r} subfolder: lay it out as {self._root}/{train}/'
          f'<class_name>/<image>, or with no split folders as '
          f'{self._root}/<class_name>/<image>.')
    return os.path.join(self._root, train)

  def _training_classes(self) -> tuple[str, ...]:
    """The class folders of the train split, checked: at least two, each
    holding images."""
    train_dir = self._train_dir()
    self._class_names = tuple(name for name, _ in _class_folders(train_dir, {}))
    labels = self._scan_folder(train_dir)[1]
    if len(self._class_names) < 2:
      raise UserError(
          f'image folder {train_dir} has {len(self._class_names)} class '
          f'folder(s) {list(self._class_names)}: a classifier needs at least '
          f'two, as {train_dir}/<class_name>/<image>.')
    counts = np.bincount(labels, minlength=len(self._class_names))
    empty = [self._class_names[i] for i in np.flatnonzero(counts == 0)]
    if empty:
      raise UserError(f'class folder(s) {empty} in {train_dir} hold no '
                      f'images ({", ".join(IMAGE_EXTENSIONS)}).')
    return self._class_names

  def _validation_dir(self):
    """root/<validation folder> where there is one, else None (held out)."""
    if self.layout == CLASSES:
      if self._config.validation_split:
        raise UserError(
            f'--config.validation_split={self._config.validation_split!r}: '
            f'image folder {self._root} has no split folders (its subfolders '
            'are the classes): leave validation_split empty to hold out '
            'validation_fraction of each class.')
      return None
    name = self._config.validation_split or next(
        (d for d in FOLDER_VALIDATION_NAMES if d in self._subfolders), None)
    return os.path.join(self._root, name) if name else None

  def _scan(self, split: str):
    """(paths, labels) of a logical split ('train', 'validation') or of the
    split folder root/<split>."""
    if split in self._files:
      return self._files[split]
    if split in ('train', 'validation'):
      validation_dir = self._validation_dir()
      if split == 'validation' and validation_dir:
        self._files[split] = self._scan_folder(validation_dir)
      elif validation_dir:
        self._files[split] = self._scan_folder(self._train_dir())
      else:
        try:
          everything = self._scan_folder(self._train_dir())
        except UserError as e:
          if split == 'train' or not self._from_checkpoint:
            raise
          raise UserError(
              f'{e} It holds no validation folder either: evaluate one of '
              'its splits, e.g. --config.eval_split=test.') from None
        self._files['train'], self._files['validation'] = _stratified_split(
            everything, self._config.validation_fraction)
      return self._files[split]
    if self.layout == CLASSES:
      raise UserError(
          f'image folder {self._root} has no split {split!r}: its subfolders '
          "are classes, so its splits are 'train' and 'validation' "
          '(validation_fraction of each class held out). Use one of them, or '
          f'lay the folder out as {self._root}/<split>/<class_name>/<image>.')
    return self._scan_folder(os.path.join(self._root, split))

  def _scan_folder(self, split_dir: str):
    key = ('folder', split_dir)
    if key in self._files:
      return self._files[key]
    if not os.path.isdir(split_dir):
      raise UserError(f'image folder {self._root} has no split '
                      f'{os.path.basename(split_dir)!r} (no folder '
                      f'{split_dir}; found {self._subfolders or "none"}).')
    paths, labels, skipped = [], [], {}
    whose = ("the checkpoint's classes" if self._from_checkpoint else
             'a class of the training split')
    for name, folder in _class_folders(split_dir, skipped):
      if name not in self._class_names:
        raise UserError(
            f'class folder {folder} is not {whose} '
            f'{list(self._class_names)}: rename or remove it.')
      found = _images_under(folder, skipped)
      paths += found
      labels += [self._class_names.index(name)] * len(found)
    _log_skipped(split_dir, skipped)
    if not paths:
      raise UserError(
          f'no images ({", ".join(IMAGE_EXTENSIONS)}) under {split_dir}: lay '
          f'the folder out as {split_dir}/<class_name>/<image>.')
    result = (np.array(paths), np.array(labels, np.int32))
    self._files[key] = result
    return result

  def _count(self, split: str) -> int:
    return len(self._scan(split)[0])

  def labels(self, split: str) -> np.ndarray:
    return self._scan(self._resolve(split))[1]

  def files(self, split: str):
    return self._scan(self._resolve(split))[0]

  def _load(self, split: str, indices=None) -> tf.data.Dataset:
    return self._records(split, indices).map(
        decode_file, num_parallel_calls=tf.data.AUTOTUNE)

  def _records(self, split: str, indices=None) -> tf.data.Dataset:
    paths, labels = self._scan(split)
    if indices is not None:
      paths, labels = paths[indices], labels[indices]
    return tf.data.Dataset.from_tensor_slices((paths, labels))

  def read(self, record):
    return tf.io.read_file(record)

  def describe_error(self, split: str, error: Exception) -> str:
    bad = find_unreadable(self._scan(self._resolve(split))[0])
    if bad:
      path, reason = bad
      return (f'cannot decode image file {path} ({reason}): remove or '
              're-save it, then run the same command again.')
    return super().describe_error(split, error)


def _is_dir(entry) -> bool:
  """A directory entry is a folder or a link to one (False for a link that
  cannot be followed)."""
  try:
    return entry.is_dir()
  except OSError:
    return False


def _follow(entry) -> bool:
  """Whether `entry` (a file or folder, or a link to one) is a folder;
  a symbolic link that is broken or loops is refused by name."""
  try:
    is_dir = entry.is_dir()
    if entry.is_symlink() and not is_dir:
      os.stat(entry.path)  # a broken link raises
    return is_dir
  except OSError as e:
    raise UserError(
        f'{entry.path} is a symbolic link that cannot be followed '
        f'({e.strerror}): remove it or point it at an existing image or '
        'folder.') from None


def _sorted_entries(folder, skipped):
  """The entries of `folder` by name, without hidden ones (names starting
  with '.', e.g. AppleDouble ._0000.jpg files), which are counted in
  `skipped`."""
  with os.scandir(folder) as it:
    entries = sorted(it, key=lambda e: e.name)
  for e in entries:
    if e.name.startswith('.'):
      skipped.setdefault('hidden', []).append(e.path)
  return [e for e in entries if not e.name.startswith('.')]


def _class_folders(split_dir, skipped):
  """The class folders of `split_dir` as sorted (name, path): links to
  folders are followed, unless they lead to the split folder itself or one
  of its parents, or to the same images as another class (their images would
  be read again under another label)."""
  folders = []
  for e in _sorted_entries(split_dir, skipped):
    if _follow(e):
      folders.append((e.name, e.path))
    else:
      skipped.setdefault('other', []).append(e.path)
  split_real = os.path.realpath(split_dir)
  seen = {}  # real path -> class folder
  for name, path in folders:
    target = os.path.realpath(path)
    if split_real == target or split_real.startswith(target + os.sep):
      raise UserError(
          f'class folder {path} is a link to {target}, the split folder '
          f'{split_dir} or a folder above it: every image would be read again '
          f'as class {name!r}. Remove the link.')
    if target in seen:
      raise UserError(
          f'class folders {seen[target]} and {path} are the same folder '
          f'({target}): its images would be read under two labels. Remove '
          'one of them (or the link).')
    seen[target] = path
  for target, path in seen.items():
    for parent in map(str, pathlib.Path(target).parents):
      if parent in seen:
        raise UserError(
            f'class folder {path} ({target}) lies inside class folder '
            f'{seen[parent]}: its images would be read under two labels. '
            'Remove one of them (or the link).')
  return folders


def _images_under(folder, skipped) -> list:
  """The image files under a class folder, in os.walk's order (a folder's
  files by name, then its subfolders', by name). Class folders are read
  recursively; hidden files and folders, links to folders and files without
  an image extension are left out and counted in `skipped`."""
  found, stack = [], [folder]
  while stack:
    subfolders = []
    for e in _sorted_entries(stack.pop(), skipped):
      if _follow(e):
        if e.is_symlink():
          skipped.setdefault('linked folders', []).append(e.path)
        else:
          subfolders.append(e.path)
      elif e.name.lower().endswith(IMAGE_EXTENSIONS):
        found.append(e.path)
      else:
        skipped.setdefault('other', []).append(e.path)
    stack += reversed(subfolders)
  return found


_SKIPPED = {'hidden': "hidden file(s) or folder(s) (names starting with '.')",
            'linked folders': 'symbolic link(s) to folders inside class '
                              'folders (not followed)',
            'other': 'file(s) without an image extension'}


def _log_skipped(split_dir, skipped):
  if skipped:
    logging.warning('Image folder %s: skipped %s.', split_dir, '; '.join(
        f'{len(paths)} {_SKIPPED[kind]}, e.g. {paths[0]}'
        for kind, paths in skipped.items()))


def decode_file(path, label):
  """(an image file's path, label) -> (uint8 RGB image, label)."""
  return preprocess.decode_image(tf.io.read_file(path), channels=3), label


def find_unreadable(paths):
  """First file TF cannot decode, as (path, reason); None if all decode."""
  for path in paths:
    try:
      decode_file(tf.constant(path), 0)
    except tf.errors.OpError as e:
      return path, preprocess.decode_error_reason(e)
  return None


def _stratified_split(files, fraction):
  """Holds out `fraction` of every class (at least one image where it can)."""
  paths, labels = files
  rng = np.random.default_rng(FOLDER_SPLIT_SEED)
  train_idx, val_idx = [], []
  for c in np.unique(labels):
    idx = np.flatnonzero(labels == c)
    idx = idx[rng.permutation(len(idx))]
    k = int(round(len(idx) * fraction))
    if len(idx) > 1:
      k = min(max(k, 1), len(idx) - 1)
    else:
      k = 0
    val_idx.append(idx[:k])
    train_idx.append(idx[k:])
  train_idx = np.sort(np.concatenate(train_idx))
  val_idx = np.sort(np.concatenate(val_idx))
  if not len(val_idx):
    raise UserError('the image folder has too few images to hold out a '
                    'validation split: add images or a validation/ folder.')
  return (paths[train_idx], labels[train_idx]), (paths[val_idx], labels[val_idx])


def canonical_dataset(name: str) -> str:
  """config.dataset with a folder root made absolute (cwd-independent)."""
  name = name.strip()
  if name.startswith(FOLDER_PREFIX) and len(name) > len(FOLDER_PREFIX):
    root = os.path.expanduser(name[len(FOLDER_PREFIX):])
    return FOLDER_PREFIX + os.path.abspath(root)
  return name


def make_source(config, class_names=None) -> Source:
  """The dataset named by config.dataset, with its splits resolved.

  `class_names` (eval, predict): the checkpoint's classes, which an image
  folder takes instead of reading them from its train split.
  """
  name = config.dataset.strip()
  if name.startswith(FOLDER_PREFIX):
    return FolderSource(name[len(FOLDER_PREFIX):], config, class_names)
  dataset_name.check(name)
  return TfdsSource(name, config)
