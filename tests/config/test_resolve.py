"""resolve.py: the config boundary. Every invalid value is refused
before any work (nothing written), and a config is resolved once at the top,
for training and for inference."""

import logging
import os

import jax
import pytest

from imgclf_jax.config import keys
from imgclf_jax.config import resolve
from imgclf_jax.errors import UserError
from imgclf_jax.modes import evaluate
from imgclf_jax.modes import train
from tests import helpers
from tests.helpers import edit_metadata as _edit_metadata
from tests.helpers import train_in as _train


@pytest.fixture
def folder(two_class_folder):
  """The folder the `trained` fixture trains on (tests/conftest.py)."""
  return two_class_folder


@pytest.mark.parametrize('overrides, message', [
    ({'learning_rate': -0.1}, r'--config.learning_rate=-0.1 is invalid.*> 0'),
    ({'num_epochs': 0}, r'--config.num_epochs=0 is invalid'),
    ({'model': 'resnet9000'}, r"--config.model='resnet9000'.*one of \['cnn', 'cnn_plain', 'efficientnet_lite0', 'fast_cifar'"),
    ({'optimizer': 'lamb'}, r"--config.optimizer='lamb'.*one of \('adam', 'adamw', 'sgd'\)"),
    ({'tta': 'crops'}, r"--config.tta='crops'.*'flip_translate'"),
    ({'model': 'fast_cifar'},
     r"--config.dropout_rate=0.5 is invalid: it must be 0 for --config.model=fast_cifar"),
    ({'model': 'fast_cifar', 'dropout_rate': 0.0, 'microbatches': 2},
     r'--config.microbatches=2: --config.model=fast_cifar has BatchNorm'),
    ({'ema_decay': 1.0}, r'--config.ema_decay=1.0 is invalid'),
    ({'lr_end_fraction': 2.0}, r'--config.lr_end_fraction=2.0 is invalid'),
    ({'augment': 'flip,blur'}, r"unknown augmentation.*'blur'"),
    ({'augment': 'flip,,rotate'},
     r"^--config.augment='flip,,rotate': an empty augmentation name \(two "
     r"commas, or one at an end\): separate the names by single commas"),
    ({'minority_augment': 'flip,'}, r"^--config.minority_augment='flip,': "
                                    r'an empty augmentation name'),
    ({'batch_size': 6}, r'batch_size=6 does not divide by the 4 local devices'),
    ({'normalization': 'zscore'}, r'--config.normalization'),
    # batch 8 over 4 devices: 2 per device.
    ({'microbatches': 4},
     r'--config.microbatches=4 does not divide the per-device batch '
     r'\(8 over 4 devices = 2\)'),
    # (ConfigDict refuses a string for a bool key itself; None gets through.)
    ({'half_precision': None}, r'--config.half_precision=None.*True or False'),
])
def test_invalid_config_values(folder, tmp_path, overrides, message):
  config = helpers.small_config(f'folder:{folder}', **overrides)
  with pytest.raises(UserError, match=message):
    _train(config, tmp_path)
  assert not os.listdir(tmp_path)  # nothing written


@pytest.mark.parametrize('key, value, message', [
    # What jax.random.key and numpy's SeedSequence take without a traceback
    # or a silent collision (2**32 would train as seed 0).
    ('seed', -1, r'--config.seed=-1 is invalid: it must be a whole number in '
                 r'\[0, 4294967295\]\.'),
    ('seed', 2**32, r'--config.seed=4294967296 is invalid'),
    ('seed', 10**20, r'--config.seed=100000000000000000000 is invalid'),
    ('num_epochs', 10**9, r'--config.num_epochs=1000000000 is invalid: it '
                          r'must be a whole number in \[1, 10000\]\.'),
    ('image_size', 100_000, r'--config.image_size=100000 is invalid: it must '
                            r'be a whole number in \[8, 1024\] \(the model '
                            r'grows with image_size\*\*2'),
    ('top_k', float('inf'), r'--config.top_k=inf is invalid'),
    ('log_every_seconds', -1.0, r'--config.log_every_seconds=-1.0 is invalid: '
                                r'it must be >= 0 \(0: by steps only\)\.'),
])
def test_out_of_range_values(key, value, message):
  config = helpers.small_config('cifar10')
  if isinstance(value, float):  # config files can give any type
    del config[key]
  config[key] = value
  with pytest.raises(UserError, match=message):
    resolve.validate(config, 4)


