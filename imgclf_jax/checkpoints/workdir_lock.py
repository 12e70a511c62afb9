"""One trainer per workdir: an exclusive fcntl.flock on <workdir>/train.lock.

    with workdir_lock.TrainLock(workdir) as lock:  # WorkdirBusy if taken
      ...        # checks that may refuse the run: the workdir stays as it was
      lock.sign()  # before the first write: names this trainer in the file
      ...

The kernel drops the lock when its holder exits in any way (a return, an
exception, kill -9, a crash), so a lock file left behind never blocks: only a
live process holds the lock. A signed lock file holds the holder's pid, host
and start time (JSON) for a refused trainer to name; it is emptied when the
holder exits normally, so a name left in it is that of a trainer that was
killed. The file itself stays (removing it would let two processes lock two
different files of the same name). Eval and predict only read: no lock.
"""

import datetime
import errno
import fcntl
import json
import os
import socket

from absl import logging

from imgclf_jax.errors import UserError

LOCK_NAME = 'train.lock'


class WorkdirBusy(UserError):
  """Another process trains in the workdir."""


class TrainLock:
  """The training lock of a workdir (created if missing), held in a `with`."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, LOCK_NAME)
    self._fd = None
    self._signed = False

  def __enter__(self):
    try:
      os.makedirs(os.path.dirname(self.path), exist_ok=True)
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
      raise UserError(
          f'cannot create the lock file {self.path} ({e.strerror}): '
          '--workdir must be a folder this user can write to.') from None
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
        logging.warning('The file system of %s has no file locks (%s): '
                        'nothing stops a second trainer in this workdir.',
                        self.path, e.strerror)
        self._fd = fd
        return self
      os.close(fd)
      if e.errno not in (errno.EWOULDBLOCK, errno.EACCES):
        raise
      raise WorkdirBusy(
          f'--workdir={os.path.dirname(self.path)} is in use by another '
          f'trainer ({_describe(holder(self.path))}; lock file {self.path}): '
          'wait for it to finish or stop it, or train in another --workdir '
          '(--mode=eval and --mode=predict may run beside it).') from None
    self._fd = fd
    return self

  def sign(self):
    """Writes this process's pid, host and start time into the lock file."""
    info = {'pid': os.getpid(), 'host': socket.gethostname(),
            'started': datetime.datetime.now().astimezone().isoformat(
                timespec='seconds')}
    os.ftruncate(self._fd, 0)
    os.pwrite(self._fd, (json.dumps(info) + '\n').encode(), 0)
    self._signed = True

  def __exit__(self, *exc_info):
    try:
      if self._signed:
        os.ftruncate(self._fd, 0)
    finally:
      os.close(self._fd)  # releases the lock
      self._fd = None


class NotLocked:
  """TrainLock's stand-in in the processes of a run on several other than
  the first, which holds the lock for all of them."""

  def __enter__(self):
    return self

  def sign(self):
    pass

  def __exit__(self, *exc_info):
    return False


def holder(path: str):
  """The pid, host and start time a lock file names (a dict), or None."""
  try:
    with open(path) as f:
      info = json.loads(f.read())
  except (OSError, ValueError):
    return None
  return info if isinstance(info, dict) else None


def _describe(info) -> str:
  if not info or (info.get('host') == socket.gethostname() and
                  not _alive(info.get('pid'))):
    # Not signed yet: the name in the file, if any, is of a killed trainer.
    return 'one that is just starting'
  return (f'pid {info.get("pid")} on host {info.get("host")}, started '
          f'{info.get("started")}')


def _alive(pid) -> bool:
  if not isinstance(pid, int) or pid <= 0:
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # another user's process
    return True
  return True
