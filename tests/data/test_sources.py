"""sources.py: the source a dataset name picks."""

import pytest
import tensorflow_datasets as tfds

from imgclf_jax.data import folder_source
from imgclf_jax.data import tfds_source
from imgclf_jax.errors import UserError
from tests import helpers
from tests.helpers import train_in as _train


def test_path_without_folder_prefix(tmp_path):
  with pytest.raises(UserError, match=r'write --config.dataset=folder:'):
    _train(helpers.small_config(str(tmp_path)), tmp_path / 'run')


def test_the_name_picks_an_image_folder_or_a_tfds_dataset(tmp_path):
  root = helpers.make_image_folder(tmp_path, per_class=(3, 3))
  folder = helpers.make_source(helpers.small_config(f'  folder:{root} '))
  assert isinstance(folder, folder_source.FolderSource)
  assert folder.info.name == f'folder:{root}'
  with tfds.testing.mock_data(num_examples=10):
    mnist = helpers.make_source(helpers.small_config('mnist'))
  assert isinstance(mnist, tfds_source.TfdsSource)
  assert mnist.info.name == 'mnist'
