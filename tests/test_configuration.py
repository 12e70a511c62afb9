"""The config boundary: defaults in the package, one table of key origins,
resolution once at the top."""

import logging

import pytest

from imgclf_jax import config_keys
from imgclf_jax import configuration
from tests import helpers


def test_every_origin_names_a_key_of_the_defaults():
  defaults = config_keys.get_config()
  assert set(config_keys.KEY_ORIGINS) <= set(defaults.keys())
  for row in config_keys.KEY_ORIGINS.values():
    assert row[0] in (None, config_keys.FIXED)
    assert all(origin in (None, config_keys.FLAGS, config_keys.MODEL)
               for origin in row[1:])
  assert set(config_keys.keys_where('resume', config_keys.FIXED)) == {
      'dataset', 'model', 'image_size', 'normalization', 'batch_size'}


def test_for_training_resolves_once():
  config = helpers.small_config('folder:some/relative/root', batch_size=8)
  resolved = configuration.for_training(config, 4)
  assert resolved.dataset.startswith('folder:/')
  assert resolved.dataset.endswith('some/relative/root')
  assert resolved.microbatches == 2  # automatic: 2 on CPU (2 per device)
  assert config.microbatches == 0    # the given config is not changed


def test_for_inference_takes_the_keys_of_its_mode(caplog):
  saved = config_keys.to_dict(configuration.for_training(
      helpers.small_config('cifar10', top_k=5, eval_batch_size=8), 4))
  given = helpers.small_config('mnist', top_k=2, eval_batch_size=12,
                               eval_split='test', image_size=28)
  with caplog.at_level(logging.WARNING):
    evaluated = configuration.for_inference(saved, given, 'eval', 4)
  # Data and report keys from --config, the model from the checkpoint.
  assert (evaluated.dataset, evaluated.eval_split, evaluated.top_k,
          evaluated.eval_batch_size) == ('mnist', 'test', 2, 12)
  assert evaluated.image_size == saved['image_size']
  assert 'image_size: checkpoint 16 vs now 28' in caplog.text
  predicted = configuration.for_inference(saved, given, 'predict', 4)
  assert (predicted.dataset, predicted.eval_split, predicted.top_k,
          predicted.eval_batch_size) == ('cifar10', 'validation', 2, 12)
  # Without --config: the checkpoint's, its eval batch rounded to devices.
  alone = configuration.for_inference(dict(saved, eval_batch_size=6), None,
                                      'eval', 4)
  assert alone.eval_batch_size == 4 and alone.top_k == 5


def test_for_inference_checks_the_merged_config():
  saved = config_keys.to_dict(helpers.small_config('cifar10'))
  given = helpers.small_config('cifar10', top_k=0)
  with pytest.raises(configuration.UserError, match=r'--config.top_k=0'):
    configuration.for_inference(saved, given, 'eval', 4)
