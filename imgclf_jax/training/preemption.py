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

Outside the training steps (start-up, the end, the other modes) the command
line's `stop_on_signals` makes SIGTERM and Ctrl-C raise `SignalStop`, which
dispatch.py reports as one `stopped:` line (no traceback) with the same exit
status; once that last line is written (`write_last_line`), a further
signal ends the process at once, quietly (not with a traceback from an exit
handler). A SignalStop that library code lost (a bare `except:`, a
garbage-collector callback) is raised again (`raise_if_swallowed`) before
the model is built, before the steps begin, at the next batch of
--mode=eval or predict, and before --mode=export puts its SavedModel in
place. JAX is imported where used: the command line imports this module
before its flags are parsed.
"""

import atexit
import os
import signal
import sys
import threading

from absl import logging

_NAMES = {signal.SIGTERM: 'SIGTERM', signal.SIGINT: 'SIGINT (Ctrl-C)'}
_SIGNALS = (signal.SIGINT, signal.SIGTERM)

# Whether a StopSignals has been entered in this process: a SignalStop before
# it stopped the start-up.
_steps_began = False
# The signal of the last SignalStop that stop_on_signals' handler raised,
# kept in case it was lost (raise_if_swallowed).
_raised = None
# Whether the run has ended (its last line written, or exiting): a signal
# then ends the process at once, with _ending_status (None: 128 + the
# signal). exit_at_once_on_signals and write_last_line set them.
_ending, _ending_status = False, None


class SignalStop(BaseException):
  """SIGTERM or Ctrl-C outside the training steps: the run stops where it
  is. A BaseException, as KeyboardInterrupt: no `except Exception` holds it.
  `status`: the exit status (exit_status); `during_startup`: whether no
  training step had begun in this process. A run it ends before its first
  checkpoint leaves no trace (workdir_lock.py: `leaves_files`)."""
  leaves_files = False

  def __init__(self, signum: int):
    super().__init__(signal.Signals(signum).name)
    self.signum = signum
    self.status = exit_status(signum)
    self.during_startup = not _steps_began


def _raise_stop(signum, frame):
  del frame
  global _raised
  if _ending:  # no traceback from an exit handler: out at once
    os._exit(exit_status(signum) if _ending_status is None  # pylint: disable=protected-access
             else _ending_status)
  _raised = signum
  raise SignalStop(signum)


def raise_if_swallowed():
  """Raises SignalStop again for a stop signal whose SignalStop was lost.
  A Python signal handler raises wherever the main thread is when it runs:
  inside a library's bare `except:` (JAX has several around its C++ calls)
  the exception is dropped, and inside a garbage-collector callback or a
  `__del__` Python cannot raise it (stop_on_signals' unraisable hook keeps
  that quiet); the start-up would go on to train. Raised once."""
  global _raised
  if _raised is not None:
    signum, _raised = _raised, None
    raise SignalStop(signum)


def stop_on_signals():
  """From now on SIGTERM and SIGINT raise SignalStop in the main thread
  (StopSignals takes them over while it is active). Call it before JAX and
  TensorFlow are imported: its exit handler then runs after theirs."""
  global _steps_began, _raised, _ending, _ending_status
  _steps_began, _raised, _ending, _ending_status = False, None, False, None
  for signum in _SIGNALS:
    signal.signal(signum, _raise_stop)
  sys.unraisablehook = _quiet_about_stops(sys.unraisablehook)
  atexit.register(_ignore_signals)


def _quiet_about_stops(hook):
  """sys.unraisablehook `hook`, silent for a SignalStop raised where it
  could not be (raise_if_swallowed raises it again)."""
  def quiet_hook(unraisable):
    if not isinstance(unraisable.exc_value, SignalStop):
      hook(unraisable)
  return quiet_hook


def _ignore_signals():
  """The last exit handler: the signals ignored from here on. (Python resets
  the handlers it set to the default as it finalizes: a Ctrl-C then would
  end the process by the signal, not with its exit status.)"""
  for signum in _SIGNALS:
    signal.signal(signum, signal.SIG_IGN)


def exit_at_once_on_signals(status: int | None = None):
  """The run is ending: from now on SIGTERM and SIGINT end the process at
  once with `status` (None: 128 + the signal), running no exit handler
  (stop_on_signals' handler, put back where JAX's preemption notifier or
  another took a signal)."""
  _end(status)
  for signum in _SIGNALS:
    signal.signal(signum, _raise_stop)


def write_last_line(line: str, status: int):
  """Writes the run's last line to stderr whole (SIGTERM and SIGINT held
  back while it is written). From then on, where stop_on_signals' handler
  has them, they end the process at once with `status`, running no exit
  handler: one that came during the write, and any later one."""
  held = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
  try:
    print(line, file=sys.stderr, flush=True)
    _end(status)
  finally:
    signal.pthread_sigmask(signal.SIG_SETMASK, held)  # a held one runs


def _end(status: int | None):
  global _ending, _ending_status
  _ending, _ending_status = True, status


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
    import jax  # pylint: disable=g-import-not-at-top
    self.signum = None
    self._several = jax.process_count() > 1
    self._previous = {}

  def __enter__(self):
    global _steps_began
    raise_if_swallowed()  # a stop during start-up ends it here at the latest
    _steps_began = True
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
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      if multihost_utils.reached_preemption_sync_point(step):
        self.signum = self.signum or signal.SIGTERM
        return True
      return False
    return self.signum is not None
