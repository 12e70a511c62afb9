"""One trainer per workdir: an exclusive fcntl.flock on the workdir folder.

    with workdir_lock.TrainLock(workdir) as lock:  # WorkdirBusy if taken
      ...        # checks that may refuse the run: the workdir stays as it was
      lock.sign()  # before the first write: train.lock names this trainer
      ...

The lock is taken on the workdir folder itself (its open directory), not on
a file in it: removing or replacing `train.lock` does not let a second
trainer in. The kernel drops the lock when its holder exits in any way (a
return, an exception, kill -9, a crash), so nothing left behind ever blocks:
only a live process holds the lock.

`<workdir>/train.lock` names the holder (its pid, host and start time, JSON)
for a refused trainer to name: written whole by `sign` (a new file moved in
place, so a link of that name is replaced, never written through) and
removed when the holder exits normally, so a name left in it is that of a
trainer that was killed. A `train.lock` that is a symbolic link is refused
at the start. Eval and predict only read: no lock.

A refused run leaves no trace: a run that ends before writing a checkpoint
in an error that has a `leaves_files` attribute (a UserError, a stop during
start-up: preemption.SignalStop) has what it created in the workdir removed
when the lock is released, and the workdir too if the lock made it. Where
`leaves_files` is true (a diverged training: its logs show how it went) they
stay, and the error's message names them. Other exceptions (bugs) leave
everything as it is.

Where a folder cannot be locked (NFS: flock there is a POSIX lock, which
needs a file open for writing), `train.lock` itself is locked, as a file,
and kept (emptied at exit): there, removing it does let a second trainer in.
"""

import datetime
import errno
import fcntl
import json
import os
import shutil
import socket

from absl import logging

from imgclf_jax import whole_file
from imgclf_jax.errors import UserError

LOCK_NAME = 'train.lock'

# flock's errors where the file system locks no folders (NFS: EBADF) or no
# files at all.
_NO_FOLDER_LOCKS = (errno.EBADF, errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS,
                    errno.EINVAL)
_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)


class WorkdirBusy(UserError):
  """Another process trains in the workdir."""


