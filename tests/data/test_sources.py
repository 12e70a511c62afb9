"""sources.py: TFDS and image-folder sources (classes, splits, a held-out
validation split, examples at indices, labels), and a UserError naming every
dataset that cannot be read."""

import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from imgclf_jax.data import input_pipeline
from imgclf_jax.data import sources
from imgclf_jax.errors import UserError
from tests import helpers
from tests.helpers import assert_examples_at as _assert_examples_at
from tests.helpers import pairs as _pairs
from tests.helpers import train_in as _train


def test_folder_source_classes_splits_and_stratified_validation(tmp_path):
  root = helpers.make_image_folder(tmp_path, per_class=(20, 10, 30))
  source = sources.make_source(helpers.small_config(f'folder:{root}'))
  assert source.info.class_names == ('class_0', 'class_1', 'class_2')
  assert source.info.num_examples == {'train': 54, 'validation': 6}
  train = [int(l) for _, l in source.examples('train').as_numpy_iterator()]
  val = [int(l) for _, l in source.examples('validation').as_numpy_iterator()]
  assert np.bincount(val).tolist() == [2, 1, 3]  # 10% of every class
  assert np.bincount(train).tolist() == [18, 9, 27]
  # The held-out images are the same whatever the training seed.
  other = sources.make_source(
      helpers.small_config(f'folder:{root}', seed=123))
  np.testing.assert_array_equal(other._scan('validation')[0],
                                source._scan('validation')[0])
  assert not set(source._scan('train')[0]) & set(source._scan('validation')[0])


def test_folder_with_validation_dir_uses_it(tmp_path):
  root = helpers.make_image_folder(tmp_path, per_class=(6, 6),
                                   splits=('train', 'val'))
  source = sources.make_source(helpers.small_config(f'folder:{root}'))
  assert source.info.num_examples == {'train': 12, 'validation': 12}


def test_a_root_of_class_folders_holds_out_validation(tmp_path):
  # The Keras / torchvision layout: root/<class>/<file>, no split folder.
  root = helpers.make_image_folder(tmp_path, per_class=(20, 10, 30),
                                   splits=('',))
  assert sorted(os.listdir(root)) == ['class_0', 'class_1', 'class_2']
  source = sources.make_source(helpers.small_config(f'folder:{root}'))
  assert source.layout == sources.CLASSES
  assert source.info.class_names == ('class_0', 'class_1', 'class_2')
  assert source.info.num_examples == {'train': 54, 'validation': 6}
  assert np.bincount(source.labels('validation')).tolist() == [2, 1, 3]
  assert not set(source.files('train')) & set(source.files('validation'))
  # The same images as a root/train/<class> folder would hold out.
  split_root = helpers.make_image_folder(tmp_path / 'split',
                                         per_class=(20, 10, 30))
  split = sources.make_source(helpers.small_config(f'folder:{split_root}'))
  assert split.layout == sources.SPLITS
  assert [os.path.relpath(f, split_root + '/train')
          for f in split.files('validation')] == [
              os.path.relpath(f, root) for f in source.files('validation')]
  with pytest.raises(UserError, match=r"has no split 'test': its subfolders "
                     r"are classes, so its splits are 'train' and "
                     r"'validation'"):
    source.labels('test')
  with pytest.raises(UserError, match=r"validation_split='val': image folder "
                     r'.* has no split folders \(its subfolders are the '
                     r'classes\): leave validation_split empty'):
    sources.make_source(helpers.small_config(f'folder:{root}',
                                              validation_split='val'))


@pytest.mark.parametrize('split, layout', [
    ('train', sources.SPLITS), ('val', sources.SPLITS),
    ('test', sources.SPLITS), ('holdout', sources.SPLITS),
    ('photos', sources.CLASSES)])
