"""Stop requests: SIGTERM (preemption) and Ctrl-C end training cleanly.

TPU VMs, GCE spot machines, SLURM and Kubernetes send SIGTERM before they
take a machine away. While `StopSignals` is active, SIGTERM and a first
SIGINT (Ctrl-C) only request a stop: the trainer finishes the step it is in,
saves a checkpoint at that step, flushes its writers and exits with
`exit_status` (128 + the signal: 143 for SIGTERM, 130 for SIGINT). A second
Ctrl-C raises KeyboardInterrupt at once (the last checkpoint is kept).

With several processes (jax.distributed) every process must stop at the same
step, or the others would wait forever in the next collective. There JAX's
own preemption notifier (set up by jax.distributed.initialize) catches
SIGTERM, and `requested(step)` is JAX's preemption sync point
(multihost_utils.reached_preemption_sync_point, what Orbax uses): it turns
true at the same step on every process, whichever of them got the signal.
A Ctrl-C is passed on to the notifier as a SIGTERM of this process.
"""

import os
import signal
import threading

from absl import logging
import jax
from jax.experimental import multihost_utils

_NAMES = {signal.SIGTERM: 'SIGTERM', signal.SIGINT: 'SIGINT (Ctrl-C)'}


def exit_status(signum: int) -> int:
  """The exit status of a run stopped by `signum`: 128 + its number."""
  return 128 + int(signum)


class StopSignals:
  """A context manager: while active, SIGTERM and SIGINT request a stop.

  `requested(step)` (called after every step, with the same step numbers on
  every process) says whether to stop now; `signum` is the signal that
  asked (SIGTERM when the notifier of several processes did).
  """

  def __init__(self):
    self.signum = None
    self._several = jax.process_count() > 1
    self._previous = {}

  def __enter__(self):
    if threading.current_thread() is not threading.main_thread():
      return self  # signals reach the main thread only
    self._previous[signal.SIGINT] = signal.signal(signal.SIGINT,
                                                  self._on_signal)
    if not self._several:  # several: JAX's notifier keeps SIGTERM
      self._previous[signal.SIGTERM] = signal.signal(signal.SIGTERM,
                                                     self._on_signal)
    return self

  def __exit__(self, *exc):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous = {}
    return False

  def _on_signal(self, signum, frame):
    del frame
    if self.signum is not None:
      if signum == signal.SIGINT:
        raise KeyboardInterrupt
      return
    self.signum = signum
    logging.warning('%s received: training stops after this step, with a '
                    'checkpoint at it%s.', _NAMES.get(signum, signum),
                    ' (Ctrl-C again: stop at once)' if signum == signal.SIGINT
                    else '')
    if self._several:
      os.kill(os.getpid(), signal.SIGTERM)  # to JAX's notifier

  def requested(self, step: int) -> bool:
    """Whether training stops after step `step` (its count of steps done)."""
    if self._several:
      if multihost_utils.reached_preemption_sync_point(step):
        self.signum = self.signum or signal.SIGTERM
        return True
      return False
    return self.signum is not None
