"""metrics.py: the metrics accumulated over steps, and the per-epoch log
(metrics.jsonl) read and cut back on resume."""

import json
import os

import jax.numpy as jnp
import numpy as np

from imgclf_jax.training import metrics as metrics_lib


def test_accumulator_sums_every_step_including_the_newest():
  accumulator = metrics_lib.Accumulator()
  assert accumulator.result() is None
  sums = [(1.0, 2.0, 4.0), (3.0, 1.0, 4.0), (5.0, 4.0, 8.0)]
  for i, (loss, correct, count) in enumerate(sums):
    accumulator.add(metrics_lib.Metrics.from_sums(
        jnp.float32(loss), jnp.float32(correct), jnp.float32(count)))
    values = accumulator.result().compute()
    seen = sums[:i + 1]
    total = sum(s[2] for s in seen)
    np.testing.assert_allclose(values['loss'], sum(s[0] for s in seen) / total)
    np.testing.assert_allclose(values['accuracy'],
                               sum(s[1] for s in seen) / total)


# ----------------------------------------------------------------------------
# EpochLog: metrics.jsonl, read and cut back on resume


def _record(epoch, **values):
  return {'epoch': epoch, 'step': 4 * epoch, 'train_loss': 1.0 / epoch,
          **values}


def _write(path, *lines):
  path.write_text(''.join(lines))


def _line(record):
  return json.dumps(record) + '\n'


def _file_records(path):
  return [json.loads(line) for line in path.read_text().splitlines()]


def test_resume_cuts_a_torn_last_line_and_the_next_record_reads(tmp_path,
                                                                caplog):
  log = metrics_lib.EpochLog(str(tmp_path))
  path = tmp_path / 'metrics.jsonl'
  _write(path, _line(_record(1)), _line(_record(2)), '{"epoch": 3, "st')
  log.resume(2)
  assert path.read_text() == _line(_record(1)) + _line(_record(2))
  assert f'{path}: cut line 3 (cut short, the last line' in caplog.text
  log.append(_record(3))  # would have joined the torn line
  assert log.read() == [_record(1), _record(2), _record(3)]
  assert os.listdir(tmp_path) == ['metrics.jsonl']  # no temporary file left


def test_resume_writes_a_torn_record_of_the_checkpoints_epoch_again(
    tmp_path, caplog):
  # Epoch 2's line torn (its checkpoint landed): the checkpoint's record of
  # epoch 2 takes its place, and the next record follows it.
  log = metrics_lib.EpochLog(str(tmp_path))
  path = tmp_path / 'metrics.jsonl'
  _write(path, _line(_record(1)), '{"epoch": 2, "st')
  log.resume(2, saved=_record(2))
  assert path.read_text() == _line(_record(1)) + _line(_record(2))
  assert f'{path}: cut line 2 (cut short, the last line' in caplog.text
  assert f'{path}: the record of epoch 2 written again from its checkpoint.' in (
      caplog.messages)
  assert 'lost' not in caplog.text
  log.append(_record(3))
  assert log.read() == [_record(1), _record(2), _record(3)]
  # A record the log has is kept as it is; one of another epoch is not used.
  caplog.clear()
  log.resume(2, saved=_record(2, train_loss=5.0))
  assert log.read() == [_record(1), _record(2)]
  _write(path, _line(_record(1)))
  log.resume(3, saved=_record(2))
  assert log.read() == [_record(1)]
  assert 'has no record of epochs [2, 3]' in caplog.text


def test_a_garbage_middle_line_is_skipped_with_a_warning(tmp_path, caplog):
  log = metrics_lib.EpochLog(str(tmp_path))
  path = tmp_path / 'metrics.jsonl'
  _write(path, _line(_record(1)), 'x\x00garbage}\n', _line(_record(2)))
  assert log.read() == [_record(1), _record(2)]
  assert f'{path} line 2 is not a JSON record' in caplog.text
  caplog.clear()
  log.resume(2)
  assert _file_records(path) == [_record(1), _record(2)]
  assert "cut line 2 (no JSON record: 'x\\x00garbage}')" in caplog.text


def test_resume_keeps_the_garbage_it_cuts_in_metrics_jsonl_damaged(tmp_path,
                                                                  caplog):
  log = metrics_lib.EpochLog(str(tmp_path))
  path = tmp_path / 'metrics.jsonl'
  damaged = tmp_path / 'metrics.jsonl.damaged'
  garbage = b'x\x00\xff not json}'  # not even UTF-8
  path.write_bytes(_line(_record(1)).encode() + garbage + b'\n' +
                   _line(_record(2)).encode() + b'{"epoch": 3, "st')
  log.resume(2)
  assert _file_records(path) == [_record(1), _record(2)]
  assert damaged.read_bytes() == garbage + b'\n'  # byte for byte; not the
  assert ('cut line 2 (no JSON record: ' in caplog.text and  # torn line
          f'(the lines that are no record are kept in {damaged})' in
          caplog.text)
  # Garbage found by a later resume is added to what was kept.
  with open(path, 'a') as f:
    f.write('more garbage\n')
  log.resume(2)
  assert damaged.read_bytes() == garbage + b'\nmore garbage\n'
  assert sorted(os.listdir(tmp_path)) == ['metrics.jsonl',
                                          'metrics.jsonl.damaged']


def test_resume_cuts_records_past_the_checkpoint_and_earlier_repeats(
    tmp_path, caplog):
  # A kill while epoch 3's checkpoint was saved: its line was logged, the
  # checkpoint never landed. Epoch 2 was logged twice by an older run.
  log = metrics_lib.EpochLog(str(tmp_path))
  path = tmp_path / 'metrics.jsonl'
  _write(path, _line(_record(1)), _line(_record(2, train_loss=9.0)),
         _line(_record(2)), _line(_record(3)))
  log.resume(2)
  assert _file_records(path) == [_record(1), _record(2)]
  assert 'the records of epochs [3], past the epoch of the checkpoint (2)' in (
      caplog.text)
  assert 'earlier lines of epochs [2]' in caplog.text
  log.resume(0)  # no checkpoint at all: every line goes
  assert path.read_text() == '' and log.read() == []


def test_resume_leaves_a_log_with_nothing_to_cut_alone(tmp_path, caplog):
  log = metrics_lib.EpochLog(str(tmp_path))
  path = tmp_path / 'metrics.jsonl'
  log.resume(0)  # no file yet: none is made
  assert not path.exists()
  for epoch in (1, 2):
    log.append(_record(epoch))
  before = os.stat(path)
  log.resume(2)
  after = os.stat(path)
  assert (after.st_ino, after.st_mtime_ns) == (before.st_ino,
                                               before.st_mtime_ns)
  assert _file_records(path) == [_record(1), _record(2)]
  assert not caplog.text


def test_resume_warns_about_epochs_missing_before_the_checkpoint(tmp_path,
                                                                 caplog):
  log = metrics_lib.EpochLog(str(tmp_path))
  log.append(_record(2))
  log.resume(3)
  assert log.read() == [_record(2)]
  assert 'has no record of epochs [1, 3]' in caplog.text
