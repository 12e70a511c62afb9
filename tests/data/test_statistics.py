"""statistics.py: the normalisation statistics of the training split (all
of it, or exactly a fixed sample of a larger one), given ones, and a resumed
run's."""

import logging

import jax
import numpy as np
import pytest

from imgclf_jax.data import source_base
from imgclf_jax.data import statistics
from imgclf_jax.errors import UserError
from tests import helpers
from tests.helpers import pairs as _pairs


def _pipeline(config, normalization=None):
  return helpers.make_pipeline(config, normalization)


def test_a_split_within_the_sample_size_gets_the_full_pass(tmp_path):
  root = helpers.make_image_folder(tmp_path, per_class=(12, 12))
  config = helpers.small_config(f'folder:{root}', normalization_sample_size=22)
  pipeline = _pipeline(config)
  assert pipeline.source.num_examples('train') == 22
  # Exactly the pass over every training image (the computation of before
  # the sample existed): the same numbers, bit for bit.
  full = statistics.measure(pipeline.resized_examples('train'), 3,
                            pipeline.source)
  assert pipeline.normalization == full
  mean, std = helpers.channel_stats(pipeline.arrays('train')[0])
  np.testing.assert_allclose(full['mean'], mean, rtol=1e-12)
  np.testing.assert_allclose(full['std'], std, rtol=1e-9)


def test_a_larger_split_is_measured_on_exactly_its_sample(tmp_path):
  root = helpers.make_image_folder(tmp_path, per_class=(12, 12))
  config = helpers.small_config(f'folder:{root}', normalization_sample_size=7,
                                cache=False)
  source = helpers.make_source(config)
  sample = source.sample_indices('train', 7)
  assert len(sample) == 7 and len(set(sample)) == 7
  assert np.all(np.diff(sample) > 0) and sample[-1] < 22
  # Files outside the sample are never decoded for the statistics.
  everything = _pairs(helpers.make_pipeline(
      config, {'mean': [0.0] * 3, 'std': [1.0] * 3},
      source=source).resized_examples('train'))
  helpers.break_files([p for i, p in enumerate(source.files('train'))
                       if i not in sample])
  pipeline = helpers.make_pipeline(config, source=source)
  mean, std = helpers.channel_stats([everything[i][0] for i in sample])
  np.testing.assert_allclose(pipeline.normalization['mean'], mean, rtol=1e-12)
  np.testing.assert_allclose(pipeline.normalization['std'], std, rtol=1e-9)
  full_mean, _ = helpers.channel_stats([image for image, _ in everything])
  assert not np.allclose(full_mean, mean, rtol=1e-6)


def test_the_sample_is_the_same_whatever_the_seed_or_the_process(
    tmp_path, monkeypatch):
  root = helpers.make_image_folder(tmp_path, per_class=(12, 12))
  configs = [helpers.small_config(f'folder:{root}',
                                  normalization_sample_size=9, seed=seed,
                                  shuffle_buffer_size=buffer)
             for seed, buffer in ((0, 64), (7, 3))]
  first = _pipeline(configs[0])
  sample = first.source.sample_indices('train', 9)
  # Another process of a multi-process run (jax.process_index() 1 of 2),
  # another seed, another shuffle buffer: the same sample, the same numbers.
  monkeypatch.setattr(jax, 'process_index', lambda *a, **k: 1)
  monkeypatch.setattr(jax, 'process_count', lambda *a, **k: 2)
  other = _pipeline(configs[1])
  np.testing.assert_array_equal(other.source.sample_indices('train', 9),
                                sample)
  assert other.normalization == first.normalization
  # Drawn with source_base.SAMPLE_SEED from the 22 positions, nothing else.
  expected = np.sort(np.random.default_rng(source_base.SAMPLE_SEED).choice(
      22, 9, replace=False))
  np.testing.assert_array_equal(sample, expected)


def test_given_statistics_are_used_as_given_without_reading_images(tmp_path):
  root = helpers.make_image_folder(tmp_path, per_class=(6, 6))
  config = helpers.small_config(f'folder:{root}', augment='', cache=False,
                                normalization_mean=(0.1, 0.2, 0.3),
                                normalization_std=(0.5, 0.25, 2.0))
  source = helpers.make_source(config)
  unit = helpers.make_pipeline(
      helpers.small_config(f'folder:{root}', cache=False,
                           normalization='unit'), source=source)
  pixels = next(unit.eval_batches('validation'))['image']
  helpers.break_files(source.files('train'))  # the statistics read no image
  pipeline = helpers.make_pipeline(config, source=source)
  assert pipeline.normalization == {'mean': [0.1, 0.2, 0.3],
                                    'std': [0.5, 0.25, 2.0]}
  got = next(pipeline.eval_batches('validation'))['image']
  np.testing.assert_allclose(got, (pixels - [0.1, 0.2, 0.3]) /
                             np.array([0.5, 0.25, 2.0]), rtol=1e-6, atol=1e-6)


def test_given_statistics_need_one_number_per_channel(tmp_path):
  root = helpers.make_image_folder(tmp_path, per_class=(6, 6))
  config = helpers.small_config(f'folder:{root}', normalization_mean=(0.5,),
                                normalization_std=(0.2,))
  with pytest.raises(UserError, match=r"--config.normalization_mean=\(0.5,\) "
                     r"has 1 number\(s\), but .* has 3 channel\(s\): give one "
                     'number per channel'):
    _pipeline(config)


def test_a_resumed_run_warns_that_it_keeps_its_statistics(tmp_path, caplog):
  root = helpers.make_image_folder(tmp_path, per_class=(6, 6))
  config = helpers.small_config(f'folder:{root}',
                                normalization_mean=(0.1, 0.2, 0.3),
                                normalization_std=(0.5, 0.5, 0.5))
  saved = {'mean': [0.4] * 3, 'std': [0.2] * 3}
  with caplog.at_level(logging.WARNING):
    pipeline = _pipeline(config, saved)
  assert pipeline.normalization == saved
  assert "Using the checkpoint's normalisation statistics" in caplog.text
