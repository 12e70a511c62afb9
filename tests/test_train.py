"""train_and_evaluate end to end: mock TFDS data and real image folders;
resumed, rerun, and stopped on a diverged loss with its last good checkpoint
kept. Most tests read the session's `full_run` (tests/conftest.py)."""

import glob
import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from imgclf_jax import checkpoints
from imgclf_jax import config_keys
from imgclf_jax import configuration
from imgclf_jax import evaluate
from imgclf_jax import train
from tests import helpers
from tests.helpers import train_in as _train


def _checkpoint_steps(workdir):
  return sorted(int(os.path.basename(p)) for p in
                glob.glob(os.path.join(workdir, 'checkpoints', '[0-9]*')))


def _records(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def _assert_outputs(workdir, epochs, steps_per_epoch):
  assert _checkpoint_steps(workdir) == [
      steps_per_epoch * (e + 1) for e in range(epochs)][-3:]
  assert glob.glob(os.path.join(workdir, 'events.out.tfevents.*'))
  records = _records(workdir)
  assert [r['epoch'] for r in records] == list(range(1, epochs + 1))
  for r in records:
    for key in ('train_loss', 'train_accuracy', 'validation_loss',
                'validation_accuracy'):
      assert np.isfinite(r[key]), (key, r)
    assert 0 <= r['validation_accuracy'] <= 1
  with Image.open(os.path.join(workdir, 'curves.png')) as png:
    assert png.size == (1100, 400)
    # Not a blank canvas: the plotted lines use several colours.
    assert len(png.convert('RGB').getcolors(maxcolors=1 << 16)) > 20
  return records


def test_train_and_evaluate_on_tfds_mock_data(tmp_path):
  config = helpers.small_config('cifar10', validation_split='test')
  with tfds.testing.mock_data(num_examples=24):
    last = train.train_and_evaluate(config, str(tmp_path))
  records = _assert_outputs(str(tmp_path), epochs=2, steps_per_epoch=3)
  assert last == records[-1] and last['step'] == 6


@pytest.fixture
def folder(colour_folder):
  """The folder `full_run` trained on (tests/conftest.py)."""
  return colour_folder


@pytest.mark.slow
def test_folder_run_writes_checkpoints_events_metrics_and_curves(full_run):
  _, workdir, last = full_run
  records = _assert_outputs(workdir, epochs=3, steps_per_epoch=4)
  assert last == records[-1]
  # Three colours are easy: the model must have learnt them.
  assert last['validation_accuracy'] >= 0.5


@pytest.mark.slow
def test_checkpoint_holds_what_eval_needs(full_run):
  config, workdir, _ = full_run
  store = checkpoints.CheckpointStore(workdir)
  step, metadata = store.restore_metadata()
  store.close()
  assert step == 12
  assert metadata['class_names'] == ['class_0', 'class_1', 'class_2']
  assert metadata['format_version'] == checkpoints.FORMAT_VERSION
  # The config as resolved for this machine's 4 devices.
  assert metadata['config'] == config_keys.to_dict(
      configuration.for_training(config, 4))
  assert metadata['image_shape'] == [16, 16, 3]
  assert len(metadata['normalization']['mean']) == 3


@pytest.mark.slow
def test_resume_finishes_like_an_uninterrupted_run(full_run, folder, tmp_path):
  config, _, full_last = full_run
  workdir = str(tmp_path)
  interrupted = helpers.small_config(f'folder:{folder}', num_epochs=1)
  train.train_and_evaluate(interrupted, workdir)
  assert _checkpoint_steps(workdir) == [4]
  resumed_last = train.train_and_evaluate(config, workdir)
  assert [r['epoch'] for r in _records(workdir)] == [1, 2, 3]
  for key in ('train_loss', 'train_accuracy', 'validation_loss',
              'validation_accuracy'):
    np.testing.assert_allclose(resumed_last[key], full_last[key], rtol=1e-5,
                               err_msg=key)
  assert resumed_last['step'] == full_last['step'] == 12


@pytest.mark.slow
def test_rerun_of_a_finished_run_trains_no_more(full_run):
  config, workdir, full_last = full_run
  before = _records(workdir)
  last = train.train_and_evaluate(config, workdir)
  assert _records(workdir) == before
  assert last == full_last


@pytest.mark.slow
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(
    trained, two_class_folder):
  _, workdir = trained
  checkpoints_before = sorted(os.listdir(os.path.join(workdir, 'checkpoints')))
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    log_before = f.read()
  exploding = helpers.small_config(f'folder:{two_class_folder}',
                                   num_epochs=3, learning_rate=1e30)
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