def test_how_a_root_is_recognised(tmp_path, split, layout):
  # A subfolder named as a split (or as the config's eval_split) makes the
  # splits layout; training then needs its train split.
  root = helpers.make_image_folder(tmp_path, per_class=(3, 3),
                                   splits=(split,))
  config = helpers.small_config(f'folder:{root}', eval_split='holdout')
  classes = ('class_0', 'class_1')
  assert sources.make_source(config, classes).layout == layout
  if split == 'train':
    assert sources.make_source(config).info.class_names == classes
  elif layout == sources.SPLITS:
    with pytest.raises(UserError, match=rf"image folder {root} has split "
                       rf"folders \['{split}'\] but no 'train' subfolder: "
                       r'lay it out as .*/train/<class_name>/<image>, or with '
                       r'no split folders as .*/<class_name>/<image>\.'):
      sources.make_source(config)
  else:  # one class folder, 'photos'
    with pytest.raises(UserError, match=r"1 class folder\(s\) \['photos'\]"):
      sources.make_source(config)


def test_an_evaluation_folder_takes_the_checkpoints_classes(tmp_path):
  # Only root/test/<class>/: no train split to read the classes from; class_1
  # has no images here, and the labels are the checkpoint's indices.
  root = tmp_path / 'eval_only'
  helpers.make_image_folder(root, per_class=(2, 0, 3), splits=('test',))
  os.rmdir(root / 'test' / 'class_1')
  classes = ('class_0', 'class_1', 'class_2')
  config = helpers.small_config(f'folder:{root}', eval_split='test')
  source = sources.make_source(config, class_names=classes)
  assert source.info.class_names == classes
  assert source.labels('test').tolist() == [0, 0, 2, 2, 2]
  assert source.num_examples('test') == 5
  with pytest.raises(UserError, match=r"has split folders \['test'\] but no "
                     r"'train' subfolder.* It holds no validation folder "
                     r'either: evaluate one of its splits, e\.g\. '
                     r'--config\.eval_split=test\.'):
    source.labels('validation')
  with pytest.raises(UserError, match=r"has no split 'valid' \(no folder "
                     r".*/valid; found \['test'\]\)"):
    source.labels('valid')
  # A class the checkpoint does not know is refused.
  other = sources.make_source(config, class_names=('class_0', 'class_2',
                                                    'class_9'))
  with pytest.raises(UserError, match=r"class folder .*/test/class_0 is not "
                     r"the checkpoint's classes \['class_9', 'class_8'\]: "
                     r'rename or remove it\.'):
    sources.make_source(config, class_names=('class_9', 'class_8')).labels(
        'test')
  assert other.labels('test').tolist() == [0, 0, 1, 1, 1]


def test_tfds_source_holds_out_validation_from_train():
  config = helpers.small_config('mnist', validation_split='')
  with tfds.testing.mock_data(num_examples=40):
    source = sources.make_source(config)
    assert source.info.channels == 1
    assert source.info.class_names == tuple(str(i) for i in range(10))
    assert source._resolve('train') == 'train[:36]'
    assert source._resolve('validation') == 'train[36:]'
    pipeline = input_pipeline.InputPipeline(source, config)
    batch = next(pipeline.train_batches(0))
  assert batch['image'].shape == (8, 16, 16, 1)
  assert batch['label'].shape == (8, 10)


def test_tfds_sliced_train_split_needs_its_validation_split():
  # 'train[:50%][k:]' is no TFDS split: the user names both parts.
  config = helpers.small_config('mnist', train_split='train[:50%]')
  with tfds.testing.mock_data(num_examples=40):
    with pytest.raises(UserError, match=r"train_split='train\[:50%\]' is a "
                       r"slice.*--config.validation_split='train\[90%:\]'"):
      sources.make_source(config)
    summed = helpers.small_config('mnist', train_split='train+test')
    with pytest.raises(UserError, match=r"'train\+test' is a slice or a sum"):
      sources.make_source(summed)
    config.validation_split = 'train[50%:]'
    source = sources.make_source(config)
    assert source._resolve('train') == 'train[:50%]'
    assert source._resolve('validation') == 'train[50%:]'


def test_folder_examples_at_indices_read_only_those_files(tmp_path):
  root = helpers.make_image_folder(tmp_path, per_class=(5, 5, 5))
  source = sources.make_source(helpers.small_config(f'folder:{root}'))
  full = _pairs(source.examples('train'))
  # Any order and repeats: the sorted distinct positions, in split order.
  _assert_examples_at(_pairs(source.examples('train', [7, 1, 11, 1])), full,
                      (1, 7, 11))
  # A broken file that is not chosen is never read.
  with open(source.files('train')[0], 'wb') as f:
    f.write(b'not an image')
  _assert_examples_at(_pairs(source.examples('train', [1, 7])), full, (1, 7))
  with pytest.raises(tf.errors.OpError):
    _pairs(source.examples('train'))


