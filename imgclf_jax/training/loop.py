"""The epoch loop: the train steps with their running metrics, checkpoints
inside epochs, stop signals, validation (with test-time augmentation after
the last epoch), each epoch's record and checkpoint, and early stopping.

A run ends here in one of four ways: the last epoch (or an early stop)
done; `Stopped` by SIGTERM or Ctrl-C with a checkpoint at its step;
`TrainingDiverged` on a loss that is not finite; a second Ctrl-C
(KeyboardInterrupt), which train.py reports as `Interrupted`.
"""

import signal
import time

from absl import logging

from imgclf_jax.checkpoints import checkpoint_store
from imgclf_jax.checkpoints.spec import CheckpointSpec
from imgclf_jax.errors import UserError
from imgclf_jax.parallel import device_axis
from imgclf_jax.training import eval_loop
from imgclf_jax.training import metrics as metrics_lib
from imgclf_jax.training import preemption
from imgclf_jax.training import progress as progress_lib
from imgclf_jax.training.resume import Start
from imgclf_jax.training.setup import Trainer
from imgclf_jax.training.spec import LoopSpec


class TrainingDiverged(UserError):
  """The loss stopped being a finite number."""
  leaves_files = True  # its metrics and events show how it diverged


class Stopped(Exception):
  """Training stopped by a signal (SIGTERM, Ctrl-C) with a checkpoint at
  its last step; `status` is the exit status (preemption.exit_status)."""

  def __init__(self, signum, message: str):
    super().__init__(message)
    self.status = preemption.exit_status(signum)


class Interrupted(Exception):
  """Training stopped by Ctrl-C (SIGINT); the message says what is kept."""


class Saver:
  """Writes the run's checkpoints to `store`: the state at its step, with
  `metadata` (what every checkpoint of the run records,
  setup.checkpoint_metadata), its epoch and metrics."""

  def __init__(self, store, metadata: dict):
    self.store, self._metadata = store, metadata

  def at_epoch_end(self, step: int, state, epochs_done: int, record: dict):
    """At the end of epoch `epochs_done`: `record` its metrics, ranked for
    --step=best."""
    ranked = {checkpoint_store.BEST_METRIC:
              record[checkpoint_store.BEST_METRIC]}
    self.store.save(step, state, {**self._metadata, 'epoch': epochs_done,
                                  'metrics': record}, metrics=ranked)

  def inside_epoch(self, step: int, state, epochs_done: int,
                   last_record: dict, train_sums):
    """Inside the epoch after `epochs_done`: `train_sums` the epoch's
    running metric sums, `last_record` the last finished epoch's metrics
    (not ranked)."""
    self.store.save(step, state, {
        **self._metadata, 'epoch': epochs_done, 'metrics': last_record,
        'epoch_train_sums': metrics_lib.to_sums(train_sums)}, metrics=None)


