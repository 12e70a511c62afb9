"""cache.py: whether a split's resized examples are kept in memory (True,
False, or 'auto' within the budget), decided once per group of splits and
logged with the numbers; a pipeline that evaluates decides each alone."""

import logging

import numpy as np
import pytest

from imgclf_jax.config import keys
from imgclf_jax.errors import UserError
from tests import helpers


def _pipeline(config, normalization=None):
  return helpers.make_pipeline(config, normalization)


def test_auto_caches_within_the_budget_and_says_so(tmp_path, caplog):
  root = helpers.make_image_folder(tmp_path, per_class=(10, 10))
  # 18 train + 2 validation images of 16 x 16 x 3 = 15,360 bytes.
  config = helpers.small_config(f'folder:{root}', cache='auto',
                                cache_budget_gb=15_360 / 1e9)
  with caplog.at_level(logging.INFO):
    pipeline = _pipeline(config)
  assert pipeline.caches('train') and pipeline.caches('validation')
  assert ('Caching the 18 train and 2 validation images (15.4 kB decoded at '
          '16x16x3) in memory: within --config.cache_budget_gb=1.536e-05'
          ) in caplog.text
  first = [b['image'] for b in pipeline.train_batches(0)]
  # The cache holds them now.
  helpers.break_files(pipeline.source.files('train'))
  again = [b['image'] for b in pipeline.train_batches(0)]
  np.testing.assert_array_equal(np.stack(first), np.stack(again))


def test_auto_does_not_cache_over_the_budget_and_says_so(tmp_path, caplog):
  root = helpers.make_image_folder(tmp_path, per_class=(10, 10))
  config = helpers.small_config(f'folder:{root}', cache='auto',
                                cache_budget_gb=15_359 / 1e9)
  with caplog.at_level(logging.INFO):
    pipeline = _pipeline(config)
  assert not pipeline.caches('train') and not pipeline.caches('validation')
  assert ('Not caching: the 18 train and 2 validation images (15.4 kB decoded '
          'at 16x16x3) would take more than --config.cache_budget_gb='
          '1.5359e-05; each epoch decodes the files.') in caplog.text
  list(pipeline.train_batches(0))
  helpers.break_files(pipeline.source.files('train'))  # read again each epoch
  with pytest.raises(UserError, match='cannot decode image file'):
    list(pipeline.train_batches(0))


def test_cache_true_and_false_are_honoured_whatever_the_budget(tmp_path,
                                                                caplog):
  root = helpers.make_image_folder(tmp_path, per_class=(10, 10))
  with caplog.at_level(logging.INFO):
    forced = _pipeline(helpers.small_config(f'folder:{root}', cache=True,
                                            cache_budget_gb=0.0))
    off = _pipeline(helpers.small_config(f'folder:{root}', cache=False,
                                         cache_budget_gb=100.0))
  assert forced.caches('train') and not off.caches('train')
  assert 'in memory (--config.cache=True)' in caplog.text
  assert '(--config.cache=False): each epoch decodes the files' in caplog.text


def test_another_split_is_decided_alone(tmp_path):
  root = helpers.make_image_folder(tmp_path, per_class=(9, 9),
                                   splits=('train', 'test'))
  # train (16) + validation (2) are over 20 images' budget... no: 18 images
  # of 768 bytes = 13,824 bytes; test alone is 18 images too. A budget of
  # 14,000 bytes holds either group.
  pipeline = _pipeline(helpers.small_config(f'folder:{root}',
                                            cache_budget_gb=14_000 / 1e9))
  assert pipeline.caches('train') and pipeline.caches('test')
  tight = _pipeline(helpers.small_config(f'folder:{root}',
                                         cache_budget_gb=13_000 / 1e9))
  assert not tight.caches('validation') and not tight.caches('test')


def test_cifar10_sized_splits_are_cached_by_default():
  # 45,000 + 5,000 images of 32 x 32 x 3: 154 MB, within the default 8 GB,
  # so the default ('auto') caches them as the old default (True) did.
  config = keys.get_config()
  assert config.cache == 'auto' and config.cache_budget_gb == 8.0
  assert 50_000 * 32 * 32 * 3 <= config.cache_budget_gb * 1e9
  assert config.normalization_sample_size == 50_000


def test_a_pipeline_that_evaluates_decides_each_split_alone(tmp_path, caplog):
  # 18 train + 2 validation images of 768 bytes: the 2 validation images
  # (1,536 bytes) fit a budget of 2,000 bytes, the two splits together do not.
  root = helpers.make_image_folder(tmp_path, per_class=(10, 10))
  config = helpers.small_config(f'folder:{root}', cache_budget_gb=2_000 / 1e9)
  training = _pipeline(config)
  assert not training.caches('validation')
  stats = {'mean': [0.5] * 3, 'std': [0.25] * 3}
  with caplog.at_level(logging.INFO):
    evaluating = helpers.make_pipeline(config, stats, training=False)
    assert evaluating.caches('validation')
  assert ('Caching the 2 validation images (1.54 kB decoded at 16x16x3) in '
          'memory') in caplog.text
  assert 'train' not in caplog.text
