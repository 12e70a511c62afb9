"""train_stream.py: the training batches of an epoch, fixed by the seed and
the epoch; random-resized crops seeded by each example's position."""

import logging

import numpy as np
import tensorflow as tf

from imgclf_jax.data import preprocess
from imgclf_jax.data import train_stream
from tests import helpers
from tests.helpers import pairs as _pairs


def _pipeline(config, normalization=None):
  return helpers.make_pipeline(config, normalization)


def test_training_batches_are_fixed_by_seed_and_epoch(tmp_path):
  root = helpers.make_image_folder(tmp_path, per_class=(10, 10))
  config = helpers.small_config(f'folder:{root}')
  pipeline = _pipeline(config)
  assert pipeline.steps_per_epoch == 18 // 8
  first = [b['image'] for b in pipeline.train_batches(0)]
  again = [b['image'] for b in pipeline.train_batches(0)]
  fresh = [b['image'] for b in _pipeline(config).train_batches(0)]
  second_epoch = [b['image'] for b in pipeline.train_batches(1)]
  other_seed = [b['image'] for b in _pipeline(
      helpers.small_config(f'folder:{root}', seed=1)).train_batches(0)]
  for a, b, c in zip(first, again, fresh):
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
  assert not np.allclose(first[0], second_epoch[0])
  assert not np.allclose(first[0], other_seed[0])


def test_crop_training_batches_are_fixed_by_seed_and_epoch(tmp_path,
                                                           caplog):
  root = helpers.jpeg_folder(tmp_path)
  config = helpers.small_config(f'folder:{root}', crop='random_resized',
                                augment='')
  with caplog.at_level(logging.INFO):
    pipeline = _pipeline(config)
  assert not pipeline.caches('train') and not pipeline.caches('validation')
  assert ('Not caching the train and validation images: '
          '--config.crop=random_resized decodes a new crop') in caplog.text
  first = [b['image'] for b in pipeline.train_batches(0)]
  assert first[0].shape == (8, 16, 16, 3)
  again = [b['image'] for b in _pipeline(config).train_batches(0)]
  np.testing.assert_array_equal(np.stack(first), np.stack(again))
  later = [b['image'] for b in pipeline.train_batches(1)]
  other = [b['image'] for b in _pipeline(helpers.small_config(
      f'folder:{root}', crop='random_resized', augment='',
      seed=1)).train_batches(0)]
  assert not np.allclose(first[0], later[0])
  assert not np.allclose(first[0], other[0])


def test_each_example_is_cropped_by_its_position_and_the_epoch(tmp_path):
  root = helpers.jpeg_folder(tmp_path)
  config = helpers.small_config(f'folder:{root}', crop='random_resized')
  pipeline = _pipeline(config)
  source = pipeline.source
  crop = train_stream.random_resized_crop(
      train_stream.crop_seeds(config.seed, 1), 16, 3, source.read)
  got = _pairs(source.records('train').enumerate().shuffle(
      64, seed=5).map(crop))
  seed = tf.constant(train_stream.crop_seeds(config.seed, 1).astype(
      np.int64))
  by_file = {}
  for i, path in enumerate(source.files('train')):
    by_file[i] = preprocess.random_resized_crop(
        tf.io.read_file(path), tf.random.experimental.stateless_fold_in(
            seed, tf.constant(i, tf.int64)), 16, 3).numpy()
  # Shuffled, but each crop is the one of its example's own seed.
  matched = sorted(next(i for i, crop in by_file.items()
                        if np.array_equal(crop, image)) for image, _ in got)
  assert matched == list(range(len(by_file)))
