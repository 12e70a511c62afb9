"""What checkpoints.py needs to tell a sound checkpoint and a failed write.

  state_checksum(state)      SHA-256 of a state's arrays, kept in its metadata
  all_finite(state)          no NaN/inf in a state's floating arrays
  draining_event_loops()     a failed Orbax read/write leaves nothing pending
  without_orbax_error_logs() Orbax's own error logs (with tracebacks) dropped
  disk_full(e), write_failure(e), describe(e), folder_bytes(path)
"""

import asyncio
import contextlib
import errno
import hashlib
import logging
import os

from absl import logging as absl_logging
import jax
import numpy as np

# Words of Orbax/TensorStore errors of a write that failed for want of space
# (TensorStore: RESOURCE_EXHAUSTED ... No space left on device [os_error_code=
# '28']), and of other writes the user can fix.
_DISK_FULL_SIGNS = ('RESOURCE_EXHAUSTED', 'No space left', "os_error_code='28'")
_WRITE_SIGNS = _DISK_FULL_SIGNS + ('PERMISSION_DENIED', 'Read-only file system')


def state_checksum(state) -> str:
  """SHA-256 over the state's leaves in tree order: dtype, shape, bytes
  (integers as int64)."""
  digest = hashlib.sha256()
  for leaf in jax.tree.leaves(jax.device_get(state)):
    leaf = np.asarray(leaf)
    if np.issubdtype(leaf.dtype, np.integer):
      # The step counter: saved as int32, restored into the int of a new state.
      leaf = leaf.astype(np.int64)
    digest.update(f'{leaf.dtype.str}{leaf.shape}'.encode())
    digest.update(np.ascontiguousarray(leaf).tobytes())
  return digest.hexdigest()


def all_finite(state) -> bool:
  """Whether every floating array of `state` holds finite numbers only."""
  leaves = [np.asarray(leaf) for leaf in jax.tree.leaves(
      jax.device_get(state))]
  return all(np.isfinite(leaf).all() for leaf in leaves
             if jax.numpy.issubdtype(leaf.dtype, jax.numpy.inexact))


class _DrainingLoopPolicy(asyncio.DefaultEventLoopPolicy):
  """Event loops that let their unfinished tasks end before closing.

  Orbax runs a restore (and parts of a save) in a fresh event loop and closes
  it when the first array read or write fails, the others still pending: their
  coroutines would die at garbage collection ('Exception ignored in:
  <coroutine ...>', hundreds of lines) and TensorStore's callbacks hit the
  closed loop ('RuntimeError: Event loop is closed').
  """

  def new_event_loop(self):
    loop = super().new_event_loop()
    close = loop.close

    def drain_and_close():
      pending = asyncio.all_tasks(loop)
      if pending and not loop.is_running():
        loop.run_until_complete(
            asyncio.gather(*pending, return_exceptions=True))
      close()
    loop.close = drain_and_close
    return loop


@contextlib.contextmanager
def draining_event_loops():
  """Event loops made in the block (in any thread) drain before closing."""
  previous = asyncio.get_event_loop_policy()
  asyncio.set_event_loop_policy(_DrainingLoopPolicy())
  try:
    yield
  finally:
    asyncio.set_event_loop_policy(previous)


def _orbax_error(record) -> bool:
  return (record.levelno >= logging.ERROR and
          f'{os.sep}orbax{os.sep}' in record.pathname)


@contextlib.contextmanager
def without_orbax_error_logs():
  """Drops Orbax's error logs in the block (a failed write, with its
  traceback, from each of its threads): the caller raises the error once."""
  logger = absl_logging.get_absl_logger()
  keep = lambda record: not _orbax_error(record)
  logger.addFilter(keep)
  try:
    yield
  finally:
    logger.removeFilter(keep)


@contextlib.contextmanager
def without_orbax_log(words: str):
  """Drops Orbax's log lines holding `words` in the block."""
  logger = absl_logging.get_absl_logger()
  keep = lambda record: not ('orbax' in record.pathname and
                             words in record.getMessage())
  logger.addFilter(keep)
  try:
    yield
  finally:
    logger.removeFilter(keep)


def _chain(error):
  while error is not None:
    yield error
    error = error.__cause__ or error.__context__


def _signs_in(error, signs) -> bool:
  return any(sign in str(e) for e in _chain(error) for sign in signs)


def disk_full(error) -> bool:
  """Whether `error` (or one it came from) says the disk is full."""
  return _signs_in(error, _DISK_FULL_SIGNS) or any(
      isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)
      for e in _chain(error))


def write_failure(error) -> bool:
  """An OSError or a TensorStore I/O status anywhere in `error`'s chain (a
  full disk, a folder not writable), rather than a bug."""
  return any(isinstance(e, OSError) for e in _chain(error)) or _signs_in(
      error, _WRITE_SIGNS)


def describe(error: Exception) -> str:
  """'Type: the first line of the message' (without TensorStore's spec)."""
  lines = str(error).split(' See full TensorStore details')[0].splitlines()
  return f'{type(error).__name__}: {lines[0][:200] if lines else ""}'


def folder_bytes(path: str) -> int:
  """The disk space the files under `path` take (as `du`)."""
  return sum(os.stat(os.path.join(root, name)).st_blocks * 512
             for root, _, names in os.walk(path) for name in names)
