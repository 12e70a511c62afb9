"""train_and_evaluate end to end: mock TFDS data and real image folders;
resumed, rerun, and stopped on a diverged loss with its last good checkpoint
kept; refused in a workdir another trainer holds or on a corrupt validation
image; resumed over a damaged metrics.jsonl and after kills with SIGKILL (of
main.py). Most tests read the session's `full_run` (tests/conftest.py)."""

import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from imgclf_jax.checkpoints import checkpoint_store
from imgclf_jax.checkpoints import workdir_lock
from imgclf_jax.config import keys
from imgclf_jax.config import resolve
from imgclf_jax.data import sources
from imgclf_jax.errors import UserError
from imgclf_jax.modes import checkpoint_loader
from imgclf_jax.modes import evaluate
from imgclf_jax.training import train
from tests import helpers
from tests.helpers import train_in as _train

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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
  store = checkpoint_store.CheckpointStore(workdir)
  step, metadata = store.restore_metadata()
  store.close()
  assert step == 12
  assert metadata['class_names'] == ['class_0', 'class_1', 'class_2']
  assert metadata['format_version'] == checkpoint_store.FORMAT_VERSION
  # The config as resolved for this machine's 4 devices.
  assert metadata['config'] == keys.to_dict(
      resolve.for_training(config, 4))
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
def test_the_summary_names_the_epoch_that_step_best_loads(full_run, tmp_path,
                                                         caplog):
  config, full_workdir, _ = full_run
  workdir = str(tmp_path / 'run')
  shutil.copytree(full_workdir, workdir)
  accuracies = [r['validation_accuracy'] for r in _records(workdir)]
  assert accuracies.count(max(accuracies)) > 1  # a tie: the premise
  more = config.copy_and_resolve_references()
  more.num_epochs = 4
  with caplog.at_level('INFO'):
    _train(more, workdir)
  (summary,) = [r.getMessage() for r in caplog.records
                if r.getMessage().startswith('Done in')]
  best = evaluate.evaluate_checkpoint(None, workdir, 'best')
  named = re.search(r'Best epoch (\d+)', summary)
  assert named and int(named.group(1)) == best['epoch'] > 1, summary
  assert (f'Best epoch {best["epoch"]} (step {best["step"]}): '
          f'{best["accuracy"]:.1%} '
          '(--mode=eval --step=best loads it).') in summary


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
  real = train.progress_lib.EpochProgress.step

  def step_or_interrupt(self):
    if self.epoch == epoch and self.done == step:
      raise KeyboardInterrupt
    real(self)
  monkeypatch.setattr(train.progress_lib.EpochProgress, 'step',
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


def test_early_stopping_counts_epochs_without_improvement():
  stopper = train.EarlyStopping('validation_loss', patience=2)
  losses = [1.0, 0.8, 0.9, 0.85, 0.7, 0.75, 0.8]
  stops = [stopper.update({'epoch': i + 1, 'validation_loss': v})
           for i, v in enumerate(losses)]
  assert stops == [False, False, False, True, False, False, True]
  assert stopper.best_epoch == 5 and stopper.best == 0.7
  accuracy = train.EarlyStopping('validation_accuracy', patience=1)
  assert not accuracy.update({'epoch': 1, 'validation_accuracy': 0.5})
  assert not accuracy.update({'epoch': 2, 'validation_accuracy': 0.6})
  assert accuracy.update({'epoch': 3, 'validation_accuracy': 0.6})
  never = train.EarlyStopping('validation_loss', patience=0)
  assert not any(never.update({'epoch': e, 'validation_loss': 1.0})
                 for e in range(1, 5))


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


# ----------------------------------------------------------------------------
# Nothing lost, nothing silent: one trainer per workdir, a damaged
# metrics.jsonl, a corrupt validation image, and kills with SIGKILL.


def test_a_second_trainer_stops_before_writing_anything(tmp_path):
  data = helpers.make_image_folder(tmp_path / 'data', per_class=(6, 6))
  workdir = str(tmp_path / 'run')
  with workdir_lock.TrainLock(workdir) as lock:
    lock.sign()
    with pytest.raises(workdir_lock.WorkdirBusy,
                       match=rf'--workdir={workdir} is in use by another '
                       rf'trainer \(pid {os.getpid()} .*lock file '
                       rf'{lock.path}\)'):
      _train(helpers.small_config(f'folder:{data}'), workdir)
  assert os.listdir(workdir) == ['train.lock']


def test_a_corrupt_validation_image_stops_training_before_it_starts(tmp_path):
  data = helpers.make_image_folder(tmp_path / 'data', per_class=(6, 6))
  config = helpers.small_config(f'folder:{data}')
  # The validation split is carved out of train/: corrupt one of its files.
  bad = sources.make_source(config).files('validation')[-1]
  with open(bad, 'wb') as f:
    f.write(b'not an image')
  workdir = str(tmp_path / 'run')
  with pytest.raises(UserError,
                     match=rf'^cannot decode image file {bad} \(.*\): remove '
                     r'or re-save it, then run the same command again\.$'):
    _train(config, workdir)
  # Refused before its first step: no trace, not even the workdir it made.
  assert not os.path.exists(workdir)


@pytest.mark.slow
def test_a_diverged_run_says_which_files_it_wrote(two_class_folder,
                                                  tmp_path):
  workdir = str(tmp_path / 'run')
  exploding = helpers.small_config(f'folder:{two_class_folder}',
                                   num_epochs=2, learning_rate=1e30)
  with pytest.raises(train.TrainingDiverged) as raised:
    _train(exploding, workdir)
  written = sorted(os.listdir(workdir))
  assert {'class_distribution.json', 'class_distribution.png'} <= set(
      written) and glob.glob(os.path.join(workdir, 'events.out.tfevents.*'))
  assert 'no checkpoint was written' in str(raised.value)
  assert str(raised.value).endswith(
      f' Files this run wrote in {workdir}: {", ".join(written)}.')


@pytest.mark.slow
def test_a_resume_on_a_full_disk_is_one_line_and_writes_nothing(
    trained, tmp_path_factory, capsys):
  from imgclf_jax.modes import dispatch  # pylint: disable=g-import-not-at-top
  config, workdir = trained  # in tmp_path: the disk goes elsewhere
  with helpers.small_disk(tmp_path_factory.mktemp('disk'), '8m') as disk:
    copy = os.path.join(disk, 'run')
    shutil.copytree(workdir, copy)
    helpers.fill_disk(disk)
    before = helpers.snapshot(copy)
    more = config.copy_and_resolve_references()
    more.num_epochs = 2
    with pytest.raises(SystemExit) as exit_info:
      dispatch.run('train', more, copy)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
        f'error: could not write {copy}/train.lock: the disk is full (')
    assert helpers.snapshot(copy) == before


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


