"""Files written whole or not at all, and one `error:` line when they cannot be.

    with whole_file.replacing(path) as f:   # 'w'; 'wb' for bytes
      f.write(...)
    whole_file.write_text(path, text)

The content goes to a temporary file beside `path` (same folder, so the same
disk), which is flushed to disk and then moved over `path` (os.replace): a
kill, a full disk or an exception leaves the old file (or none) and never half
of one; the temporary file is removed. A write that fails with an OSError (a
full disk, a read-only folder) is a UserError naming the file.
"""

import contextlib
import os
import shutil
import tempfile

from imgclf_jax.byte_sizes import bytes_text
from imgclf_jax.errors import UserError


@contextlib.contextmanager
def replacing(path: str, mode: str = 'w', newline=None, errors=None):
  """A file object (open(mode, newline, errors) of a new file) whose content
  replaces `path` when the block ends normally (keeping the mode bits of a
  `path` that exists)."""
  folder = os.path.dirname(os.path.abspath(path))
  try:
    fd, temporary = tempfile.mkstemp(dir=folder,
                                     prefix=f'.{os.path.basename(path)}.')
  except OSError as e:
    raise cannot_write(path, e) from None
  try:
    with os.fdopen(fd, mode, newline=newline, errors=errors) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    if os.path.exists(path):
      shutil.copymode(path, temporary)
    else:
      os.chmod(temporary, 0o666 & ~_umask())
    os.replace(temporary, path)
  except OSError as e:
    raise cannot_write(path, e) from None
  finally:
    if os.path.exists(temporary):
      os.remove(temporary)


def write_text(path: str, text: str):
  """`text` as the whole content of `path` (bytes that were read with
  errors='surrogateescape' written back as they were)."""
  with replacing(path, errors='surrogateescape') as f:
    f.write(text)


def cannot_write(path: str, error: OSError) -> UserError:
  """The one-line error of a file that could not be written."""
  # Imported here: integrity imports JAX, and the lock that writes
  # train.lock is also read where JAX is not loaded yet.
  from imgclf_jax.checkpoints import integrity  # pylint: disable=g-import-not-at-top
  folder = os.path.dirname(os.path.abspath(path))
  if integrity.disk_full(error):
    try:
      free = f'{bytes_text(shutil.disk_usage(folder).free)} free'
    except OSError:
      free = 'no space left'
    return UserError(
        f'could not write {path}: the disk is full ({free} there): free '
        'space there, or use a --workdir on another disk, then run the same '
        'command again (nothing was written in its place).')
  return UserError(
      f'could not write {path} ({error.strerror or error}): make {folder} '
      'writable, or use another --workdir, then run the same command again.')


def _umask() -> int:
  """This process's umask, read without changing it (os.umask would, for a
  moment, for every thread); 0o022 where /proc does not say."""
  try:
    with open('/proc/self/status') as f:
      for line in f:
        if line.startswith('Umask:'):
          return int(line.split()[1], 8)
  except (OSError, ValueError, IndexError):
    pass
  return 0o022
