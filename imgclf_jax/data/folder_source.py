"""An image folder as a source (source_base.Source): its layout, classes and
splits, a held-out validation part, and the files decoded to RGB. What its
scan reads (hidden files, links, subfolders) is folder_scan.py's."""

import os

import numpy as np
import tensorflow as tf

from imgclf_jax.data import dataset_name
from imgclf_jax.data import folder_scan
from imgclf_jax.data import preprocess
from imgclf_jax.data import source_base
from imgclf_jax.data import spec as spec_lib
from imgclf_jax.errors import UserError

FOLDER_PREFIX = dataset_name.FOLDER_PREFIX
FOLDER_VALIDATION_NAMES = ('validation', 'val', 'valid')
# A root with a subfolder of one of these names is in the splits layout
# (root/<split>/<class>/<file>); any other root in the classes layout
# (root/<class>/<file>). See FolderSource.
FOLDER_SPLIT_NAMES = ('train', *FOLDER_VALIDATION_NAMES, 'test')
SPLITS, CLASSES = 'splits', 'classes'
# The held-out validation part of a folder's train split is drawn with this
# seed, whatever the training seed is, so every run validates on the same
# images.
FOLDER_SPLIT_SEED = 20_240_613


class FolderSource(source_base.Source):
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

  def __init__(self, root: str, spec: spec_lib.SourceSpec,
               class_names=None):
    self._root = root = os.path.abspath(os.path.expanduser(root))
    dataset_name.check_folder(root)
    self._subfolders = sorted(d.name for d in os.scandir(root)
                              if folder_scan.is_dir(d))
    names = {*FOLDER_SPLIT_NAMES, spec.train_split, spec.validation_split,
             spec.eval_split} - {''}
    self.layout = SPLITS if names & set(self._subfolders) else CLASSES
    self._spec = spec
    self._files = {}  # logical split or ('folder', name) -> (paths, labels)
    self._splits = {}
    self._from_checkpoint = class_names is not None
    if class_names is None:
      self._class_names = self._training_classes()
      sizes = {k: self.num_examples(k) for k in ('train', 'validation')}
    else:
      self._class_names, sizes = tuple(class_names), {}
    self.info = source_base.DatasetInfo(name=f'{FOLDER_PREFIX}{root}',
                            class_names=self._class_names, channels=3,
                            num_examples=sizes)

  def _train_dir(self) -> str:
    """The folder of the training images (and classes): root/<train_split>,
    or root itself in the classes layout."""
    if self.layout == CLASSES:
      return self._root
    train = self._spec.train_split
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
    self._class_names = tuple(name for name, _ in folder_scan.class_folders(
        train_dir, {}))
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
                      f'images ({", ".join(folder_scan.IMAGE_EXTENSIONS)}).')
    return self._class_names

  def _validation_dir(self):
    """root/<validation folder> where there is one, else None (held out)."""
    if self.layout == CLASSES:
      if self._spec.validation_split:
        raise UserError(
            f'--config.validation_split={self._spec.validation_split!r}: '
            f'image folder {self._root} has no split folders (its subfolders '
            'are the classes): leave validation_split empty to hold out '
            'validation_fraction of each class.')
      return None
    name = self._spec.validation_split or next(
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
            everything, self._spec.validation_fraction)
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
    for name, folder in folder_scan.class_folders(split_dir, skipped):
      if name not in self._class_names:
        raise UserError(
            f'class folder {folder} is not {whose} '
            f'{list(self._class_names)}: rename or remove it.')
      found = folder_scan.images_under(folder, skipped)
      paths += found
      labels += [self._class_names.index(name)] * len(found)
    folder_scan.log_skipped(split_dir, skipped)
    if not paths:
      raise UserError(
          f'no images ({", ".join(folder_scan.IMAGE_EXTENSIONS)}) under '
          f'{split_dir}: lay the folder out as '
          f'{split_dir}/<class_name>/<image>.')
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

