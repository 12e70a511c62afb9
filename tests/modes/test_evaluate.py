"""evaluate.py: --mode=eval of the session's `full_run` (tests/conftest.py):
the final validation metrics again, the model from the checkpoint, other
steps and splits; a folder with only a test split, and one of class folders
without split folders."""

import json
import logging
import os
import shutil

import numpy as np
import pytest

from imgclf_jax.modes import evaluate
from imgclf_jax.modes import predict
from tests import helpers

pytestmark = pytest.mark.slow


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


def test_eval_of_an_earlier_step_and_another_split(full_run):
  config, workdir, _ = full_run
  result = evaluate.evaluate_checkpoint(None, workdir, step=8)
  assert result['step'] == 8 and result['epoch'] == 2
  other = config.copy_and_resolve_references()
  other.eval_split = 'train'
  result = evaluate.evaluate_checkpoint(other, workdir)
  assert result['split'] == 'train' and result['num_examples'] == 33


def test_eval_and_predict_on_a_folder_with_only_a_test_split(run, tmp_path):
  # root/test/<class>/ alone (no train split): the classes come from the
  # checkpoint. The images are the report run's test split, copied.
  data, trained_workdir, config, expected = run
  root = tmp_path / 'eval_only'
  shutil.copytree(os.path.join(data, 'test'), root / 'test')
  workdir = str(tmp_path / 'run')
  shutil.copytree(trained_workdir, workdir)
  given = config.copy_and_resolve_references()
  given.dataset, given.eval_split = f'folder:{root}', 'test'
  result = evaluate.evaluate_checkpoint(given, workdir)
  assert result['dataset'] == f'folder:{root}' and result['num_examples'] == 36
  assert result['accuracy'] == expected['accuracy']
  assert result['confusion_matrix'] == expected['confusion_matrix']
  predicted = {os.path.relpath(r['file'], root): r['predicted']
               for r in helpers.read_csv(os.path.join(
                   workdir, result['files']['predictions_csv']))}
  # Predict on the folder: every image below it, the same answers.
  out = predict.predict_images(None, workdir, str(root))
  assert len(out['predictions']) == 36 and not out['skipped']
  for row in out['predictions']:
    assert row['top_k'][0][0] == predicted[os.path.relpath(row['file'], root)]


def test_eval_of_a_validation_folder_reads_nothing_of_the_train_folder(
    run, tmp_path, caplog):
  # The report run's test images as root/validation/, and no root/train/:
  # evaluating the validation split needs no training image (not decoded,
  # not cached, not counted for the cache).
  data, trained_workdir, config, expected = run
  root = tmp_path / 'validation_only'
  shutil.copytree(os.path.join(data, 'test'), root / 'validation')
  workdir = str(tmp_path / 'run')
  shutil.copytree(trained_workdir, workdir)
  given = config.copy_and_resolve_references()
  given.dataset, given.eval_split = f'folder:{root}', 'validation'
  with caplog.at_level(logging.INFO):
    result = evaluate.evaluate_checkpoint(given, workdir)
  assert result['split'] == 'validation' and result['num_examples'] == 36
  assert result['accuracy'] == expected['accuracy']
  assert result['confusion_matrix'] == expected['confusion_matrix']
  assert 'Caching the 36 validation images' in caplog.text
  assert ' train ' not in caplog.text


def test_train_and_eval_on_a_root_of_class_folders(tmp_path):
  # root/<class>/<file> (Keras / torchvision): validation held out of it.
  root = helpers.make_image_folder(tmp_path / 'data', per_class=(10, 10),
                                   splits=('',))
  workdir = str(tmp_path / 'run')
  last = helpers.train_in(helpers.small_config(f'folder:{root}'), workdir)
  assert last['epoch'] == 2
  result = evaluate.evaluate_checkpoint(None, workdir)
  assert result['num_examples'] == 2  # 10% of each class
  assert result['accuracy'] == last['validation_accuracy']
  assert {os.path.dirname(e['file']) for e in result['examples']['grid']} == {
      os.path.join(root, 'class_0'), os.path.join(root, 'class_1')}
