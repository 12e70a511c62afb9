"""loop.py through whole runs: TensorBoard's running and epoch values, a
Ctrl-C (Interrupted) that keeps the checkpoint and draws the curves, early
stopping, and a diverged loss (TrainingDiverged) that keeps the last good
checkpoint. Most tests read the session's `full_run` (tests/conftest.py)."""

import glob
import os

import numpy as np
import pytest

from imgclf_jax.modes import evaluate
from imgclf_jax.modes import train
from imgclf_jax.training import loop
from imgclf_jax.training import progress as progress_lib
from tests import helpers
from tests.helpers import checkpoint_steps as _checkpoint_steps
from tests.helpers import records as _records
from tests.helpers import train_in as _train


@pytest.fixture
def folder(colour_folder):
  """The folder `full_run` trained on (tests/conftest.py)."""
  return colour_folder


@pytest.mark.slow
def test_tensorboard_keeps_running_and_epoch_values_apart(full_run):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  _, workdir, _ = full_run
  steps_of = {}
  for path in glob.glob(os.path.join(workdir, 'events.out.tfevents.*')):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        steps_of.setdefault(value.tag, []).append(event.step)
  # 4 steps per epoch, log_every_steps 2: running values at steps 2, 4, ...;
  # epoch means at the epochs' last steps only.
  assert sorted(steps_of['train_loss']) == [4, 8, 12]
  assert sorted(steps_of['train_loss_running']) == [2, 4, 6, 8, 10, 12]
  assert 'train_images_per_second' in steps_of


def _interrupt_at(monkeypatch, epoch, step):
  real = progress_lib.EpochProgress.step

  def step_or_interrupt(self):
    if self.epoch == epoch and self.done == step:
      raise KeyboardInterrupt
    real(self)
  monkeypatch.setattr(progress_lib.EpochProgress, 'step',
                      step_or_interrupt)


@pytest.mark.slow
def test_ctrl_c_keeps_the_checkpoint_draws_the_curves_and_resumes(
    full_run, folder, tmp_path, monkeypatch, capsys):
  from imgclf_jax.modes import dispatch  # pylint: disable=g-import-not-at-top
  config, _, full_last = full_run
  workdir = str(tmp_path)
  _interrupt_at(monkeypatch, epoch=1, step=2)
  with pytest.raises(SystemExit) as exit_info:
    dispatch.run('train', config, workdir)
  assert exit_info.value.code == 130
  err = capsys.readouterr().err.strip().splitlines()
  assert err[-1] == (
      f'interrupted: training stopped in epoch 2; the last checkpoint (step '
      f'4) is kept in {workdir}/checkpoints: run the same command to resume '
      'from it.')
  assert _checkpoint_steps(workdir) == [4]
  assert [r['epoch'] for r in _records(workdir)] == [1]
  assert os.path.exists(os.path.join(workdir, 'curves.png'))
  monkeypatch.undo()
  resumed_last = train.train_and_evaluate(config, workdir)
  np.testing.assert_allclose(resumed_last['validation_loss'],
                             full_last['validation_loss'], rtol=1e-5)


@pytest.mark.slow
def test_early_stopping_stops_keeps_its_checkpoint_and_reruns_say_so(
    folder, tmp_path, caplog):
  # A learning rate too small to change anything: the accuracy of epoch 1
  # is never beaten.
  config = helpers.small_config(
      f'folder:{folder}', num_epochs=4, learning_rate=1e-12,
      early_stopping_patience=1, early_stopping_metric='validation_accuracy')
  last = train.train_and_evaluate(config, str(tmp_path))
  assert last['epoch'] == 2 and _checkpoint_steps(str(tmp_path))[-1] == 8
  before = helpers.snapshot(str(tmp_path))
  with caplog.at_level('INFO'):
    again = train.train_and_evaluate(config, str(tmp_path))
  assert again == last and helpers.snapshot(str(tmp_path)) == before
  assert 'Stopped early: validation_accuracy has not improved for 1 epochs' \
      in caplog.text
  assert 'raise --config.early_stopping_patience' in caplog.text
  config.early_stopping_patience = 0
  assert train.train_and_evaluate(config, str(tmp_path))['epoch'] == 4


@pytest.mark.slow
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(
    trained, two_class_folder):
  _, workdir = trained
  checkpoints_before = sorted(os.listdir(os.path.join(workdir, 'checkpoints')))
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    log_before = f.read()
  exploding = helpers.small_config(f'folder:{two_class_folder}',
                                   num_epochs=3, learning_rate=1e30)
  with pytest.raises(loop.TrainingDiverged,
                     match=r'loss became .*nan.*last good checkpoint \(step 2\)'):
    _train(exploding, workdir)
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == (
      checkpoints_before)
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    assert f.read() == log_before
  # The kept checkpoint still restores and evaluates.
  result = evaluate.evaluate_checkpoint(None, workdir)
  assert result['step'] == 2 and 0 <= result['accuracy'] <= 1
