"""setup.py: a corrupt validation image stops training before it starts
(init_from_data's sample: tests/data/test_data_scale.py)."""

import os

import pytest

from imgclf_jax.data import sources
from imgclf_jax.errors import UserError
from tests import helpers
from tests.helpers import train_in as _train


def test_a_corrupt_validation_image_stops_training_before_it_starts(tmp_path):
  data = helpers.make_image_folder(tmp_path / 'data', per_class=(6, 6))
  config = helpers.small_config(f'folder:{data}')
  # The validation split is carved out of train/: corrupt one of its files.
  bad = sources.make_source(config).files('validation')[-1]
  with open(bad, 'wb') as f:
    f.write(b'not an image')
  workdir = str(tmp_path / 'run')
  with pytest.raises(UserError,
                     match=rf'^cannot decode image file {bad} \(.*\): remove '
                     r'or re-save it, then run the same command again\.$'):
    _train(config, workdir)
  # No epoch was trained: no checkpoint, metrics line or event file.
  assert os.listdir(workdir) == ['train.lock']
