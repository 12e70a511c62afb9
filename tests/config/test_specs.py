"""specs.py: each spec field holds its key's value, the model's precision
and convolutions are resolved, and a run's config is recorded as
checkpoints store it."""

import dataclasses

import jax
import jax.numpy as jnp

from imgclf_jax.config import keys
from imgclf_jax.config import specs
from tests import helpers

# Spec fields named otherwise than their key.
RENAMED = {'name': 'model', 'max_to_keep': 'max_checkpoints_to_keep',
           'every_epochs': 'checkpoint_every_epochs',
           'every_steps': 'checkpoint_every_steps'}
# Resolved from their key (test_model_spec_resolves_...).
RESOLVED = ('conv_impl',)


def _changed_config():
  """A config with every number changed from its default and other names
  (still valid), so that a field reading the wrong key would differ."""
  config = helpers.small_config(
      'cifar10', model='fast_cifar', dropout_rate=0.0, optimizer='sgd',
      lr_schedule='cosine', early_stopping_metric='validation_accuracy',
      tta='flip', nesterov=True, data_on_device=True, freeze_batch_norm=True)
  for i, (key, value) in enumerate(sorted(config.items())):
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or
        key == 'dropout_rate'):
      continue
    config[key] = (value + 1000 * (i + 1) if isinstance(value, int) else
                   value / 2 + 0.01 * (i + 1))
  return config


def test_every_field_holds_the_value_of_its_key():
  config = _changed_config()
  built = [specs.model_spec(config, 7), specs.optim_spec(config),
           specs.loop_spec(config), specs.checkpoint_spec(config),
           specs.report_spec(config)]
  checked = set()
  for spec in built:
    for field in dataclasses.fields(spec):
      key = RENAMED.get(field.name, field.name)
      if key in config and key not in RESOLVED:
        assert getattr(spec, field.name) == config[key], (spec, field.name)
        checked.add(key)
  # Distinct values, so that no two keys could be confused.
  values = [config[k] for k in checked if not isinstance(config[k], bool)]
  assert len(checked) >= 30
  assert {'probe_epochs', 'pretrained_lr_scale',
          'freeze_batch_norm'} <= checked
  assert len(set(map(repr, values))) == len(values)


def test_model_spec_resolves_precision_and_convolutions(monkeypatch):
  monkeypatch.setattr(jax, 'default_backend', lambda: 'cpu')
  cnn = specs.model_spec(helpers.small_config('cifar10'), 10)
  assert (cnn.num_classes, cnn.dtype, cnn.conv_impl) == (
      10, jnp.float32, 'fast')
  half = specs.model_spec(helpers.small_config(
      'cifar10', model='resnet18', dropout_rate=0.0, half_precision=True), 3)
  assert (half.dtype, half.conv_impl) == (jnp.bfloat16, 'xla')


def test_run_spec_records_the_config_as_checkpoints_store_it():
  config = helpers.small_config('cifar10', num_epochs=5)
  run = specs.run_spec(config, 10)
  assert run.config_record == keys.to_dict(config)
  assert run.loop.num_epochs == run.optim.num_epochs == 5
  assert run.model.num_classes == 10


# DataSpec fields (by path) named otherwise than their key.
DATA_RENAMED = {'cache.budget_gb': 'cache_budget_gb',
                'statistics.mean': 'normalization_mean',
                'statistics.std': 'normalization_std',
                'statistics.sample_size': 'normalization_sample_size',
                'imbalance.warning_ratio': 'imbalance_warning_ratio'}


def _leaves(spec, prefix=''):
  """(path, value) of every field of a spec, nested specs walked (the
  AugmentSpecs are left whole)."""
  for field in dataclasses.fields(spec):
    value = getattr(spec, field.name)
    path = prefix + field.name
    if dataclasses.is_dataclass(value) and field.name not in (
        'augment', 'minority_augment'):
      yield from _leaves(value, path + '.')
    else:
      yield path, value


def test_every_data_field_holds_the_value_of_its_key():
  config = _changed_config()
  config.update(dict(validation_split='test', eval_split='test[:50%]',
                     class_weights='balanced', minority_augment='shift',
                     oversample=True, normalization_mean=(0.5, 0.4, 0.3),
                     normalization_std=(0.2, 0.3, 0.4), cache=False,
                     data_dir='/tmp/tfds'))
  data = specs.data_spec(config)
  checked = set()
  for path, value in _leaves(data):
    if path.endswith('augment'):
      continue
    key = DATA_RENAMED.get(path, path.split('.')[-1])
    assert value == config[key], (path, value, config[key])
    checked.add(key)
  assert len(checked) == 22
  # The augmentations: the keys' names and sizes, the minority's scaled.
  assert data.augment == specs.augment_spec(config)
  assert data.augment.names == tuple(config.augment.split(','))
  assert data.augment.rotation_degrees == config.rotation_degrees
  assert data.augment.translate_pixels == config.translate_pixels
  assert data.imbalance.minority_augment.names == ('shift',)
  assert data.imbalance.minority_augment.shift_fraction == (
      config.shift_fraction * config.minority_augment_scale)
