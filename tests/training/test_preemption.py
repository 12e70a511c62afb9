"""Step checkpoints and stop signals: a run stopped inside an epoch (SIGTERM,
Ctrl-C, a step checkpoint then a kill) or at an epoch's last step resumes at
that step and ends exactly as the uninterrupted `full_run`
(tests/conftest.py: 3 epochs of 4 steps on 4 fake devices, running metrics
every 2 steps); a save cut short by a kill is removed and training resumes
from the step before. main.py stopped during its start-up says so in one
line and leaves nothing behind."""

import gc
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
import tensorflow as tf

from imgclf_jax.checkpoints import checkpoint_store
from imgclf_jax.errors import UserError
from imgclf_jax.modes import checkpoint_loader
from imgclf_jax.modes import dispatch
from imgclf_jax.modes import evaluate
from imgclf_jax.modes import train
from imgclf_jax.report import event_files
from imgclf_jax.training import preemption
from imgclf_jax.training import progress as progress_lib
from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TIMING = ('train_seconds', 'epoch_seconds')


def _steps(workdir):
  return sorted(int(os.path.basename(p)) for p in
                glob.glob(os.path.join(workdir, 'checkpoints', '[0-9]*')))


def _untimed_records(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING}
            for line in f]


def _assert_same_state(workdir, other):
  a, b = checkpoint_loader.load(workdir).state, checkpoint_loader.load(other).state
  assert int(a.step) == int(b.step)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _event_steps(workdir):
  """run/tag -> the steps of its summaries, over every event file of
  training (the runs train/ and validation/)."""
  steps = {}
  for path in event_files.files(workdir):
    run = os.path.relpath(os.path.dirname(path), workdir)
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        steps.setdefault(f'{run}/{value.tag}', []).append(event.step)
  return {tag: sorted(s) for tag, s in steps.items()}


def _assert_same_events(workdir, full_workdir):
  """TensorBoard holds each step once, as the uninterrupted run's events;
  images per second may miss a resumed run's first step (which compiles:
  not measured)."""
  got, want = _event_steps(workdir), _event_steps(full_workdir)
  rate = 'train/images_per_second'
  assert set(got.pop(rate)) <= set(want.pop(rate))
  assert got == want


def _signal_at(monkeypatch, signum, epoch, step):
  """Sends `signum` to this process once epoch `epoch` (0-based) has done
  `step` steps: a real signal, handled as the trainer handles it."""
  real = progress_lib.EpochProgress.step

  def step_then_signal(self):
    real(self)
    if self.epoch == epoch and self.done == step:
      os.kill(os.getpid(), signum)
  monkeypatch.setattr(progress_lib.EpochProgress, 'step',
                      step_then_signal)


@pytest.mark.slow
def test_sigterm_saves_the_step_exits_143_and_the_rerun_ends_identically(
    full_run, tmp_path, monkeypatch, capsys):
  config, full_workdir, _ = full_run
  workdir = str(tmp_path)
  handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
  _signal_at(monkeypatch, signal.SIGTERM, epoch=1, step=2)
  with pytest.raises(SystemExit) as exit_info:
    dispatch.run('train', config, workdir)
  assert exit_info.value.code == 143 == preemption.exit_status(signal.SIGTERM)
  assert capsys.readouterr().err.strip().splitlines()[-1] == (
      'stopped: SIGTERM received: training stopped in epoch 2 (its step 2 of '
      f'4) with a checkpoint at step 6 in {workdir}/checkpoints: run the same '
      'command to resume from it.')
  assert _steps(workdir) == [4, 6]
  assert [r['epoch'] for r in _untimed_records(workdir)] == [1]
  # The handlers are the program's own again after training.
  assert (signal.getsignal(signal.SIGTERM),
          signal.getsignal(signal.SIGINT)) == handlers
  monkeypatch.undo()

  train.train_and_evaluate(config, workdir)
  assert _untimed_records(workdir) == _untimed_records(full_workdir)
  _assert_same_state(workdir, full_workdir)
  # TensorBoard holds each step once, as the uninterrupted run's events.
  _assert_same_events(workdir, full_workdir)


@pytest.mark.slow
def test_sigterm_at_an_epochs_last_step_validates_saves_and_resumes_exactly(
    full_run, tmp_path, monkeypatch, capsys):
  config, full_workdir, _ = full_run
  workdir = str(tmp_path)
  _signal_at(monkeypatch, signal.SIGTERM, epoch=0, step=4)
  with pytest.raises(SystemExit) as exit_info:
    dispatch.run('train', config, workdir)
  assert exit_info.value.code == 143
  assert capsys.readouterr().err.strip().splitlines()[-1] == (
      'stopped: SIGTERM received: training stopped at the end of epoch 1 '
      f'with a checkpoint at step 4 in {workdir}/checkpoints: run the same '
      'command to resume from it.')
  # The epoch was validated and logged, and its checkpoint written.
  assert _steps(workdir) == [4]
  assert _untimed_records(workdir) == _untimed_records(full_workdir)[:1]
  monkeypatch.undo()
  train.train_and_evaluate(config, workdir)
  assert _untimed_records(workdir) == _untimed_records(full_workdir)
  _assert_same_state(workdir, full_workdir)


