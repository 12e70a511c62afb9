"""resume.py through whole runs: a resumed run ends as an uninterrupted one,
a rerun of a finished run writes nothing, and a resume mends the metrics.jsonl
of a kill during a save. Most tests read the session's `full_run`
(tests/conftest.py)."""

import os
import shutil

import numpy as np
import pytest

from imgclf_jax.modes import train
from tests import helpers
from tests.helpers import checkpoint_steps as _checkpoint_steps
from tests.helpers import records as _records
from tests.helpers import train_in as _train


@pytest.fixture
def folder(colour_folder):
  """The folder `full_run` trained on (tests/conftest.py)."""
  return colour_folder


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
def test_rerun_of_a_finished_run_trains_no_more_and_writes_nothing(
    full_run, caplog):
  config, workdir, full_last = full_run
  before = helpers.snapshot(workdir)
  with caplog.at_level('INFO'):
    last = train.train_and_evaluate(config, workdir)
  assert helpers.snapshot(workdir) == before   # no new events file either
  assert last == full_last
  assert 'Already trained 3/3 epochs: nothing to do. Raise --config.num_epochs' \
      in caplog.text


@pytest.mark.slow
def test_resume_mends_a_torn_and_garbled_log_of_a_kill_during_a_save(
    full_run, tmp_path, caplog):
  config, full_workdir, _ = full_run
  workdir = str(tmp_path / 'run')
  shutil.copytree(full_workdir, workdir)
  # A kill while epoch 3's checkpoint was saved (its line was logged, the
  # checkpoint never landed), a garbled line, and a line torn by the kill.
  shutil.rmtree(os.path.join(workdir, 'checkpoints', '12'))
  path = os.path.join(workdir, 'metrics.jsonl')
  with open(path) as f:
    lines = f.readlines()
  with open(path, 'w') as f:
    f.writelines([lines[0], 'garbage\n', *lines[1:], lines[2][:20]])
  last = _train(config, workdir)
  assert f'{path}: cut line 2' in caplog.text
  assert 'the records of epochs [3], past the epoch of the checkpoint (2)' in (
      caplog.text)
  records = _records(workdir)  # every line parses
  full = _records(full_workdir)
  assert [(r['epoch'], r['step']) for r in records] == [
      (r['epoch'], r['step']) for r in full] == [(1, 4), (2, 8), (3, 12)]
  assert records[:2] == full[:2] and last == records[2]
  for key in ('train_loss', 'validation_loss', 'validation_accuracy'):
    np.testing.assert_allclose(last[key], full[2][key], rtol=1e-5,
                               err_msg=key)


@pytest.mark.slow
def test_resume_writes_a_torn_last_record_again_from_its_checkpoint(
    full_run, tmp_path, caplog):
  # Epoch 3's line torn although its checkpoint landed (a crash before the
  # file reached the disk): the checkpoint holds the record, which a run
  # resumed for a 4th epoch writes back in its place.
  config, full_workdir, _ = full_run
  workdir = str(tmp_path / 'run')
  shutil.copytree(full_workdir, workdir)
  path = os.path.join(workdir, 'metrics.jsonl')
  with open(path) as f:
    lines = f.readlines()
  with open(path, 'w') as f:
    f.writelines([*lines[:2], lines[2][:30]])
  longer = config.copy_and_resolve_references()
  longer.num_epochs = 4
  _train(longer, workdir)
  assert f'{path}: the record of epoch 3 written again from its ' + (
      'checkpoint.') in caplog.messages
  assert 'lost' not in caplog.text
  records = _records(workdir)
  assert [r['epoch'] for r in records] == [1, 2, 3, 4]
  assert records[:3] == _records(full_workdir)
