"""batch_transform.py: the XLA-compiled function that turns a drawn batch
into model input gives what its ops give one by one."""

import numpy as np

from tests import helpers


def _pipeline(config, normalization=None):
  return helpers.make_pipeline(config, normalization)


def test_compiled_train_transform_equals_the_ops_run_one_by_one(tmp_path):
  # Without augmentation: XLA draws other random numbers than TF's kernels
  # for the same stateless seed, so only the deterministic part can match.
  # (The warp itself is compared with TF's kernel in test_augment.py.)
  root = helpers.make_image_folder(tmp_path, per_class=(6, 6))
  config = helpers.small_config(f'folder:{root}', augment='',
                                class_weights='1,3')
  pipeline = _pipeline(config)
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
  labels = np.array([0, 1] * 4, np.int32)
  seed = np.array([3, 4], np.int64)
  transform = pipeline.train_stream.transform()
  compiled = transform(np.int64(5), images, labels, seed)
  eager = transform.python_function(np.int64(5), images, labels, seed)
  assert set(compiled) == {'image', 'label', 'weight'}
  for key in compiled:
    assert compiled[key].shape[0] == 8  # a global batch
    np.testing.assert_allclose(compiled[key].numpy(), eager[key].numpy(),
                               atol=1e-5)
  np.testing.assert_array_equal(compiled['weight'].numpy().ravel(),
                                [1, 3] * 4)
