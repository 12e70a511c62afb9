"""workdir_lock.py: one trainer per workdir, a lock the kernel drops when its
holder dies, and the holder named to whoever is refused."""

import errno
import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from imgclf_jax.checkpoints import workdir_lock
from imgclf_jax.errors import UserError
from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Takes and signs the lock of argv[1], says so, holds it until stdin closes.
HOLDER = ('import sys; sys.path.insert(0, %r)\n'
          'from imgclf_jax.checkpoints import workdir_lock\n'
          'with workdir_lock.TrainLock(sys.argv[1]) as lock:\n'
          '  lock.sign()\n'
          '  print("locked", flush=True)\n'
          '  sys.stdin.read()\n' % ROOT)


def _refused(workdir, holder_text):
  lock = os.path.join(workdir, 'train.lock')
  return pytest.raises(workdir_lock.WorkdirBusy, match=(
      rf'^--workdir={workdir} is in use by another trainer \({holder_text}; '
      rf'lock file {lock}\): wait for it to finish or stop it, or train in '
      r'another --workdir \(--mode=eval and --mode=predict may run beside '
      r'it\)\.$'))


def _named(pid):
  return rf'pid {pid} on host {socket.gethostname()}, started \S+'


@pytest.mark.slow
def test_another_process_is_refused_until_its_holder_is_killed(tmp_path):
  workdir = str(tmp_path / 'run')
  holder = subprocess.Popen([sys.executable, '-c', HOLDER, workdir],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
  try:
    assert holder.stdout.readline() == 'locked\n'
    with _refused(workdir, _named(holder.pid)):
      with workdir_lock.TrainLock(workdir):
        pass
  finally:
    holder.kill()  # SIGKILL: no exit handler runs, the kernel drops the lock
    holder.wait()
  assert holder.returncode == -signal.SIGKILL
  lock = os.path.join(workdir, 'train.lock')
  assert workdir_lock.holder(lock)['pid'] == holder.pid  # left behind
  with workdir_lock.TrainLock(workdir) as taken:
    taken.sign()
    assert workdir_lock.holder(lock)['pid'] == os.getpid()
  assert workdir_lock.holder(lock) is None  # emptied on a normal exit


def test_a_second_lock_in_the_same_process_is_refused_too(tmp_path):
  workdir = str(tmp_path)
  with workdir_lock.TrainLock(workdir) as lock:
    assert lock.path == os.path.join(workdir, 'train.lock')
    with _refused(workdir, 'one that is just starting'):  # not signed yet
      with workdir_lock.TrainLock(workdir):
        pass
    lock.sign()
    with _refused(workdir, _named(os.getpid())):
      with workdir_lock.TrainLock(workdir):
        pass


def test_an_unsigned_lock_leaves_its_file_as_it_was(tmp_path):
  path = tmp_path / 'train.lock'
  path.write_text('{"pid": 1, "host": "elsewhere"}\n')
  before = os.stat(path).st_mtime_ns
  with pytest.raises(ZeroDivisionError):
    with workdir_lock.TrainLock(str(tmp_path)):
      _ = 1 / 0
  assert path.read_text() == '{"pid": 1, "host": "elsewhere"}\n'
  assert os.stat(path).st_mtime_ns == before
  with workdir_lock.TrainLock(str(tmp_path)):
    pass  # released by the exception: not refused


def test_a_lock_file_left_by_a_killed_trainer_does_not_block(tmp_path):
  # What a trainer killed with SIGKILL leaves: its name in the file, no lock.
  lock = tmp_path / 'train.lock'
  dead = {'pid': 2**31 - 1, 'host': socket.gethostname(),
          'started': '2024-01-01T00:00:00+00:00'}
  lock.write_text(json.dumps(dead))
  with workdir_lock.TrainLock(str(tmp_path)) as taken:
    # Until the new holder signs, a refused trainer is not sent to the dead
    # one.
    with _refused(str(tmp_path), 'one that is just starting'):
      with workdir_lock.TrainLock(str(tmp_path)):
        pass
    taken.sign()
    info = workdir_lock.holder(str(lock))
    assert (info['pid'], info['host']) == (os.getpid(), socket.gethostname())


def test_a_workdir_that_cannot_be_made_is_one_clear_error(tmp_path):
  (tmp_path / 'file').write_text('')
  workdir = str(tmp_path / 'file' / 'run')
  with pytest.raises(UserError, match=(
      rf'^cannot create the lock file {workdir}/train.lock \(Not a '
      r'directory\): --workdir must be a folder this user can write to\.$')):
    with workdir_lock.TrainLock(workdir):
      pass


def test_a_file_system_without_locks_trains_with_a_warning(tmp_path, caplog,
                                                          monkeypatch):
  def no_locks(fd, operation):
    raise OSError(errno.ENOLCK, 'No locks available')
  monkeypatch.setattr(workdir_lock.fcntl, 'flock', no_locks)
  with workdir_lock.TrainLock(str(tmp_path)) as lock:
    lock.sign()
    assert workdir_lock.holder(lock.path)['pid'] == os.getpid()
  assert (f'The file system of {lock.path} has no file locks (No locks '
          'available): nothing stops a second trainer') in caplog.text


# ----------------------------------------------------------------------------
# A lock that cannot be fooled: links, a removed train.lock, a full disk, and
# the traces of a run refused before its first checkpoint.


@pytest.mark.parametrize('target_exists', [True, False])
def test_a_train_lock_that_is_a_link_is_refused_and_not_written_through(
    tmp_path, target_exists):
  victim = tmp_path / 'victim'
  if target_exists:
    victim.write_text('precious\n')
  workdir = tmp_path / 'run'
  workdir.mkdir()
  os.symlink(victim, workdir / 'train.lock')
  with pytest.raises(UserError, match=(
      rf'^{workdir}/train.lock is a symbolic link \(to {victim}\): the '
      r'trainer writes its name there, and will not write through a link\. '
      r'Remove the link, then run the same command again\.$')):
    with workdir_lock.TrainLock(str(workdir)):
      pass
  if target_exists:
    assert victim.read_text() == 'precious\n'
  else:
    assert not os.path.lexists(victim)  # a dangling link: nothing created
  assert os.readlink(workdir / 'train.lock') == str(victim)


def test_a_link_made_while_the_lock_is_held_is_replaced_not_followed(
    tmp_path):
  victim = tmp_path / 'victim'
  victim.write_text('precious\n')
  workdir = str(tmp_path / 'run')
  with workdir_lock.TrainLock(workdir) as lock:
    os.symlink(victim, lock.path)
    with pytest.raises(UserError, match='is a symbolic link'):
      lock.sign()
    os.remove(lock.path)
    lock.sign()
    os.remove(lock.path)
    os.symlink(victim, lock.path)  # after signing: removed at exit
  assert victim.read_text() == 'precious\n'
  assert not os.path.lexists(os.path.join(workdir, 'train.lock'))


def test_removing_train_lock_does_not_let_a_second_trainer_in(tmp_path):
  workdir = str(tmp_path / 'run')
  with workdir_lock.TrainLock(workdir) as lock:
    lock.sign()
    os.remove(lock.path)
    with _refused(workdir, 'one that is just starting'):
      with workdir_lock.TrainLock(workdir):
        pass
    # Nor does a new file in its place.
    with open(lock.path, 'w') as f:
      f.write('{}')
    with _refused(workdir, 'one that is just starting'):
      with workdir_lock.TrainLock(workdir):
        pass


def test_signing_on_a_full_disk_is_one_line_and_leaves_no_lock_file(tmp_path):
  with helpers.small_disk(tmp_path / 'disk') as disk:
    workdir = os.path.join(disk, 'run')
    os.mkdir(workdir)
    helpers.fill_disk(disk)
    with workdir_lock.TrainLock(workdir) as lock:
      with pytest.raises(UserError, match=(
          rf'^could not write {workdir}/train.lock: the disk is full \(.* '
          r'free there\): free space there, or use a --workdir on another '
          r'disk, then run the same command again')):
        lock.sign()
      assert os.listdir(workdir) == []  # no partial file, no temporary one


def test_a_refused_run_leaves_no_trace(tmp_path):
  kept = tmp_path / 'kept'
  kept.mkdir()
  (kept / 'notes.txt').write_text('mine\n')
  for workdir in (str(tmp_path / 'new' / 'run'), str(kept)):
    with pytest.raises(UserError, match='^refused$'):
      with workdir_lock.TrainLock(workdir) as lock:
        lock.sign()
        for name in ('class_distribution.json', 'metrics.jsonl'):
          with open(os.path.join(workdir, name), 'w') as f:
            f.write('{}\n')
        os.makedirs(os.path.join(workdir, 'checkpoints'))
        raise UserError('refused')
  assert not os.path.exists(tmp_path / 'new' / 'run')  # the lock made it
  assert os.listdir(tmp_path / 'new') == []
  assert os.listdir(kept) == ['notes.txt']


def test_a_run_that_ends_with_a_checkpoint_or_a_bug_keeps_its_files(tmp_path):
  workdir = str(tmp_path / 'run')
  with pytest.raises(UserError, match='^disk full at step 8$'):
    with workdir_lock.TrainLock(workdir) as lock:
      lock.sign()
      os.makedirs(os.path.join(workdir, 'checkpoints', '4'))
      raise UserError('disk full at step 8')
  assert os.listdir(workdir) == ['checkpoints']
  with pytest.raises(ZeroDivisionError):
    with workdir_lock.TrainLock(workdir) as lock:
      lock.sign()
      with open(os.path.join(workdir, 'curves.png'), 'w') as f:
        f.write('')
      _ = 1 / 0
  assert sorted(os.listdir(workdir)) == ['checkpoints', 'curves.png']


def test_a_run_whose_error_leaves_files_names_them(tmp_path):
  class Diverged(UserError):
    leaves_files = True
  workdir = str(tmp_path / 'run')
  with pytest.raises(Diverged) as raised:
    with workdir_lock.TrainLock(workdir) as lock:
      lock.sign()
      for name in ('metrics.jsonl', 'class_distribution.png'):
        with open(os.path.join(workdir, name), 'w') as f:
          f.write('')
      raise Diverged('the loss became nan.')
  assert str(raised.value) == (
      f'the loss became nan. Files this run wrote in {workdir}: '
      'class_distribution.png, metrics.jsonl.')
  assert sorted(os.listdir(workdir)) == ['class_distribution.png',
                                         'metrics.jsonl']
