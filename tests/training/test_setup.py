"""setup.py: a corrupt validation image stops training before it starts;
init_from_data gets exactly its sample of training images."""

import os

import jax
import numpy as np
import pytest

from imgclf_jax.config import specs
from imgclf_jax.errors import UserError
from imgclf_jax.models import registry
from imgclf_jax.training import setup
from imgclf_jax.training import train_state as train_state_lib
from tests import helpers
from tests.helpers import train_in as _train


def test_a_corrupt_validation_image_stops_training_before_it_starts(tmp_path):
  data = helpers.make_image_folder(tmp_path / 'data', per_class=(6, 6))
  config = helpers.small_config(f'folder:{data}')
  # The validation split is carved out of train/: corrupt one of its files.
  bad = helpers.make_source(config).files('validation')[-1]
  with open(bad, 'wb') as f:
    f.write(b'not an image')
  workdir = str(tmp_path / 'run')
  with pytest.raises(UserError,
                     match=rf'^cannot decode image file {bad} \(.*\): remove '
                     r'or re-save it, then run the same command again\.$'):
    _train(config, workdir)
  # Refused before its first step: no trace, not even the workdir it made.
  assert not os.path.exists(workdir)


class _Recorder:
  """A model's init_from_data that keeps the images it is given."""

  def init_from_data(self, params, images):
    self.images = images
    return params


@pytest.mark.parametrize('cache', [True, False])
def test_init_from_data_gets_the_eval_images_of_its_sample_only(tmp_path,
                                                                 cache):
  root = helpers.make_image_folder(tmp_path, per_class=(9, 9, 9))
  config = helpers.small_config(f'folder:{root}', cache=cache,
                                eval_batch_size=4)
  pipeline = helpers.make_pipeline(config)
  everything = np.concatenate([b['image']
                               for b in pipeline.eval_batches('train')])
  state = train_state_lib.create_train_state(
      jax.random.key(0), registry.create_model(specs.model_spec(config, 3)),
      (16, 16, 3), specs.optim_spec(config), steps_per_epoch=3)
  recorder = _Recorder()
  setup.init_from_data(recorder, state, pipeline, seed=3, num_images=10)
  chosen = np.sort(np.random.default_rng(3).choice(len(everything), 10,
                                                   replace=False))
  assert chosen.tolist() != list(range(10))  # not simply the first images
  np.testing.assert_array_equal(recorder.images, everything[chosen])
