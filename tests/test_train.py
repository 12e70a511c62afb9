"""train_and_evaluate end to end: mock TFDS data and real image folders."""

import glob
import json
import logging
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


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
  return helpers.make_image_folder(tmp_path_factory.mktemp('data'),
                                   per_class=(12, 12, 12), ext='jpg')


@pytest.fixture(scope='module')
def full_run(folder, tmp_path_factory):
  """Three uninterrupted epochs on the generated folder."""
  workdir = str(tmp_path_factory.mktemp('full'))
  config = helpers.small_config(f'folder:{folder}', num_epochs=3)
  last = train.train_and_evaluate(config, workdir)
  return config, workdir, last


def test_folder_run_writes_checkpoints_events_metrics_and_curves(full_run):
  _, workdir, last = full_run
  records = _assert_outputs(workdir, epochs=3, steps_per_epoch=4)
  assert last == records[-1]
  # Three colours are easy: the model must have learnt them.
  assert last['validation_accuracy'] >= 0.5


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


def test_rerun_of_a_finished_run_trains_no_more(full_run):
  config, workdir, full_last = full_run
  before = _records(workdir)
  last = train.train_and_evaluate(config, workdir)
  assert _records(workdir) == before
  assert last == full_last


def test_eval_mode_reproduces_the_final_validation_metrics(full_run, caplog):
  config, workdir, last = full_run
  # --mode=eval takes the model from the checkpoint: a config file's other
  # image_size (a user who trained with --config.image_size=...) is ignored.
  other_size = config.copy_and_resolve_references()
  other_size.image_size = config.image_size * 2
  for given in (None, config, other_size):
    caplog.clear()
    with caplog.at_level(logging.WARNING):
      result = evaluate.evaluate_checkpoint(given, workdir)
    warned = '--mode=eval uses the model of the checkpoint' in caplog.text
    assert warned == (given is other_size), caplog.text
    assert result['step'] == 12 and result['split'] == 'validation'
    assert result['accuracy'] == last['validation_accuracy']
    np.testing.assert_allclose(result['loss'], last['validation_loss'],
                               rtol=1e-6)
  with open(os.path.join(workdir, 'eval_validation_step12.json')) as f:
    assert json.load(f)['accuracy'] == last['validation_accuracy']


def test_eval_of_an_earlier_step_and_another_split(full_run, folder):
  config, workdir, _ = full_run
  result = evaluate.evaluate_checkpoint(None, workdir, step=8)
  assert result['step'] == 8 and result['epoch'] == 2
  other = config.copy_and_resolve_references()
  other.eval_split = 'train'
  result = evaluate.evaluate_checkpoint(other, workdir)
  assert result['split'] == 'train' and result['num_examples'] == 33
