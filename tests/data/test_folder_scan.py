"""folder_scan.py: what a folder's scan reads: hidden files, links and
subfolders."""

import os

import numpy as np
import pytest

from imgclf_jax.errors import UserError
from tests import helpers
from tests.helpers import pairs as _pairs
from tests.helpers import train_in as _train


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
    source = helpers.make_source(helpers.small_config(f'folder:{root}'))
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
    source = helpers.make_source(helpers.small_config(
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
  source = helpers.make_source(helpers.small_config(
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