def test_largest_values_in_range_are_accepted():
  config = helpers.small_config('cifar10', seed=2**32 - 1, num_epochs=10_000,
                                image_size=1024)
  resolve.validate(config, 4)


@pytest.mark.parametrize('key, value', [('oversample', True),
                                        ('minority_augment', 'flip')])
def test_data_on_device_refuses_tf_data_only_features(folder, tmp_path, key,
                                                      value):
  config = helpers.small_config(f'folder:{folder}', data_on_device=True,
                                **{key: value})
  with pytest.raises(UserError, match=f'--config.{key}=.*data_on_device'):
    train.train_and_evaluate(config, str(tmp_path))
  assert not os.listdir(tmp_path)


def test_training_batch_is_not_checked_for_evaluation(folder):
  # A checkpoint trained with batch 6 on another machine evaluates here on 4
  # devices; its eval_batch_size must still divide by them.
  config = helpers.small_config(f'folder:{folder}', batch_size=6,
                                microbatches=4)
  resolve.validate(config, 4, training=False)
  with pytest.raises(UserError, match=r'batch_size=6 does not divide'):
    resolve.validate(config, 4)
  config.eval_batch_size = 6
  with pytest.raises(UserError, match=r'eval_batch_size=6 does not divide'):
    resolve.validate(config, 4, training=False)


def test_for_training_resolves_once():
  config = helpers.small_config('folder:some/relative/root', batch_size=8)
  resolved = resolve.for_training(config, 4)
  assert resolved.dataset.startswith('folder:/')
  assert resolved.dataset.endswith('some/relative/root')
  assert resolved.microbatches == 2  # automatic: 2 on CPU (2 per device)
  assert config.microbatches == 0    # the given config is not changed


def test_microbatches_setting():
  assert jax.default_backend() == 'cpu'
  config = helpers.small_config('cifar10', batch_size=16)
  # Automatic on CPU: 2 when the per-device batch (16 / 4) divides by 2.
  assert resolve.for_training(config, 4).microbatches == 2
  config.microbatches = 4
  assert resolve.for_training(config, 4).microbatches == 4
  config.microbatches = 0
  config.batch_size = 12  # 3 per device: automatic falls back to one
  assert resolve.for_training(config, 4).microbatches == 1


def test_for_inference_takes_the_keys_of_its_mode(caplog):
  saved = keys.to_dict(resolve.for_training(
      helpers.small_config('cifar10', top_k=5, eval_batch_size=8), 4))
  given = helpers.small_config('mnist', top_k=2, eval_batch_size=12,
                               eval_split='test', image_size=28)
  with caplog.at_level(logging.WARNING):
    evaluated = resolve.for_inference(saved, given, 'eval', 4)
  # Data and report keys from --config, the model from the checkpoint.
  assert (evaluated.dataset, evaluated.eval_split, evaluated.top_k,
          evaluated.eval_batch_size) == ('mnist', 'test', 2, 12)
  assert evaluated.image_size == saved['image_size']
  assert 'image_size: checkpoint 16 vs now 28' in caplog.text
  predicted = resolve.for_inference(saved, given, 'predict', 4)
  assert (predicted.dataset, predicted.eval_split, predicted.top_k,
          predicted.eval_batch_size) == ('cifar10', 'validation', 2, 12)
  # Without --config: the checkpoint's, its eval batch rounded to devices.
  alone = resolve.for_inference(dict(saved, eval_batch_size=6), None,
                                      'eval', 4)
  assert alone.eval_batch_size == 4 and alone.top_k == 5


def test_eval_keeps_the_checkpoints_dataset_unless_set_on_the_command_line(
    caplog):
  # Trained on a folder; --config=configs/cifar10.py names TFDS cifar10.
  saved = keys.to_dict(resolve.for_training(
      helpers.small_config('folder:/data/photos', validation_fraction=0.2),
      4))
  given = helpers.small_config('cifar10', eval_split='test', top_k=2)
  with caplog.at_level(logging.WARNING):
    kept = resolve.for_inference(saved, given, 'eval', 4, set_keys=set())
  assert (kept.dataset, kept.validation_fraction) == ('folder:/data/photos',
                                                      0.2)
  assert (kept.eval_split, kept.top_k) == ('test', 2)  # FLAGS keys as before
  assert ("--mode=eval evaluates on the checkpoint's dataset "
          "folder:/data/photos, not on --config's cifar10") in caplog.text
  # A data key set on the command line still applies.
  fraction = resolve.for_inference(saved, given, 'eval', 4,
                                         set_keys={'validation_fraction'})
  assert (fraction.dataset, fraction.validation_fraction) == (
      'folder:/data/photos', 0.1)
  # --config.dataset on the command line, or a config built in code: its
  # dataset and data keys.
  for set_keys in ({'dataset'}, None):
    other = resolve.for_inference(saved, given, 'eval', 4, set_keys)
    assert (other.dataset, other.validation_fraction) == ('cifar10', 0.1)
  # The same dataset in the config file: its data keys, no warning.
  caplog.clear()
  same = helpers.small_config('folder:/data/photos', validation_fraction=0.3)
  with caplog.at_level(logging.WARNING):
    merged = resolve.for_inference(saved, same, 'eval', 4, set())
  assert merged.validation_fraction == 0.3 and not caplog.text