def test_tfds_examples_at_indices():
  config = helpers.small_config('mnist', validation_split='')
  with tfds.testing.mock_data(num_examples=40):
    source = sources.make_source(config)
    full = _pairs(source.examples('validation'))
    got = _pairs(source.examples('validation', [3, 0]))
  # (mock_data does not slice: the split holds all 40 mock examples.)
  assert len(full) > 3
  _assert_examples_at(got, full, (0, 3))


def test_tfds_class_counts_read_labels_only():
  config = helpers.small_config('mnist', validation_split='')
  with tfds.testing.mock_data(num_examples=40):
    source = sources.make_source(config)
    for split in ('train', 'validation'):
      from_examples = [int(l) for _, l in
                       source.examples(split).as_numpy_iterator()]
      np.testing.assert_array_equal(source.labels(split), from_examples)
      assert len(from_examples) == source.num_examples(split)


# ----------------------------------------------------------------------------
# Datasets that cannot be read


def test_unknown_tfds_name(tmp_path):
  with pytest.raises(UserError, match=r"'no_such_dataset': no TFDS dataset"):
    _train(helpers.small_config('no_such_dataset'), tmp_path)


def test_missing_folder(tmp_path):
  with pytest.raises(UserError, match=r'no such folder'):
    _train(helpers.small_config(f'folder:{tmp_path}/nope'), tmp_path / 'run')


def test_path_without_folder_prefix(tmp_path):
  with pytest.raises(UserError, match=r'write --config.dataset=folder:'):
    _train(helpers.small_config(str(tmp_path)), tmp_path / 'run')


def test_folder_without_images(tmp_path):
  os.makedirs(tmp_path / 'data' / 'train' / 'cats')
  (tmp_path / 'data' / 'train' / 'cats' / 'notes.txt').write_text('hi')
  with pytest.raises(UserError, match=r'no images .* under .*train'):
    _train(helpers.small_config(f'folder:{tmp_path}/data'), tmp_path / 'run')


def test_folder_with_one_class(tmp_path):
  root = helpers.make_image_folder(tmp_path / 'data', per_class=(5,))
  with pytest.raises(UserError, match=r'1 class folder.*at least two'):
    _train(helpers.small_config(f'folder:{root}'), tmp_path / 'run')


def test_corrupt_image_is_named(tmp_path):
  root = helpers.make_image_folder(tmp_path / 'data', per_class=(6, 6))
  bad = os.path.join(root, 'train', 'class_1', 'broken.jpg')
  with open(bad, 'wb') as f:
    f.write(b'\xff\xd8\xff\xe0 this is not really a JPEG')
  with pytest.raises(UserError, match=r'cannot decode image file .*broken\.jpg'):
    _train(helpers.small_config(f'folder:{root}'), tmp_path / 'run')


# ----------------------------------------------------------------------------
# What a folder's scan reads: hidden files, links, subfolders


def test_hidden_files_and_folders_are_skipped_and_counted(tmp_path, caplog):
  root = helpers.make_image_folder(tmp_path / 'data', per_class=(5, 5))
  train = tmp_path / 'data' / 'train'
  # macOS AppleDouble files (not images), a notebook's checkpoint folder (a
  # copy of images: no class) and a hidden folder inside a class.
  (train / 'class_0' / '._000.png').write_bytes(b'\x00\x05\x16\x07 resource')
  (train / '.ipynb_checkpoints').mkdir()
  (train / 'class_1' / '.thumbs').mkdir()
  for copy in (train / '.ipynb_checkpoints' / 'a.png',
               train / 'class_1' / '.thumbs' / 'b.png'):
    copy.write_bytes((train / 'class_1' / '000.png').read_bytes())
  (train / 'class_1' / 'labels.txt').write_text('not an image')
  with caplog.at_level('WARNING'):
    source = sources.make_source(helpers.small_config(f'folder:{root}'))
  assert source.info.class_names == ('class_0', 'class_1')
  assert source.info.num_examples == {'train': 8, 'validation': 2}
  assert not [f for f in source._scan('train')[0] if '/.' in f]
  assert (f"Image folder {train}: skipped 3 hidden file(s) or folder(s) "
          f"(names starting with '.'), e.g. {train}/.ipynb_checkpoints; 1 "
          f'file(s) without an image extension, e.g. '
          f'{train}/class_1/labels.txt.') in caplog.text
  _pairs(source.examples('train'))  # every listed file decodes