class TrainLock:
  """The training lock of a workdir (created if missing), held in a `with`."""

  def __init__(self, workdir: str):
    self.workdir = os.path.abspath(workdir)
    self.path = os.path.join(self.workdir, LOCK_NAME)
    self._fd = None          # the locked folder (or, without folder locks,
    self._file_lock = False  # train.lock itself: then _file_lock)
    self._signed = False
    self._made_workdir = False
    self._before = set()     # the workdir's entries when the lock was taken
    self._steps_before = set()

  def __enter__(self):
    self._refuse_a_link()
    try:
      self._made_workdir = not os.path.isdir(self.workdir)
      os.makedirs(self.workdir, exist_ok=True)
      fd = os.open(self.workdir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
      raise UserError(
          f'cannot create the lock file {self.path} ({e.strerror}): '
          '--workdir must be a folder this user can write to.') from None
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      os.close(fd)
      if e.errno in _NO_FOLDER_LOCKS:
        return self._lock_the_file()
      self._refused(e)
    self._fd = fd
    self._remember()
    return self

  def _refuse_a_link(self):
    if os.path.islink(self.path):
      raise UserError(
          f'{self.path} is a symbolic link (to {os.readlink(self.path)}): '
          'the trainer writes its name there, and will not write through a '
          'link. Remove the link, then run the same command again.')

  def _lock_the_file(self):
    """The lock on train.lock, for file systems that lock no folders."""
    try:
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW |
                   os.O_CLOEXEC, 0o644)
    except OSError as e:
      if e.errno == errno.ELOOP:
        self._refuse_a_link()
      raise UserError(
          f'cannot create the lock file {self.path} ({e.strerror}): '
          '--workdir must be a folder this user can write to.') from None
    self._fd, self._file_lock = fd, True
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno not in _NO_LOCKS:
        os.close(fd)
        self._fd = None
        self._refused(e)
      logging.warning('The file system of %s has no file locks (%s): '
                      'nothing stops a second trainer in this workdir.',
                      self.path, e.strerror)
    self._remember()
    return self

  def _refused(self, error: OSError):
    if error.errno not in (errno.EWOULDBLOCK, errno.EACCES):
      raise error
    raise WorkdirBusy(
        f'--workdir={self.workdir} is in use by another '
        f'trainer ({_describe(holder(self.path))}; lock file {self.path}): '
        'wait for it to finish or stop it, or train in another --workdir '
        '(--mode=eval and --mode=predict may run beside it).') from None

  def _remember(self):
    self._before = set(os.listdir(self.workdir))
    self._steps_before = checkpoint_steps(self.workdir)

  def sign(self):
    """Writes this process's pid, host and start time into train.lock; a
    full disk is a UserError (and no train.lock is left)."""
    info = {'pid': os.getpid(), 'host': socket.gethostname(),
            'started': datetime.datetime.now().astimezone().isoformat(
                timespec='seconds')}
    text = json.dumps(info) + '\n'
    if not self._file_lock:
      self._refuse_a_link()
      whole_file.write_text(self.path, text)
    else:  # the locked file itself: written in place
      try:
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, text.encode(), 0)
      except OSError as e:
        os.ftruncate(self._fd, 0)
        raise whole_file.cannot_write(self.path, e) from None
    self._signed = True

  def __exit__(self, exc_type, exc, tb):
    try:
      if self._signed and self._file_lock:
        os.ftruncate(self._fd, 0)
      elif self._signed:
        _remove(self.path)
      self._signed = False
      if hasattr(exc, 'leaves_files'):
        self._tidy(exc)
    except OSError as e:  # the workdir changed under it: the error stays
      logging.warning('Could not tidy %s after the run: %s', self.workdir, e)
    finally:
      os.close(self._fd)  # releases the lock
      self._fd = None
    return False

  def _tidy(self, exc: BaseException):
    """A run refused before its first checkpoint: removes what it created
    (and the workdir the lock made, if empty then). A run whose error
    leaves its files: names them in the error."""
    if checkpoint_steps(self.workdir) - self._steps_before:
      return
    created = sorted(set(os.listdir(self.workdir)) - self._before -
                     {LOCK_NAME})
    if getattr(exc, 'leaves_files', False):
      if created:
        exc.args = (f'{exc} Files this run wrote in {self.workdir}: '
                    f'{", ".join(created)}.',) + exc.args[1:]
      return
    for name in created:
      _remove(os.path.join(self.workdir, name))
    if created:
      logging.info('Removed what this run wrote in %s before it ended '
                   'without a checkpoint: %s.', self.workdir,
                   ', '.join(created))
    if self._made_workdir and not self._file_lock:
      try:
        os.rmdir(self.workdir)  # still locked: no other trainer is inside
      except OSError:
        pass


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
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd) as f:
      info = json.loads(f.read())
  except (OSError, ValueError):
    return None
  return info if isinstance(info, dict) else None


def trainer_running(workdir: str) -> bool:
  """Whether a trainer holds `workdir` as far as its train.lock tells: one is
  signed there, by a live process of this host or by another host."""
  info = holder(os.path.join(workdir, LOCK_NAME))
  if not info:
    return False
  return info.get('host') != socket.gethostname() or _alive(info.get('pid'))


def checkpoint_steps(workdir: str) -> set:
  """The checkpoint steps in `workdir` (the names of their folders: a save
  in progress is an Orbax temporary folder), without Orbax."""
  try:
    return {n for n in os.listdir(os.path.join(workdir, 'checkpoints'))
            if n.isdigit()}
  except OSError:
    return set()


def _remove(path: str):
  try:
    if os.path.isdir(path) and not os.path.islink(path):
      shutil.rmtree(path)
    else:
      os.remove(path)
  except FileNotFoundError:
    pass


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