def test_for_inference_checks_the_merged_config():
  saved = keys.to_dict(helpers.small_config('cifar10'))
  given = helpers.small_config('cifar10', top_k=0)
  with pytest.raises(resolve.UserError, match=r'--config.top_k=0'):
    resolve.for_inference(saved, given, 'eval', 4)


@pytest.mark.slow
def test_checkpoint_from_a_machine_with_another_device_count(trained, folder):
  # An eval batch of 6: trained on a machine with 2 or 3 devices; this one
  # has 4. Eval rounds it to 4; training resumes (its batch of 8 divides).
  _, workdir = trained
  metadata = _edit_metadata(
      workdir, 2, lambda m: m['config'].update(eval_batch_size=6))
  result = evaluate.evaluate_checkpoint(None, workdir)
  assert result['accuracy'] == metadata['metrics']['validation_accuracy']
  record = _train(helpers.small_config(f'folder:{folder}', num_epochs=2),
                  workdir)
  assert record['epoch'] == 2


@pytest.mark.parametrize('overrides, message', [
    ({'cache': 'yes'}, r"--config.cache='yes' is invalid: it must be True, "
                       r"False or 'auto'"),
    ({'cache_budget_gb': -1.0}, r'--config.cache_budget_gb=-1.0 is invalid'),
    ({'normalization_sample_size': 0},
     r'--config.normalization_sample_size=0 is invalid: it must be a whole '
     r'number >= 1'),
    ({'crop': 'center'}, r"--config.crop='center' is invalid: it must be one "
                         r"of \('none', 'random_resized'\)"),
    ({'crop': 'random_resized', 'cache': True},
     r"--config.cache=True does not combine with --config.crop="
     r"'random_resized'.*set --config.cache to 'auto' or False"),
    ({'crop': 'random_resized', 'oversample': True},
     r'--config.oversample=True does not combine with --config.crop'),
    ({'crop': 'random_resized', 'data_on_device': True},
     r'--config.data_on_device=True does not combine with --config.crop'),
    ({'normalization_mean': (0.5, 0.5, 0.5)},
     r'--config.normalization_mean=\(0.5, 0.5, 0.5\) and '
     r'--config.normalization_std=\(\): give both'),
    ({'normalization_mean': (0.5, 0.5), 'normalization_std': (0.2, 0.0)},
     r'--config.normalization_std=\(0.2, 0.0\) is invalid: it must be made of '
     r'numbers > 0'),
    ({'normalization_mean': (0.5,), 'normalization_std': (0.2,),
      'normalization': 'unit'},
     r"--config.normalization_mean=\(0.5,\) is given with "
     r"--config.normalization='unit'"),
    ({'normalization_mean': (float('nan'),), 'normalization_std': (0.2,)},
     r'--config.normalization_mean=\(nan,\) is invalid'),
])
def test_bad_values_are_refused(overrides, message):
  config = helpers.small_config('cifar10', **overrides)
  with pytest.raises(UserError, match=message):
    resolve.validate(config, 1)


def test_a_checkpoint_from_before_the_keys_evaluates(tmp_path):
  config = helpers.small_config('cifar10')
  saved = keys.to_dict(config)
  for key in ('crop', 'cache_budget_gb', 'normalization_sample_size',
              'normalization_mean', 'normalization_std'):
    del saved[key]
  saved['cache'] = True  # the old default, a bool
  merged = resolve.for_inference(saved, config, 'eval', 1)
  assert merged.cache == 'auto' and merged.crop == 'none'
  alone = resolve.for_inference(saved, None, 'predict', 1)
  assert alone.cache is True and alone.crop == 'none'
  assert alone.normalization_sample_size == 50_000