# main.py as a user runs it, on one device (tests/test_main.py), killed with
# SIGKILL and run again: it must end where an uninterrupted run ends.
KILL_EPOCHS = 3


def _main_train(data, workdir, log, *extra):
  """Starts `main.py` training in `workdir`; its output goes to `log`."""
  args = [sys.executable, 'main.py', '--config=configs/folder.py',
          f'--workdir={workdir}', f'--config.dataset=folder:{data}',
          '--config.image_size=16', '--config.batch_size=8',
          f'--config.num_epochs={KILL_EPOCHS}', '--config.augment=', *extra]
  env = dict(os.environ, XLA_FLAGS='', TF_CPP_MIN_LOG_LEVEL='2')
  with open(log, 'a') as out:
    return subprocess.Popen(args, cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=out)


def _kill_when(process, ready):
  """SIGKILLs `process` as soon as `ready()` holds (or it ends by itself)."""
  while process.poll() is None and not ready():
    time.sleep(0.005)
  process.kill()
  assert process.wait(timeout=600) in (-signal.SIGKILL, 0)


def _saving(workdir):
  return glob.glob(os.path.join(workdir, 'checkpoints',
                                '*.orbax-checkpoint-tmp*'))


def _lines(workdir):
  try:
    with open(os.path.join(workdir, 'metrics.jsonl')) as f:
      return f.read().count('\n')
  except FileNotFoundError:
    return 0


def _finish(data, workdir, log):
  process = _main_train(data, workdir, log)
  assert process.wait(timeout=600) == 0, open(log).read()[-3000:]


def _final_state(workdir):
  loaded = checkpoint_loader.load(workdir)
  assert loaded.step == KILL_EPOCHS * 4
  return loaded.state


