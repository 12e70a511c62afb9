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
