"""Every kind of bad input gets a clear UserError, and the workdir survives."""

import glob
import json
import os

import pytest
import tensorflow_datasets as tfds

from imgclf_jax import checkpoints
from imgclf_jax import configuration
from imgclf_jax import evaluate
from imgclf_jax import train
from imgclf_jax.errors import UserError
from tests import helpers


# A failed Orbax restore (the damaged-checkpoint test) leaves array-read
# coroutines and an asyncio loop behind; whichever test of this module runs
# when they are collected would warn ('Exception ignored in ...', 'Event loop
# is closed'). Those warnings are Orbax's clean-up, not this code's.
pytestmark = pytest.mark.filterwarnings(
    'ignore::pytest.PytestUnraisableExceptionWarning')


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
  return helpers.make_image_folder(tmp_path_factory.mktemp('data'),
                                   per_class=(10, 10))


def _train(config, workdir):
  return train.train_and_evaluate(config, str(workdir))


def _snapshot(workdir):
  """Every file in the workdir with its size and modification time."""
  files = {}
  for path in glob.glob(os.path.join(workdir, '**'), recursive=True):
    if os.path.isfile(path):
      st = os.stat(path)
      files[os.path.relpath(path, workdir)] = (st.st_size, st.st_mtime_ns)
  return files


@pytest.mark.parametrize('overrides, message', [
    ({'learning_rate': -0.1}, r'--config.learning_rate=-0.1 is invalid.*> 0'),
    ({'num_epochs': 0}, r'--config.num_epochs=0 is invalid'),
    ({'model': 'resnet9000'}, r"--config.model='resnet9000'.*one of \['cnn', 'cnn_plain'\]"),
    ({'augment': 'flip,blur'}, r"unknown augmentation.*'blur'"),
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


def test_training_batch_is_not_checked_for_evaluation(folder):
  # A checkpoint trained with batch 6 on another machine evaluates here on 4
  # devices; its eval_batch_size must still divide by them.
  config = helpers.small_config(f'folder:{folder}', batch_size=6,
                                microbatches=4)
  configuration.validate(config, 4, training=False)
  with pytest.raises(UserError, match=r'batch_size=6 does not divide'):
    configuration.validate(config, 4)
  config.eval_batch_size = 6
  with pytest.raises(UserError, match=r'eval_batch_size=6 does not divide'):
    configuration.validate(config, 4, training=False)


def test_unknown_tfds_name(tmp_path):
  with pytest.raises(UserError, match=r"'no_such_dataset': no TFDS dataset"):
    _train(helpers.small_config('no_such_dataset'), tmp_path)


def test_tfds_dataset_that_cannot_be_downloaded(tmp_path, monkeypatch):
  # A machine without internet. (Really trying here takes minutes of TFDS
  # retries before the same failure.)
  def offline(self, *args, **kwargs):
    raise ConnectionError(f'cannot reach the download server for {self.name}')
  monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare', offline)
  config = helpers.small_config('mnist', data_dir=str(tmp_path / 'tfds'))
  with pytest.raises(UserError, match=r"'mnist' is not in data_dir .*tfds.*"
                     r'ConnectionError.*--config.data_dir=/path'):
    _train(config, tmp_path / 'run')


def test_missing_folder(tmp_path):
  with pytest.raises(UserError, match=r'no such folder'):
    _train(helpers.small_config(f'folder:{tmp_path}/nope'), tmp_path / 'run')


def test_path_without_folder_prefix(tmp_path):
  with pytest.raises(UserError, match=r'write --config.dataset=folder:'):
    _train(helpers.small_config(str(tmp_path)), tmp_path / 'run')


def test_folder_without_images(tmp_path):
  os.makedirs(tmp_path / 'data' / 'train' / 'cats')
  (tmp_path / 'data' / 'train' / 'cats' / 'notes.txt').write_text('hi')
  with pytest.raises(UserError, match=r'no images .* under .*train'):
    _train(helpers.small_config(f'folder:{tmp_path}/data'), tmp_path / 'run')


def test_folder_with_one_class(tmp_path):
  root = helpers.make_image_folder(tmp_path / 'data', per_class=(5,))
  with pytest.raises(UserError, match=r'1 class folder.*at least two'):
    _train(helpers.small_config(f'folder:{root}'), tmp_path / 'run')


def test_corrupt_image_is_named(tmp_path):
  root = helpers.make_image_folder(tmp_path / 'data', per_class=(6, 6))
  bad = os.path.join(root, 'train', 'class_1', 'broken.jpg')
  with open(bad, 'wb') as f:
    f.write(b'\xff\xd8\xff\xe0 this is not really a JPEG')
  with pytest.raises(UserError, match=r'cannot decode image file .*broken\.jpg'):
    _train(helpers.small_config(f'folder:{root}'), tmp_path / 'run')


def test_eval_without_checkpoint(tmp_path):
  with pytest.raises(UserError, match=r'no checkpoint in .*checkpoints'):
    evaluate.evaluate_checkpoint(None, str(tmp_path))
  with pytest.raises(UserError, match=r'no checkpoint'):
    evaluate.evaluate_checkpoint(
        helpers.small_config('cifar10'), str(tmp_path / 'never_made'))


@pytest.fixture
def trained(folder, tmp_path):
  config = helpers.small_config(f'folder:{folder}', num_epochs=1)
  _train(config, tmp_path)
  return config, str(tmp_path)


@pytest.mark.parametrize('overrides, message', [
    ({'image_size': 20}, r'image_size: checkpoint 16 vs now 20'),
    # Adam -> AdamW: other optimizer state.
    ({'weight_decay': 0.01}, r'\(weight_decay: checkpoint 0.0 vs now 0.01\)'),
])
def test_incompatible_config_keeps_the_workdir(trained, folder, overrides,
                                               message):
  _, workdir = trained
  before = _snapshot(workdir)
  changed = helpers.small_config(f'folder:{folder}', num_epochs=2, **overrides)
  with pytest.raises(UserError, match=r'incompatible config.*' + message +
                     r'.*new --workdir'):
    _train(changed, workdir)
  assert _snapshot(workdir) == before


def test_resume_on_a_grown_image_folder_is_refused(tmp_path):
  # The validation split is held out of train/: with more images, some
  # images trained on would move into it.
  root = helpers.make_image_folder(tmp_path / 'data', per_class=(10, 10))
  config = helpers.small_config(f'folder:{root}', num_epochs=1)
  _train(config, tmp_path / 'run')
  before = _snapshot(tmp_path / 'run')
  helpers.make_image_folder(tmp_path / 'more', per_class=(0, 4), seed=1)
  for name in os.listdir(tmp_path / 'more' / 'train' / 'class_1'):
    os.rename(tmp_path / 'more' / 'train' / 'class_1' / name,
              tmp_path / 'data' / 'train' / 'class_1' / f'new_{name}')
  config.num_epochs = 2
  with pytest.raises(UserError, match=r"dataset or its split settings .*"
                     r"changed since the checkpoints.*"
                     r"checkpoint \{'train': 18, 'validation': 2\} vs now "
                     r"\{'train': 22, 'validation': 2\}.*new --workdir"):
    _train(config, tmp_path / 'run')
  assert _snapshot(tmp_path / 'run') == before


def test_damaged_checkpoints_are_named_and_kept(trained, folder):
  _, workdir = trained
  directory = os.path.join(workdir, 'checkpoints')
  # Step 2's array index missing (TensorStore raises ValueError NOT_FOUND,
  # not a model mismatch) ...
  manifest = os.path.join(directory, '2', 'state', 'manifest.ocdbt')
  os.rename(manifest, manifest + '.away')
  with pytest.raises(UserError, match=r'checkpoint 2 .* damaged or incomplete '
                     r'\(ValueError: NOT_FOUND'):
    evaluate.evaluate_checkpoint(None, workdir)
  os.rename(manifest + '.away', manifest)
  # ... then its array files cut short; an empty step folder 9 (an
  # interrupted copy).
  for path in glob.glob(os.path.join(directory, '2', 'state', 'ocdbt.process_0',
                                     'd', '*')):
    with open(path, 'r+b') as f:
      f.truncate(100)
  os.makedirs(os.path.join(directory, '9'))
  before = _snapshot(workdir)
  with pytest.raises(UserError, match=r'checkpoint 2 in .*checkpoints is '
                     r'damaged or incomplete \(.*\): move its folder '
                     r'.*checkpoints/2 out of the way \(training then resumes '
                     r'from the latest other step\), or evaluate another with '
                     r'--step \(\[9\]\)'):
    evaluate.evaluate_checkpoint(None, workdir, step=2)
  with pytest.raises(UserError, match=r'checkpoint 9 .* damaged or incomplete '
                     r'\(KeyError: .*metadata.*\).*\(\[2\]\)'):
    evaluate.evaluate_checkpoint(None, workdir)
  resumed = helpers.small_config(f'folder:{folder}', num_epochs=2)
  with pytest.raises(UserError, match=r'checkpoint 9 .* damaged or incomplete'):
    _train(resumed, workdir)
  assert _snapshot(workdir) == before


def _edit_metadata(workdir, step, edit):
  path = os.path.join(workdir, 'checkpoints', str(step), 'metadata',
                      'metadata')
  with open(path) as f:
    metadata = json.load(f)
  edit(metadata)
  with open(path, 'w') as f:
    json.dump(metadata, f)
  return metadata


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


@pytest.mark.parametrize('version', [None, checkpoints.FORMAT_VERSION + 1])
def test_checkpoint_of_another_format_version_is_refused(trained, folder,
                                                         version):
  _, workdir = trained
  _edit_metadata(workdir, 2, lambda m: m.update(format_version=version))
  before = _snapshot(workdir)
  message = (rf'checkpoint 2 .* has format version {version or "none"}; this '
             rf'imgclf_jax reads version {checkpoints.FORMAT_VERSION}')
  with pytest.raises(UserError, match=message):
    evaluate.evaluate_checkpoint(None, workdir)
  with pytest.raises(UserError, match=message):
    _train(helpers.small_config(f'folder:{folder}', num_epochs=2), workdir)
  assert _snapshot(workdir) == before


def test_eval_on_a_dataset_with_other_classes(trained, tmp_path):
  config, workdir = trained
  other_root = helpers.make_image_folder(tmp_path / 'other', per_class=(4, 4, 4))
  other = config.copy_and_resolve_references()
  other.dataset = f'folder:{other_root}'
  with pytest.raises(UserError, match=r'class names differ'):
    evaluate.evaluate_checkpoint(other, workdir)


def test_eval_of_a_missing_step(trained):
  _, workdir = trained
  with pytest.raises(UserError, match=r'--step=7: no such checkpoint.*\[2\]'):
    evaluate.evaluate_checkpoint(None, workdir, step=7)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(trained, folder):
  _, workdir = trained
  checkpoints_before = sorted(os.listdir(os.path.join(workdir, 'checkpoints')))
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    log_before = f.read()
  exploding = helpers.small_config(f'folder:{folder}', num_epochs=3,
                                   learning_rate=1e30)
  with pytest.raises(train.TrainingDiverged,
                     match=r'loss became .*nan.*last good checkpoint \(step 2\)'):
    _train(exploding, workdir)
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == (
      checkpoints_before)
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    assert f.read() == log_before
  # The kept checkpoint still restores and evaluates.
  result = evaluate.evaluate_checkpoint(None, workdir)
  assert result['step'] == 2 and 0 <= result['accuracy'] <= 1