@pytest.mark.slow
def test_runs_killed_in_training_and_in_a_save_end_as_an_uninterrupted_one(
    tmp_path):
  data = helpers.make_image_folder(tmp_path / 'data', per_class=(12, 12, 12))
  log = str(tmp_path / 'log.txt')
  whole = str(tmp_path / 'whole')
  _finish(data, whole, log)
  workdir = str(tmp_path / 'killed')
  # (a) Killed in training, once the first checkpoint has landed.
  _kill_when(_main_train(data, workdir, log), lambda: os.path.isdir(
      os.path.join(workdir, 'checkpoints', '4')))
  # (b) Resumed, and killed in a checkpoint save (or just before it, right
  # after the epoch's line was logged).
  saving, lines = set(_saving(workdir)), _lines(workdir)
  _kill_when(_main_train(data, workdir, log),
             lambda: set(_saving(workdir)) - saving or _lines(workdir) > lines)
  # (c) Resumed with a checkpoint after every step, and killed in the save
  # of a step inside an epoch (4 steps each).
  _kill_when(_main_train(data, workdir, log,
                         '--config.checkpoint_every_steps=1'),
             lambda: any(int(os.path.basename(p).split('.')[0]) % 4
                         for p in _saving(workdir)))
  _finish(data, workdir, log)

  timing = ('train_seconds', 'epoch_seconds')
  def untimed(records):
    return [{k: v for k, v in r.items() if k not in timing} for r in records]
  assert untimed(_records(workdir)) == untimed(_records(whole))
  assert [r['epoch'] for r in _records(workdir)] == list(
      range(1, KILL_EPOCHS + 1))
  killed, uninterrupted = _final_state(workdir), _final_state(whole)
  for a, b in zip(jax.tree.leaves(killed), jax.tree.leaves(uninterrupted),
                  strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow
def test_main_py_refuses_a_workdir_in_training_with_one_error_line(tmp_path):
  data = helpers.make_image_folder(tmp_path / 'data', per_class=(6, 6))
  workdir = str(tmp_path / 'run')
  log = str(tmp_path / 'log.txt')
  with workdir_lock.TrainLock(workdir) as lock:
    lock.sign()
    process = _main_train(data, workdir, log)
    assert process.wait(timeout=600) == 2
  with open(log) as f:
    stderr = f.read()
  errors = [l for l in stderr.splitlines() if l.startswith('error:')]
  assert len(errors) == 1 and 'Traceback' not in stderr
  assert errors[0].startswith(f'error: --workdir={workdir} is in use by '
                              f'another trainer (pid {os.getpid()} on host ')
  assert os.listdir(workdir) == ['train.lock']


# --- BatchNorm models with the strong recipes' parts --------------------------


def _state_arrays(workdir, step):
  loaded = checkpoint_loader.load(workdir, step, mode='eval')
  return loaded.state


@pytest.mark.slow
def test_fast_cifar_trains_and_eval_reproduces_its_last_validation(
    fast_cifar_run):
  config, workdir, last = fast_cifar_run
  records = _records(workdir)
  assert records[-1]['train_loss'] < records[0]['train_loss']
  # The last epoch is also validated with test-time augmentation.
  assert 'validation_tta_accuracy' in records[-1]
  assert 'validation_tta_accuracy' not in records[0]
  result = evaluate.evaluate_checkpoint(None, workdir)
  assert result['tta'] == 'flip'
  assert result['accuracy'] == last['validation_tta_accuracy']
  np.testing.assert_allclose(result['loss'], last['validation_tta_loss'],
                             rtol=1e-6)
  # The state holds BatchNorm statistics and the moving average, both
  # trained away from their initial values.
  state = _state_arrays(workdir, None)
  assert state.batch_stats is not None and state.ema is not None
  ema_mean = state.ema['batch_stats']['ConvGroup_0']['BatchNorm_0']['mean']
  raw_mean = state.batch_stats['ConvGroup_0']['BatchNorm_0']['mean']
  assert np.abs(raw_mean).max() > 0 and not np.allclose(ema_mean, raw_mean)


@pytest.mark.slow
def test_fast_cifar_resumes_exactly_with_batch_stats_and_ema(
    fast_cifar_run, colour_folder, tmp_path):
  config, workdir, full_last = fast_cifar_run
  from tests.conftest import strong_config
  first = strong_config(colour_folder, 'fast_cifar', num_epochs=1)
  train.train_and_evaluate(first, str(tmp_path))
  resumed_last = train.train_and_evaluate(config, str(tmp_path))
  for key in ('train_loss', 'validation_loss', 'validation_accuracy',
              'validation_tta_loss'):
    np.testing.assert_allclose(resumed_last[key], full_last[key], rtol=1e-6,
                               err_msg=key)
  a, b = _state_arrays(workdir, None), _state_arrays(str(tmp_path), None)
  assert a.slow is not None
  for x, y in zip(jax.tree.leaves((a.params, a.batch_stats, a.ema, a.slow)),
                  jax.tree.leaves((b.params, b.batch_stats, b.ema, b.slow))):
    np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_resnet18_trains_on_a_tiny_folder(colour_folder, tmp_path):
  from tests.conftest import strong_config
  config = strong_config(colour_folder, 'resnet18', num_epochs=2,
                         learning_rate=0.05, ema_decay=0.0, tta='none')
  train.train_and_evaluate(config, str(tmp_path))
  records = _records(str(tmp_path))
  assert records[-1]['train_loss'] < records[0]['train_loss']
  result = evaluate.evaluate_checkpoint(None, str(tmp_path))
  assert result['accuracy'] == records[-1]['validation_accuracy']
