"""evaluate.py: --mode=eval of the session's `full_run` (tests/conftest.py):
the final validation metrics again, the model from the checkpoint, other
steps and splits."""

import json
import logging
import os

import numpy as np
import pytest

from imgclf_jax import evaluate

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
