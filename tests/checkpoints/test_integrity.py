"""checkpoint_integrity.py: the state checksum and finiteness check, event
loops that drain before closing, Orbax's error logs held back, and a failed
write told apart from a bug."""

import asyncio
import errno
import logging

from absl import logging as absl_logging
import jax.numpy as jnp
import numpy as np
from orbax.checkpoint._src import asyncio_utils
import pytest

from imgclf_jax.checkpoints import integrity as integrity


def test_checksum_follows_every_byte_dtype_and_shape_but_not_the_int_type():
  state = {'w': np.arange(6, dtype=np.float32).reshape(2, 3),
           'step': jnp.asarray(4, jnp.int32)}
  checksum = integrity.state_checksum(state)
  # A step restored into the Python int of a new TrainState.
  assert integrity.state_checksum({**state, 'step': 4}) == checksum
  flipped = state['w'].copy()
  flipped.reshape(-1).view(np.uint8)[5] ^= 1  # one bit of one float
  for other in (flipped, state['w'].reshape(3, 2),
                state['w'].astype(np.float64), state['w'][:, :2]):
    assert integrity.state_checksum({**state, 'w': other}) != checksum
  assert integrity.state_checksum({**state, 'step': 5}) != checksum


def test_all_finite():
  assert integrity.all_finite({'w': np.ones(3), 'step': 2})
  for bad in (np.nan, np.inf, -np.inf):
    assert not integrity.all_finite({'w': np.array([1.0, bad], np.float32)})
  assert not integrity.all_finite({'w': jnp.array([np.nan], jnp.bfloat16)})


def test_a_failed_run_sync_leaves_no_task_pending():
  finished = []

  async def slow():
    await asyncio.sleep(0.3)  # still running when `fails` fails
    finished.append('slow')

  async def fails():
    raise ValueError('DATA_LOSS')

  async def both():
    await asyncio.gather(slow(), fails())

  with integrity.draining_event_loops():
    # Orbax's runner closes its loop as soon as `both` raises.
    with pytest.raises(ValueError, match='DATA_LOSS'):
      asyncio_utils.run_sync(both())
  assert finished == ['slow']
  assert not isinstance(asyncio.get_event_loop_policy(),
                        integrity._DrainingLoopPolicy)  # pylint: disable=protected-access


def test_orbax_error_logs_are_held_back_in_the_block(caplog):
  def log(pathname, level):
    absl_logging.get_absl_logger().handle(logging.LogRecord(
        'absl', level, pathname, 1, 'message from %s', (pathname,), None))

  orbax_file = '/site-packages/orbax/checkpoint/checkpoint_manager.py'
  with integrity.without_orbax_error_logs():
    log(orbax_file, logging.ERROR)
    log(orbax_file, logging.WARNING)
    log('/work/imgclf_jax/training/train.py', logging.ERROR)
  log(orbax_file, logging.ERROR)
  assert [(r.pathname, r.levelname) for r in caplog.records] == [
      (orbax_file, 'WARNING'), ('/work/imgclf_jax/training/train.py', 'ERROR'),
      (orbax_file, 'ERROR')]


def test_write_failures_and_full_disks():
  tensorstore = ValueError(
      'RESOURCE_EXHAUSTED: Error writing "w/0": No space left on device '
      "[os_error_code='28']")
  wrapped = RuntimeError('commit failed')
  wrapped.__cause__ = tensorstore
  quota = OSError(errno.EDQUOT, 'Disk quota exceeded')
  denied = PermissionError(errno.EACCES, 'Permission denied')
  for error in (tensorstore, wrapped, quota):
    assert integrity.disk_full(error) and integrity.write_failure(error)
  assert integrity.write_failure(denied) and not integrity.disk_full(denied)
  bug = TypeError('Object of type set is not JSON serializable')
  assert not integrity.write_failure(bug) and not integrity.disk_full(bug)
  assert integrity.describe(ValueError(
      'DATA_LOSS: bad\nmore See full TensorStore details: {...}')) == (
          'ValueError: DATA_LOSS: bad')
