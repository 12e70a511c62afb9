"""loop.py through whole runs: TensorBoard's running and epoch values, a
Ctrl-C (Interrupted) that keeps the checkpoint and draws the curves, early
stopping, and a diverged loss (TrainingDiverged) that keeps the last good
checkpoint. Most tests read the session's `full_run` (tests/conftest.py)."""

import glob
import os
import re
import shutil

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


def _tensorboard_runs(logdir):
  """{run: {tag: [(step, value)]}}: the scalars as TensorBoard reads a
  --logdir (its own event multiplexer; runs are the folders with events)."""
  from tensorboard.backend.event_processing import (  # pylint: disable=g-import-not-at-top
      plugin_event_multiplexer)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  multiplexer = plugin_event_multiplexer.EventMultiplexer()
  multiplexer.AddRunsFromDirectory(logdir)
  multiplexer.Reload()
  scalars = multiplexer.PluginRunToTagToContent('scalars')
  return {run: {tag: [(e.step, float(tf.make_ndarray(e.tensor_proto)))
                      for e in multiplexer.Tensors(run, tag)]
                for tag in tags}
          for run, tags in scalars.items()}


@pytest.mark.slow
def test_tensorboard_draws_train_validation_and_eval_on_one_chart(
    full_run, tmp_path):
  _, full_workdir, _ = full_run
  workdir = str(tmp_path / 'run')  # (without other tests' eval runs)
  shutil.copytree(full_workdir, workdir,
                  ignore=shutil.ignore_patterns('eval_*'))
  evaluate.evaluate_checkpoint(None, workdir)
  runs = _tensorboard_runs(workdir)
  assert sorted(runs) == ['eval_validation', 'train', 'validation']
  records = _records(workdir)
  # The same tags in train/ and validation/ (one chart each in TensorBoard):
  # the epoch means at the epochs' last steps, as in metrics.jsonl.
  for run in ('train', 'validation'):
    for tag in ('loss', 'accuracy'):
      assert runs[run][tag] == [
          (r['step'], pytest.approx(r[f'{run}_{tag}'])) for r in records], (
              run, tag)
  assert {'loss', 'accuracy'} <= set(runs['eval_validation'])
  assert runs['eval_validation']['accuracy'] == [
      (12, pytest.approx(records[-1]['validation_accuracy']))]
  # Running values (4 steps per epoch, log_every_steps 2: steps 2, 4, ...)
  # and the rest in train/ only.
  assert [s for s, _ in runs['train']['loss_running']] == [2, 4, 6, 8, 10, 12]
  assert {'accuracy_running', 'images_per_second', 'learning_rate',
          'train_seconds', 'epoch_seconds'} <= set(runs['train'])
  assert set(runs['validation']) == {'loss', 'accuracy'}


def _interrupt_at(monkeypatch, epoch, step):
  real = progress_lib.EpochProgress.step

  def step_or_interrupt(self):
    if self.epoch == epoch and self.done == step:
      raise KeyboardInterrupt
    real(self)
  monkeypatch.setattr(progress_lib.EpochProgress, 'step',
                      step_or_interrupt)


@pytest.mark.slow
def test_progress_is_logged_every_n_seconds_as_well(two_class_folder,
                                                    tmp_path, caplog):
  # 2 steps per epoch, log_every_steps far away: the log points are those
  # of log_every_seconds (here any step); the first step's holds no img/s.
  config = helpers.small_config(f'folder:{two_class_folder}', num_epochs=1,
                                log_every_steps=1000, log_every_seconds=1e-9)
  with caplog.at_level('INFO'):
    _train(config, tmp_path)
  shown = [m for m in caplog.messages if m.startswith('epoch 1/1: step ')]
  assert len(shown) == 2
  assert re.fullmatch(r'epoch 1/1: step 1/2, loss \d\.\d{4}, accuracy '
                      r'\d+\.\d%', shown[0]), shown[0]
  assert re.fullmatch(r'epoch 1/1: step 2/2, loss \d\.\d{4}, accuracy '
                      r'\d+\.\d%, [\d,]+ img/s, epoch ETA 0s', shown[1]), (
                          shown[1])
  runs = _tensorboard_runs(str(tmp_path))
  assert [s for s, _ in runs['train']['loss_running']] == [1, 2]
  assert [s for s, _ in runs['train']['images_per_second']] == [2]


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


@pytest.mark.slow
def test_a_diverged_run_says_which_files_it_wrote(two_class_folder,
                                                  tmp_path):
  workdir = str(tmp_path / 'run')
  exploding = helpers.small_config(f'folder:{two_class_folder}',
                                   num_epochs=2, learning_rate=1e30)
  with pytest.raises(loop.TrainingDiverged) as raised:
    _train(exploding, workdir)
  written = sorted(os.listdir(workdir))
  assert {'class_distribution.json', 'class_distribution.png'} <= set(
      written) and glob.glob(os.path.join(workdir, '*', 'events.out.tfevents.*'))
  assert 'no checkpoint was written' in str(raised.value)
  assert str(raised.value).endswith(
      f' Files this run wrote in {workdir}: {", ".join(written)}.')
