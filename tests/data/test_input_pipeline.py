"""input_pipeline.py: a source's examples to batches (decode, resize,
normalise, batch, prefetch) through the whole pipeline; a pipeline that
evaluates a checkpoint reads nothing of the training split."""

import numpy as np
import pytest

from imgclf_jax.errors import UserError
from tests import helpers


def _pipeline(config, normalization=None):
  return helpers.make_pipeline(config, normalization)


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


def test_datasets_run_with_the_autotuner_off_and_fixed_prefetch(tmp_path):
  root = helpers.make_image_folder(tmp_path, per_class=(10, 10))
  pipeline = _pipeline(helpers.small_config(f'folder:{root}'))
  for ds in (pipeline.train_dataset(0), pipeline.eval_dataset('validation')):
    assert ds.options().autotune.enabled is False
  assert len(list(pipeline.train_batches(0))) == pipeline.steps_per_epoch


def test_a_pipeline_that_evaluates_reads_nothing_of_the_training_split(
    tmp_path):
  # A folder of validation/ and test/ only, the classes a checkpoint's:
  # evaluation, its report's images and a process's share need no train/.
  root = helpers.make_image_folder(tmp_path, per_class=(5, 4),
                                   splits=('validation', 'test'))
  config = helpers.small_config(f'folder:{root}', cache='auto')
  source = helpers.make_source(config, class_names=('class_0', 'class_1'))
  stats = {'mean': [0.5] * 3, 'std': [0.25] * 3}
  pipeline = helpers.make_pipeline(config, stats, source=source,
                                   training=False)
  for split in ('validation', 'test'):
    batches = list(pipeline.eval_share(split)[0])
    assert sum(len(b['label']) for b in batches) == 9
    assert len(helpers.pairs(pipeline.resized_subset(split, [0, 8]))) == 2
  share, padding = helpers.make_pipeline(
      config, stats, source=source, training=False,
      process=(1, 2)).eval_share('validation')
  # Process 1 of 2 holds 4 of the 9; the largest share (5) takes 2 steps.
  assert sum(len(b['label']) for b in share) == 4 and padding == (2, 4)
  assert pipeline.normalization == stats
  # A training pipeline of the same folder needs its train split.
  with pytest.raises(UserError, match=r"no 'train' subfolder"):
    helpers.make_pipeline(config, stats, source=source).caches('validation')
  # And one that does not train has the checkpoint's statistics.
  with pytest.raises(ValueError, match='normalisation statistics'):
    helpers.make_pipeline(config, source=source, training=False)