class EpochLoop:
  """Trains epochs until `spec.num_epochs` (or an early stop).

  `epoch` and `progress` say where it is (for an interruption's message,
  and the bar to close).
  """

  def __init__(self, spec: LoopSpec, checkpoints: CheckpointSpec,
               trainer: Trainer, saver: Saver, stopper, epoch_log, writer):
    self.spec, self.checkpoints, self.trainer = spec, checkpoints, trainer
    self.saver, self.stopper = saver, stopper
    self.epoch_log, self.writer = epoch_log, writer
    self.steps_per_epoch = trainer.pipeline.steps_per_epoch
    self.epoch, self.progress = None, None

  def run(self, state, start: Start, last_record: dict) -> dict:
    """Trains from `start`; `last_record`: the metrics of the epoch before
    it ({} for none). Returns the last epoch's record ({} if none ended)."""
    record, step, self.epoch = {}, start.step, start.epoch
    # Placed as the steps return it: their first call compiles the program
    # every later call runs.
    state = device_axis.replicated(state, self.trainer.devices)
    with preemption.StopSignals() as stop:
      for epoch in range(start.epoch, self.spec.num_epochs):
        self.epoch, epoch_start = epoch, time.time()
        first = start.in_epoch if epoch == start.epoch else 0
        state, step, sums, stopping = self._train_epoch(
            state, step, epoch, first, start.train_sums if first else None,
            last_record, stop)
        record, last, stop_early = self._end_epoch(state, step, epoch, sums,
                                                   epoch_start)
        last_record = record
        if (last or self.checkpoints.due_at_epoch_end(epoch + 1, step) or
            stopping):
          self.saver.at_epoch_end(step, state, epoch + 1, record)
        logging.info('%s', progress_lib.epoch_line(record,
                                                   self.spec.num_epochs))
        if stopping and not last:
          raise self._stopped(stop.signum, epoch + 1, step)
        if stop_early:
          logging.info('%s', self.stopper.reason())
          break
    return record

  def _train_epoch(self, state, step: int, epoch: int, first: int, sums,
                   last_record: dict, stop):
    """The steps of epoch `epoch` from its step `first` on (`sums`: the
    running metric sums of its steps before). Returns (state, step, the
    epoch's metric sums, whether its last step was asked to stop)."""
    train_metrics = metrics_lib.Accumulator(sums)
    self.progress = progress_lib.EpochProgress(
        epoch, self.spec.num_epochs, self.steps_per_epoch,
        self.spec.batch_size, done=first,
        log_every_seconds=self.spec.log_every_seconds)
    stopping = False
    trainer = self.trainer
    for batch in device_axis.to_devices(trainer.batches(epoch, first),
                                        trainer.devices):
      state, step_metrics = trainer.train_step(state, batch,
                                               trainer.dropout_rng)
      train_metrics.add(step_metrics)
      step += 1
      self.progress.step()
      by_steps = step % self.spec.log_every_steps == 0
      if by_steps or self.progress.seconds_due():
        self._log_running(step, epoch, train_metrics.result(), by_steps)
      inside = step % self.steps_per_epoch != 0
      stopping = stop.requested(step)
      if inside and (stopping or self.checkpoints.due_inside_epoch(step)):
        sums = train_metrics.result()
        _check_finite(metrics_lib.to_floats(sums, 'train_'), epoch,
                      self.saver.store)
        self.saver.inside_epoch(step, state, epoch, last_record, sums)
      if stopping and inside:  # at the epoch's end: validated, saved (run)
        self.progress.close()
        raise self._stopped(stop.signum, epoch, step)
    self.progress.close()
    return state, step, train_metrics.result(), stopping

  def _log_running(self, step: int, epoch: int, sums, check: bool):
    """The running loss and accuracy of the epoch so far: on the bar (or a
    log line) and in TensorBoard, with the images per second. `check`: also
    stop on a non-finite value (at the step-based log points only, the same
    steps in every process)."""
    running = metrics_lib.to_floats(sums, 'train_')
    if check:
      _check_finite(running, epoch, self.saver.store)
    rate = self.progress.show(running['train_loss'], running['train_accuracy'])
    self.writer.write_running(step, running['train_loss'],
                              running['train_accuracy'],
                              rate['images_per_second'])

  def _end_epoch(self, state, step: int, epoch: int, sums,
                 epoch_start: float):
    """Validates the epoch's weights; writes its record to TensorBoard and
    metrics.jsonl. Returns (the record, whether it is the last epoch,
    whether early stopping ends training here)."""
    train_values = metrics_lib.to_floats(sums, 'train_')
    _check_finite(train_values, epoch, self.saver.store)
    train_seconds = time.time() - epoch_start
    values = self._validate(state, 'none', 'validation_')
    stop_early = self.stopper.update({**values, 'epoch': epoch + 1})
    last = epoch + 1 == self.spec.num_epochs or stop_early
    if last and self.spec.tta != 'none':
      values.update(self._validate(state, self.spec.tta, 'validation_tta_'))
    record = {'epoch': epoch + 1, 'step': step, **train_values, **values,
              'learning_rate': float(self.trainer.schedule(step - 1)),
              'train_seconds': round(train_seconds, 2),
              'epoch_seconds': round(time.time() - epoch_start, 2)}
    self.writer.write_epoch(step, record)
    # Logged before its checkpoint: a kill in between leaves a line past
    # the checkpoint, which the resumed run cuts (EpochLog.resume).
    self.epoch_log.append(record)
    return record, last, stop_early

  def _validate(self, state, tta: str, prefix: str) -> dict:
    batches, padding = self.trainer.pipeline.eval_share('validation')
    return metrics_lib.to_floats(eval_loop.evaluate_split(
        state, batches, self.trainer.devices, tta=tta, padding=padding),
                                 prefix)

  def _stopped(self, signum, epochs_done: int, step: int) -> Stopped:
    per_epoch = self.steps_per_epoch
    where = (f'at the end of epoch {epochs_done}' if step % per_epoch == 0
             else f'in epoch {epochs_done + 1} (its step '
                  f'{step % per_epoch} of {per_epoch})')
    return Stopped(signum, (
        f'{signal.Signals(signum).name} received: training stopped {where} '
        f'with a checkpoint at step {step} in {self.saver.store.directory}: '
        'run the same command to resume from it.'))


def _check_finite(values: dict, epoch: int, store):
  if not metrics_lib.is_finite(values):
    latest = store.latest_step()
    kept = (f'the last good checkpoint (step {latest}) is kept in '
            f'{store.directory}' if latest is not None else
            'no checkpoint was written')
    raise TrainingDiverged(
        f'the training loss became {values} in epoch {epoch + 1}: training '
        f'stopped and {kept}. Lower --config.learning_rate and use a new '
        '--workdir (or remove the diverged steps).')