def test_class_folders_are_read_recursively_without_linked_folders(tmp_path,
                                                                   caplog):
  root = helpers.make_image_folder(tmp_path / 'data', per_class=(4, 4))
  cls = tmp_path / 'data' / 'train' / 'class_0'
  helpers.make_image_folder(cls / 'sub', per_class=(2,), splits=('deeper',))
  (cls / 'zz_link').symlink_to(tmp_path / 'data' / 'train' / 'class_1')
  with caplog.at_level('WARNING'):
    source = sources.make_source(helpers.small_config(
        f'folder:{root}', validation_split='train'))
  files = [os.path.relpath(f, cls) for f in source.files('train')[:6]]
  # A folder's files by name, then its subfolders' (os.walk's order).
  assert files == ['000.png', '001.png', '002.png', '003.png',
                   'sub/deeper/class_0/000.png', 'sub/deeper/class_0/001.png']
  assert source.labels('train').tolist() == [0] * 6 + [1] * 4
  assert ('1 symbolic link(s) to folders inside class folders (not followed), '
          f'e.g. {cls}/zz_link') in caplog.text


def test_linked_class_folders(tmp_path):
  root = helpers.make_image_folder(tmp_path / 'data', per_class=(4, 4))
  elsewhere = helpers.make_image_folder(tmp_path / 'more', per_class=(3,))
  train = tmp_path / 'data' / 'train'
  (train / 'class_2').symlink_to(os.path.join(elsewhere, 'train', 'class_0'))
  source = sources.make_source(helpers.small_config(
      f'folder:{root}', validation_split='train'))
  assert source.info.class_names == ('class_0', 'class_1', 'class_2')
  assert np.bincount(source.labels('train')).tolist() == [4, 4, 3]


@pytest.mark.parametrize('name, target, message', [
    # The split's own folder, or one above it: every image again as a class.
    ('zz_all', '.', r'class folder {train}/zz_all is a link to {train}, the '
                    r'split folder {train} or a folder above it: every image '
                    r"would be read again as class 'zz_all'\. Remove the "
                    r'link\.'),
    ('zz_root', '..', r'class folder {train}/zz_root is a link to {root}, the '
                      r'split folder'),
    # Another class, or a folder inside one: images under two labels.
    ('class_2', 'class_0', r'class folders {train}/class_0 and '
                           r'{train}/class_2 are the same folder'),
    ('class_2', 'class_0/sub', r'class folder {train}/class_2 '
                               r'\({train}/class_0/sub\) lies inside class '
                               r'folder {train}/class_0'),
    # A link to itself (ELOOP) and one to nothing.
    ('loop', 'loop', r'{train}/loop is a symbolic link that cannot be '
                     r'followed \(Too many levels of symbolic links\): remove '
                     r'it'),
    ('class_1/extra.png', 'gone.png', r'{train}/class_1/extra.png is a '
                                      r'symbolic link that cannot be followed '
                                      r'\(No such file or directory\)'),
    ('class_1/self.jpg', 'self.jpg', r'{train}/class_1/self.jpg is a symbolic '
                                     r'link that cannot be followed'),
])
def test_links_that_would_mislabel_or_loop_are_refused(tmp_path, name, target,
                                                       message):
  root = helpers.make_image_folder(tmp_path / 'data', per_class=(4, 4))
  train = os.path.join(root, 'train')
  os.makedirs(os.path.join(train, 'class_0', 'sub'))
  os.symlink(target, os.path.join(train, name))
  with pytest.raises(UserError, match=message.format(train=train, root=root)):
    _train(helpers.small_config(f'folder:{root}'), tmp_path / 'run')
  assert not os.path.exists(tmp_path / 'run')