@pytest.mark.slow
def test_ctrl_c_inside_the_first_epoch_saves_its_step_and_resumes_exactly(
    full_run, tmp_path, monkeypatch, capsys):
  config, full_workdir, _ = full_run
  workdir = str(tmp_path)
  _signal_at(monkeypatch, signal.SIGINT, epoch=0, step=3)
  with pytest.raises(SystemExit) as exit_info:
    dispatch.run('train', config, workdir)
  assert exit_info.value.code == 130
  assert 'stopped: SIGINT received: training stopped in epoch 1 (its step 3' \
      in capsys.readouterr().err
  assert _steps(workdir) == [3]
  # No finished epoch: nothing ranks for --step=best, latest evaluates.
  with pytest.raises(UserError, match=r'--step=best: no checkpoint .* ends '
                     r'an epoch \(steps there, inside epochs: \[3\]\)'):
    evaluate.evaluate_checkpoint(None, workdir, 'best')
  assert evaluate.evaluate_checkpoint(None, workdir, 'latest')['step'] == 3
  monkeypatch.undo()
  train.train_and_evaluate(config, workdir)
  assert _untimed_records(workdir) == _untimed_records(full_workdir)
  _assert_same_state(workdir, full_workdir)


@pytest.mark.slow
def test_step_checkpoints_resume_inside_an_epoch_after_a_kill(full_run,
                                                              tmp_path):
  config, full_workdir, _ = full_run
  workdir = str(tmp_path / 'run')
  stepped = config.copy_and_resolve_references()
  stepped.checkpoint_every_steps = 3
  stepped.max_checkpoints_to_keep = 10
  train.train_and_evaluate(stepped, workdir)
  # Every 3 steps (3, 6, 9 inside epochs; 12 ends one) and every epoch's end.
  assert _steps(workdir) == [3, 4, 6, 8, 9, 12]
  assert _untimed_records(workdir) == _untimed_records(full_workdir)
  _, metadata = checkpoint_store.CheckpointStore(workdir).restore_metadata(9)
  assert metadata['epoch'] == 2 and set(metadata['epoch_train_sums']) == {
      'loss', 'accuracy'}
  # A kill -9 after step 9's checkpoint, in the middle of step 12's save:
  # the last epoch's line was logged, its checkpoint is a temporary folder.
  os.rename(os.path.join(workdir, 'checkpoints', '12'),
            os.path.join(workdir, 'checkpoints',
                         '12.orbax-checkpoint-tmp-1234567'))
  train.train_and_evaluate(stepped, workdir)
  assert not glob.glob(os.path.join(workdir, 'checkpoints', '*tmp*'))
  assert _steps(workdir) == [3, 4, 6, 8, 9, 12]
  assert _untimed_records(workdir) == _untimed_records(full_workdir)
  _assert_same_state(workdir, full_workdir)
  # The events of steps 10 and 12, written before the kill, were cut: each
  # step once, as in the uninterrupted run.
  _assert_same_events(workdir, full_workdir)


def test_an_unfinished_save_is_removed_with_a_log_line(trained, caplog):
  _, workdir = trained
  tmp = os.path.join(workdir, 'checkpoints', '4.orbax-checkpoint-tmp-99')
  shutil.copytree(os.path.join(workdir, 'checkpoints', '2'), tmp)
  store = checkpoint_store.CheckpointStore(workdir, max_to_keep=3)
  assert store.steps() == [2]
  with caplog.at_level('WARNING'):
    store.remove_unfinished()
  store.close()
  assert not os.path.exists(tmp)
  assert (f'Removed {tmp}: a checkpoint save that did not finish' in
          caplog.text and 'resumes from the latest complete step (2)' in
          caplog.text)


def test_event_files_cut_after_keeps_earlier_steps_and_the_file_header(
    tmp_path):
  writer = tf.summary.create_file_writer(str(tmp_path))
  with writer.as_default():
    for step in range(1, 7):
      tf.summary.scalar('loss', 1.0 / step, step=step)
  writer.close()
  assert event_files.cut_after(str(tmp_path), 4) == 2
  assert _event_steps(str(tmp_path)) == {'./loss': [1, 2, 3, 4]}
  (path,) = event_files.files(str(tmp_path))
  first = next(tf.compat.v1.train.summary_iterator(path))
  assert first.file_version.startswith('brain.Event')
  assert event_files.cut_after(str(tmp_path), 4) == 0  # nothing more


