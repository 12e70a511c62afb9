"""examples.py: a split's resized examples (or central crops), their
subsets and per-class streams, from the cache or from the files."""

import numpy as np
import pytest
import tensorflow as tf

from imgclf_jax.modes import predict
from imgclf_jax.data import preprocess
from tests import helpers
from tests.helpers import assert_examples_at as _assert_examples_at
from tests.helpers import pairs as _pairs


def _pipeline(config, normalization=None):
  return helpers.make_pipeline(config, normalization)


def test_resized_subset_and_class_examples_from_the_cache_or_the_files(
    tmp_path):
  for cache in (True, False):
    root = helpers.make_image_folder(tmp_path / str(cache),
                                     per_class=(6, 2, 6))
    pipeline = _pipeline(helpers.small_config(f'folder:{root}', cache=cache))
    full = _pairs(pipeline.resized_examples('train'))  # fills the cache
    labels = [label for _, label in full]
    per_class = [_pairs(ds) for ds in pipeline.class_examples('train')]
    assert len(per_class) == 3
    for c, got in enumerate(per_class):
      _assert_examples_at(got, full,
                          [i for i, l in enumerate(labels) if l == c])
    # Break every file: with the cache nothing is read again; without it,
    # the chosen files are read (so the subset fails).
    for path in pipeline.source.files('train'):
      with open(path, 'wb') as f:
        f.write(b'not an image')
    if cache:
      _assert_examples_at(_pairs(pipeline.resized_subset('train', [9, 2])),
                          full, (2, 9))
      assert [len(_pairs(ds)) for ds in pipeline.class_examples('train')] \
          == [len(c) for c in per_class]
    else:
      with pytest.raises(tf.errors.OpError):
        _pairs(pipeline.resized_subset('train', [2]))


def test_evaluation_and_predict_see_the_central_crop(tmp_path):
  root = helpers.jpeg_folder(tmp_path)
  config = helpers.small_config(f'folder:{root}', crop='random_resized')
  pipeline = _pipeline(config)
  files = pipeline.source.files('validation')
  images = [image for image, _ in _pairs(
      pipeline.resized_examples('validation'))]
  for path, image in zip(files, images):
    with open(path, 'rb') as f:
      expected = preprocess.central_crop(tf.constant(f.read()), 16, 3).numpy()
    np.testing.assert_array_equal(image, expected)
    np.testing.assert_array_equal(
        predict.load_image(path, 16, 3, 'random_resized'), image)
  assert not np.array_equal(predict.load_image(files[0], 16, 3, 'none'),
                            images[0])
