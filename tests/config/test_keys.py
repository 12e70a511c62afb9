"""keys.py: every key has a default that the command line can set (as
main.py parses it), and the table of key origins names only those keys."""

import os

from absl import flags
from ml_collections import config_flags
import pytest

from configs import default
from imgclf_jax.config import keys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _parse(*args):
  """main.py's --config flag, parsed from `args` in a fresh flag set."""
  argv = ['main.py', f'--config={ROOT}/configs/cifar10.py', *args]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, '', flag_values=flag_values,
                                  lock_config=True, sys_argv=argv)
  flag_values(argv)
  return flag_values.config


def _other_value(value, key):
  """A command-line text for `key` and the value it must parse to."""
  if isinstance(value, bool):
    return str(not value).lower(), not value
  if isinstance(value, int):
    return str(value + 3), value + 3
  if isinstance(value, float):
    return str(value + 0.25), value + 0.25
  if isinstance(value, tuple):
    return '(0.25,0.5,0.75)', (0.25, 0.5, 0.75)
  return f'some_{key}', f'some_{key}'


@pytest.mark.parametrize('key', sorted(default.get_config().keys()))
def test_every_key_can_be_set_on_the_command_line(key):
  value = default.get_config()[key]
  text, expected = _other_value(value, key)
  assert _parse(f'--config.{key}={text}')[key] == expected


def test_data_dir_is_none_unless_given():
  assert _parse().data_dir is None
  assert _parse('--config.data_dir=/data/tfds').data_dir == '/data/tfds'


def test_every_origin_names_a_key_of_the_defaults():
  defaults = keys.get_config()
  assert set(keys.KEY_ORIGINS) <= set(defaults.keys())
  for row in keys.KEY_ORIGINS.values():
    assert row[0] in (None, keys.FIXED)
    assert all(origin in (None, keys.FLAGS, keys.DATA,
                          keys.MODEL) for origin in row[1:])
  assert set(keys.keys_where('resume', keys.FIXED)) == {
      'dataset', 'model', 'model_layout', 'image_size', 'normalization',
      'batch_size', 'optimizer', 'ema_decay', 'norm_bias_lr_scale',
      'lookahead_every_steps', 'probe_epochs', 'pretrained_lr_scale',
      'freeze_batch_norm'}
  assert set(keys.keys_where('eval', keys.DATA)) == {
      'dataset', 'data_dir', 'train_split', 'validation_split',
      'validation_fraction'}


@pytest.mark.parametrize('text, expected', [
    ('auto', 'auto'), ('True', True), ('False', False), ('false', False)])
def test_cache_takes_a_bool_or_auto_on_the_command_line(text, expected):
  got = _parse(f'--config.cache={text}').cache
  assert got == expected and type(got) is type(expected)


def test_config_files_can_set_cache_to_a_bool():
  config = default.get_config()
  assert config.cache == 'auto'
  config.cache = False  # what configs/*.py write (the key takes any type)
  assert config.cache is False


def test_a_key_a_checkpoint_lacks_reads_as_its_default():
  """A checkpoint from before model_layout existed resumes with the default
  ('flax', the layout it was trained with), and not with another."""
  saved = keys.to_dict(keys.get_config())
  del saved['model_layout']
  config = keys.get_config()
  assert keys.differences(saved, config, ('model', 'model_layout')) == []
  config.model_layout = 'torch'
  assert keys.differences(saved, config, ('model_layout',)) == [
      "model_layout: checkpoint 'flax' vs now 'torch'"]
