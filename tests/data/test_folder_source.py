"""folder_source.py: an image folder's layout, classes and splits (a
stratified held-out validation part, a validation folder, the checkpoint's
classes), files at indices, and a UserError for every folder that cannot be
read."""

import os

import numpy as np
import pytest
import tensorflow as tf

from imgclf_jax.data import folder_source
from imgclf_jax.errors import UserError
from tests import helpers
from tests.helpers import assert_examples_at as _assert_examples_at
from tests.helpers import pairs as _pairs
from tests.helpers import train_in as _train


def test_folder_source_classes_splits_and_stratified_validation(tmp_path):
  root = helpers.make_image_folder(tmp_path, per_class=(20, 10, 30))
  source = helpers.make_source(helpers.small_config(f'folder:{root}'))
  assert source.info.class_names == ('class_0', 'class_1', 'class_2')
  assert source.info.num_examples == {'train': 54, 'validation': 6}
  train = [int(l) for _, l in source.examples('train').as_numpy_iterator()]
  val = [int(l) for _, l in source.examples('validation').as_numpy_iterator()]
  assert np.bincount(val).tolist() == [2, 1, 3]  # 10% of every class
  assert np.bincount(train).tolist() == [18, 9, 27]
  # The held-out images are the same whatever the training seed.
  other = helpers.make_source(
      helpers.small_config(f'folder:{root}', seed=123))
  np.testing.assert_array_equal(other._scan('validation')[0],
                                source._scan('validation')[0])
  assert not set(source._scan('train')[0]) & set(source._scan('validation')[0])


def test_folder_with_validation_dir_uses_it(tmp_path):
  root = helpers.make_image_folder(tmp_path, per_class=(6, 6),
                                   splits=('train', 'val'))
  source = helpers.make_source(helpers.small_config(f'folder:{root}'))
  assert source.info.num_examples == {'train': 12, 'validation': 12}


def test_a_root_of_class_folders_holds_out_validation(tmp_path):
  # The Keras / torchvision layout: root/<class>/<file>, no split folder.
  root = helpers.make_image_folder(tmp_path, per_class=(20, 10, 30),
                                   splits=('',))
  assert sorted(os.listdir(root)) == ['class_0', 'class_1', 'class_2']
  source = helpers.make_source(helpers.small_config(f'folder:{root}'))
  assert source.layout == folder_source.CLASSES
  assert source.info.class_names == ('class_0', 'class_1', 'class_2')
  assert source.info.num_examples == {'train': 54, 'validation': 6}
  assert np.bincount(source.labels('validation')).tolist() == [2, 1, 3]
  assert not set(source.files('train')) & set(source.files('validation'))
  # The same images as a root/train/<class> folder would hold out.
  split_root = helpers.make_image_folder(tmp_path / 'split',
                                         per_class=(20, 10, 30))
  split = helpers.make_source(helpers.small_config(f'folder:{split_root}'))
  assert split.layout == folder_source.SPLITS
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
    helpers.make_source(helpers.small_config(f'folder:{root}',
                                              validation_split='val'))


@pytest.mark.parametrize('split, layout', [
    ('train', folder_source.SPLITS), ('val', folder_source.SPLITS),
    ('test', folder_source.SPLITS), ('holdout', folder_source.SPLITS),
    ('photos', folder_source.CLASSES)])
def test_how_a_root_is_recognised(tmp_path, split, layout):
  # A subfolder named as a split (or as the config's eval_split) makes the
  # splits layout; training then needs its train split.
  root = helpers.make_image_folder(tmp_path, per_class=(3, 3),
                                   splits=(split,))
  config = helpers.small_config(f'folder:{root}', eval_split='holdout')
  classes = ('class_0', 'class_1')
  assert helpers.make_source(config, classes).layout == layout
  if split == 'train':
    assert helpers.make_source(config).info.class_names == classes
  elif layout == folder_source.SPLITS:
    with pytest.raises(UserError, match=rf"image folder {root} has split "
                       rf"folders \['{split}'\] but no 'train' subfolder: "
                       r'lay it out as .*/train/<class_name>/<image>, or with '
                       r'no split folders as .*/<class_name>/<image>\.'):
      helpers.make_source(config)
  else:  # one class folder, 'photos'
    with pytest.raises(UserError, match=r"1 class folder\(s\) \['photos'\]"):
      helpers.make_source(config)


def test_an_evaluation_folder_takes_the_checkpoints_classes(tmp_path):
  # Only root/test/<class>/: no train split to read the classes from; class_1
  # has no images here, and the labels are the checkpoint's indices.
  root = tmp_path / 'eval_only'
  helpers.make_image_folder(root, per_class=(2, 0, 3), splits=('test',))
  os.rmdir(root / 'test' / 'class_1')
  classes = ('class_0', 'class_1', 'class_2')
  config = helpers.small_config(f'folder:{root}', eval_split='test')
  source = helpers.make_source(config, class_names=classes)
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
  other = helpers.make_source(config, class_names=('class_0', 'class_2',
                                                    'class_9'))
  with pytest.raises(UserError, match=r"class folder .*/test/class_0 is not "
                     r"the checkpoint's classes \['class_9', 'class_8'\]: "
                     r'rename or remove it\.'):
    helpers.make_source(config, class_names=('class_9', 'class_8')).labels(
        'test')
  assert other.labels('test').tolist() == [0, 0, 1, 1, 1]


def test_folder_examples_at_indices_read_only_those_files(tmp_path):
  root = helpers.make_image_folder(tmp_path, per_class=(5, 5, 5))
  source = helpers.make_source(helpers.small_config(f'folder:{root}'))
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


def test_missing_folder(tmp_path):
  with pytest.raises(UserError, match=r'no such folder'):
    _train(helpers.small_config(f'folder:{tmp_path}/nope'), tmp_path / 'run')


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