def test_event_files_cut_after_cuts_both_runs_of_training(tmp_path):
  # A workdir resumed from before the runs (events in the workdir itself)
  # and then written in train/ and validation/.
  old = tf.summary.create_file_writer(str(tmp_path))
  with old.as_default():
    tf.summary.scalar('train_loss', 1.0, step=4)
  old.close()
  writer = event_files.TrainingWriter(str(tmp_path))
  for step in (4, 8, 12):
    writer.write_running(step - 2, 1.0, 0.5, 100.0)
    writer.write_epoch(step, {
        'epoch': step // 4, 'step': step, 'train_loss': 1.0,
        'train_accuracy': 0.5, 'validation_loss': 1.1,
        'validation_accuracy': 0.4, 'learning_rate': 1e-3,
        'train_seconds': 1.0, 'epoch_seconds': 1.5})
  writer.flush()
  train_tags = {'train/loss': [4, 8, 12], 'train/accuracy': [4, 8, 12],
                'train/loss_running': [2, 6, 10],
                'train/accuracy_running': [2, 6, 10],
                'train/images_per_second': [2, 6, 10],
                'train/learning_rate': [4, 8, 12],
                'train/train_seconds': [4, 8, 12],
                'train/epoch_seconds': [4, 8, 12]}
  assert _event_steps(str(tmp_path)) == {
      './train_loss': [4], **train_tags,
      'validation/loss': [4, 8, 12], 'validation/accuracy': [4, 8, 12]}
  # Cut: train/'s 5 epoch tags at steps 8 and 12 and 3 running ones at 10,
  # validation/'s 2 tags at 8 and 12.
  assert event_files.cut_after(str(tmp_path), 6) == 5 * 2 + 3 + 2 * 2
  assert _event_steps(str(tmp_path)) == {
      './train_loss': [4],
      **{tag: [s for s in steps if s <= 6] for tag, steps in
         train_tags.items()},
      'validation/loss': [4], 'validation/accuracy': [4]}


def test_only_ctrl_c_says_a_second_one_stops_at_once(caplog):
  # (Real signals to this process, while StopSignals handles them.)
  said = {}
  for signum in (signal.SIGTERM, signal.SIGINT):
    caplog.clear()
    with caplog.at_level('WARNING'), preemption.StopSignals() as stop:
      os.kill(os.getpid(), signum)
      assert stop.requested(1) and stop.signum == signum
    said[signum] = caplog.messages
  assert said[signal.SIGTERM] == [
      'SIGTERM received: training stops after this step, with a checkpoint '
      'at it.']
  assert said[signal.SIGINT] == [
      'SIGINT (Ctrl-C) received: training stops after this step, with a '
      'checkpoint at it (Ctrl-C again: stop at once).']


def test_checkpoint_every_steps_must_not_be_negative(two_class_folder):
  from imgclf_jax.config import resolve  # pylint: disable=g-import-not-at-top
  from tests import helpers  # pylint: disable=g-import-not-at-top
  config = helpers.small_config(f'folder:{two_class_folder}',
                                checkpoint_every_steps=-1)
  with pytest.raises(UserError, match='checkpoint_every_steps=-1'):
    resolve.for_training(config, 1)


@pytest.mark.slow
@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT])
def test_a_stop_during_start_up_is_one_line_and_leaves_no_trace(tmp_path,
                                                                signum):
  data = helpers.make_image_folder(tmp_path / 'data', per_class=(6, 6))
  workdir = tmp_path / 'run'
  log = tmp_path / 'stderr.txt'
  args = [sys.executable, 'main.py', '--config=configs/folder.py',
          f'--workdir={workdir}', f'--config.dataset=folder:{data}',
          '--config.image_size=16', '--config.batch_size=8']
  env = dict(os.environ, XLA_FLAGS='', TF_CPP_MIN_LOG_LEVEL='2')
  with open(log, 'w') as err:
    process = subprocess.Popen(args, cwd=ROOT, env=env, stderr=err,
                               stdout=subprocess.DEVNULL)
  # Signed: the checks that may refuse the run are done, the data and the
  # model not yet set up (seconds before the first step).
  while not os.path.exists(workdir / 'train.lock'):
    assert process.poll() is None, log.read_text()[-3000:]
    time.sleep(0.005)
  process.send_signal(signum)
  if signum == signal.SIGINT:  # and Ctrl-C again, once the line is out
    while process.poll() is None and 'stopped:' not in log.read_text():
      time.sleep(0.005)
    process.send_signal(signum)
  assert process.wait(timeout=600) == preemption.exit_status(signum)
  stderr = log.read_text()
  assert 'Traceback' not in stderr and 'Exception ignored' not in stderr, (
      stderr[-3000:])
  assert stderr.strip().splitlines()[-1] == (
      f'stopped: {signal.Signals(signum).name} received: training stopped '
      'during start-up, before its first step; no checkpoint was written yet '
      '(a rerun starts anew).')
  assert not os.path.exists(workdir)  # made by the run: removed


