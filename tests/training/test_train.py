"""train.py's run end to end (through modes/train.py's train_and_evaluate):
mock TFDS data and real image folders, what a run writes and its checkpoints
hold; refused in a workdir another trainer holds; resumed after kills with
SIGKILL (of main.py); BatchNorm models with the strong recipes' parts.
Resumes are test_resume.py's, the loop's ways to end test_loop.py's. Most
tests read the session's `full_run` (tests/conftest.py)."""

import glob
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
from imgclf_jax.modes import checkpoint_loader
from imgclf_jax.modes import evaluate
from imgclf_jax.modes import train
from tests import helpers
from tests.helpers import checkpoint_steps as _checkpoint_steps
from tests.helpers import records as _records
from tests.helpers import train_in as _train

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _assert_outputs(workdir, epochs, steps_per_epoch):
  assert _checkpoint_steps(workdir) == [
      steps_per_epoch * (e + 1) for e in range(epochs)][-3:]
  for run in ('train', 'validation'):
    assert glob.glob(os.path.join(workdir, run, 'events.out.tfevents.*'))
  assert not glob.glob(os.path.join(workdir, 'events.out.tfevents.*'))
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


# ----------------------------------------------------------------------------
# Nothing lost, nothing silent: one trainer per workdir, and kills with
# SIGKILL.


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
    assert os.listdir(workdir) == ['train.lock']  # the holder's alone
  assert os.listdir(workdir) == []  # which it removes at its exit


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
    assert os.listdir(workdir) == ['train.lock']  # the holder's alone
  with open(log) as f:
    stderr = f.read()
  errors = [l for l in stderr.splitlines() if l.startswith('error:')]
  assert len(errors) == 1 and 'Traceback' not in stderr
  assert errors[0].startswith(f'error: --workdir={workdir} is in use by '
                              f'another trainer (pid {os.getpid()} on host ')


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
