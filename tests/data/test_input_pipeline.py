"""input_pipeline.py: from a source's examples to batches (decode, resize,
normalise, batch, cache), fixed by seed and epoch."""

import numpy as np
import pytest
import tensorflow as tf

from imgclf_jax.data import input_pipeline
from imgclf_jax.data import sources
from tests import helpers
from tests.helpers import assert_examples_at as _assert_examples_at
from tests.helpers import pairs as _pairs


def _pipeline(config):
  return input_pipeline.InputPipeline(sources.make_source(config), config)


def test_any_size_grayscale_rgba_decode_to_rgb_at_image_size(tmp_path):
  root = helpers.make_image_folder(tmp_path, per_class=(6, 6), size=(37, 23),
                                   modes=('L', 'RGBA', 'RGB'))
  config = helpers.small_config(f'folder:{root}', augment='', image_size=16)
  pipeline = _pipeline(config)
  batch = next(pipeline.train_batches(0))
  assert batch['image'].shape == (8, 16, 16, 3)
  assert batch['image'].dtype == np.float32
  assert batch['label'].shape == (8, 2)
  assert set(batch['label'].sum(-1).ravel()) == {1.0}  # one-hot


def test_standardize_gives_zero_mean_unit_std(tmp_path):
  root = helpers.make_image_folder(tmp_path, per_class=(16, 16))
  config = helpers.small_config(f'folder:{root}', augment='',
                                normalization='standardize')
  pipeline = _pipeline(config)
  stats = pipeline.normalization
  assert len(stats['mean']) == 3 and min(stats['std']) > 0
  images = np.concatenate([b['image'].reshape(-1, 3) for e in range(1)
                           for b in pipeline.train_batches(e)])
  np.testing.assert_allclose(images.mean(0), 0, atol=0.05)
  np.testing.assert_allclose(images.std(0), 1, atol=0.05)


def test_unit_normalization_is_pixels_over_255(tmp_path):
  root = helpers.make_image_folder(tmp_path, per_class=(4, 4))
  config = helpers.small_config(f'folder:{root}', augment='',
                                normalization='unit', image_size=24)
  pipeline = _pipeline(config)
  assert pipeline.normalization == {'mean': [0.0] * 3, 'std': [1.0] * 3}
  image = next(pipeline.eval_batches('validation'))['image'][0]
  path = pipeline.source._scan('validation')[0][0]
  from PIL import Image  # pylint: disable=g-import-not-at-top
  expected = np.asarray(Image.open(path).resize((24, 24), Image.BILINEAR))
  assert image.min() >= 0 and image.max() <= 1
  np.testing.assert_allclose(image * 255, expected, atol=40)


def test_eval_sees_every_example_once(tmp_path):
  root = helpers.make_image_folder(tmp_path, per_class=(9, 8),
                                   splits=('train', 'test'))
  config = helpers.small_config(f'folder:{root}', eval_batch_size=8)
  pipeline = _pipeline(config)
  batches = list(pipeline.eval_batches('test'))
  # 17 examples -> 8 + 8 + 1, in the split's order (padding the last one is
  # device_axis.pad_batches' job).
  assert [len(b['label']) for b in batches] == [8, 8, 1]
  labels = np.concatenate([b['label'] for b in batches]).argmax(-1)
  np.testing.assert_array_equal(labels, pipeline.labels('test'))
  assert np.bincount(labels).tolist() == [9, 8]


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
  transform = pipeline._train_transform()  # pylint: disable=protected-access
  compiled = transform(np.int64(5), images, labels, seed)
  eager = transform.python_function(np.int64(5), images, labels, seed)
  assert set(compiled) == {'image', 'label', 'weight'}
  for key in compiled:
    assert compiled[key].shape[0] == 8  # a global batch
    np.testing.assert_allclose(compiled[key].numpy(), eager[key].numpy(),
                               atol=1e-5)
  np.testing.assert_array_equal(compiled['weight'].numpy().ravel(),
                                [1, 3] * 4)


def test_datasets_run_with_the_autotuner_off_and_fixed_prefetch(tmp_path):
  root = helpers.make_image_folder(tmp_path, per_class=(10, 10))
  pipeline = _pipeline(helpers.small_config(f'folder:{root}'))
  for ds in (pipeline.train_dataset(0), pipeline.eval_dataset('validation')):
    assert ds.options().autotune.enabled is False
  assert len(list(pipeline.train_batches(0))) == pipeline.steps_per_epoch


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