@pytest.fixture
def restores_signals():
  """The signal handlers and sys.unraisablehook put back after the test
  (preemption.stop_on_signals changes them)."""
  handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
  hook = sys.unraisablehook
  yield
  sys.unraisablehook = hook
  for signum, handler in handlers.items():
    signal.signal(signum, handler)


def test_a_stop_that_library_code_lost_stops_the_start_up_quietly(
    restores_signals):
  # The handler's SignalStop may be raised inside a library's bare
  # `except:` (JAX has several around its C++ calls) and dropped there, or
  # in a garbage-collector callback, where Python cannot raise it: the
  # training steps must not begin, and nothing is printed about it.
  del restores_signals
  unraisable = []
  sys.unraisablehook = unraisable.append  # what Python would print
  def send(phase, info):
    del info
    if phase == 'start':
      signal.raise_signal(signal.SIGTERM)  # the handler runs in here
  for lose in ('bare except', 'gc callback'):
    preemption.stop_on_signals()
    try:
      if lose == 'bare except':
        signal.raise_signal(signal.SIGINT)
      else:
        gc.callbacks.append(send)
        gc.collect()
    except:  # pylint: disable=bare-except
      pass
    finally:
      if send in gc.callbacks:
        gc.callbacks.remove(send)
    with pytest.raises(preemption.SignalStop) as e:
      with preemption.StopSignals():
        pass
    assert e.value.during_startup, lose
    assert e.value.signum == (signal.SIGINT if lose == 'bare except'
                              else signal.SIGTERM)
    with preemption.StopSignals():  # raised once
      pass
  assert not unraisable


def test_a_signal_after_the_last_line_ends_the_command_at_once_with_its_status():
  # Between the last line and the process's end (exit handlers, the
  # command's own exit_at_once_on_signals) a Ctrl-C is no traceback.
  script = ('import os, signal, sys, time\n'
            'from imgclf_jax.training import preemption\n'
            'preemption.stop_on_signals()\n'
            "preemption.write_last_line('error: the last line.', 2)\n"
            'os.kill(os.getpid(), signal.SIGINT)\n'
            'time.sleep(5)\n'
            "print('after the last line', file=sys.stderr)\n")
  done = subprocess.run([sys.executable, '-c', script], cwd=ROOT,
                        capture_output=True, text=True, timeout=120)
  assert (done.returncode, done.stderr) == (2, 'error: the last line.\n')


def test_eval_and_predict_stop_at_their_first_batch_after_a_lost_stop(
    restores_signals):
  from imgclf_jax.modes import predict  # pylint: disable=g-import-not-at-top
  from imgclf_jax.training import eval_loop  # pylint: disable=g-import-not-at-top
  del restores_signals
  images = [np.zeros((4, 4, 3), np.uint8)] * 3
  batch = {'image': np.zeros((2, 4, 4, 3), np.float32),
           'label': np.eye(2, dtype=np.float32)}
  passes = {
      'predict': lambda: predict.probabilities(
          None, images, {'mean': [0.5] * 3, 'std': [0.5] * 3}, 2),
      'eval': lambda: eval_loop.evaluate_split(None, [batch])}
  for run in passes.values():
    preemption.stop_on_signals()
    try:
      signal.raise_signal(signal.SIGINT)
    except:  # pylint: disable=bare-except
      pass
    with pytest.raises(preemption.SignalStop):  # not a TypeError of None
      list(run())


def test_export_writes_nothing_after_a_stop_lost_in_its_tracing(
    trained, monkeypatch, restores_signals):
  from imgclf_jax.modes import export  # pylint: disable=g-import-not-at-top
  del restores_signals
  _, workdir = trained
  save = export._save  # pylint: disable=protected-access
  def save_and_lose_a_stop(*args):
    save(*args)
    try:
      signal.raise_signal(signal.SIGTERM)
    except:  # pylint: disable=bare-except
      pass
  monkeypatch.setattr(export, '_save', save_and_lose_a_stop)
  preemption.stop_on_signals()
  with pytest.raises(preemption.SignalStop):
    export.export_checkpoint(None, workdir)
  assert not os.path.exists(os.path.join(workdir, 'export', 'step2'))
  assert os.listdir(os.path.join(workdir, 'export')) == []
