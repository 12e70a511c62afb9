"""train_and_evaluate: the training loop, from config to checkpoints."""

import functools
import os
import signal
import time

from absl import logging
from clu import metric_writers
import jax
import numpy as np

from imgclf_jax.checkpoints import checkpoint_store
from imgclf_jax.checkpoints import workdir_lock
from imgclf_jax.config import keys
from imgclf_jax.config import resolve
from imgclf_jax.data import imbalance
from imgclf_jax.data import input_pipeline
from imgclf_jax.data import sources
from imgclf_jax.errors import UserError
from imgclf_jax.models import registry
from imgclf_jax.parallel import device_axis
from imgclf_jax.parallel import distributed
from imgclf_jax.report import class_distribution
from imgclf_jax.report import event_files
from imgclf_jax.report import overfitting
from imgclf_jax.report import plots
from imgclf_jax.training import device_data
from imgclf_jax.training import eval_loop
from imgclf_jax.training import metrics as metrics_lib
from imgclf_jax.training import preemption
from imgclf_jax.training import progress as progress_lib
from imgclf_jax.training import steps
from imgclf_jax.training import train_state as train_state_lib


class TrainingDiverged(UserError):
  """The loss stopped being a finite number."""
  leaves_files = True  # its metrics and events show how it diverged


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains `config` in `workdir` (resuming from its latest checkpoint).

  Returns the last epoch's metrics record (also the last line of
  `<workdir>/metrics.jsonl`). Holds the workdir's training lock
  (workdir_lock.py) throughout: a second trainer there stops at once.
  """
  workdir = os.path.abspath(workdir)
  devices = jax.local_devices()  # with several processes, this one's
  # The global batch is split over every device of every process.
  config = resolve.for_training(config, jax.device_count())
  source = sources.make_source(config)
  imbalance.parse_class_weights(config.class_weights, source.info.class_names)
  distributed.check_shared_workdir(workdir)
  # With several processes the first holds the lock (and writes the files).
  lock = (workdir_lock.TrainLock(workdir) if distributed.is_primary() else
          workdir_lock.NotLocked())
  with lock:
    return _train(config, source, workdir, devices, lock)


class Interrupted(Exception):
  """Training stopped by Ctrl-C (SIGINT); the message says what is kept."""


def _train(config, source, workdir: str, devices, lock) -> dict:
  num_devices = len(devices)
  num_epochs = int(config.num_epochs)
  info = source.info
  store = checkpoint_store.CheckpointStore(workdir, config.max_checkpoints_to_keep)

  split_sizes = source.split_sizes()
  latest = store.latest_step()
  normalization, metadata = None, None
  primary = distributed.is_primary()
  epoch_log = metrics_lib.EpochLog(workdir, write=primary)
  stopper = EarlyStopping(config.early_stopping_metric,
                          config.early_stopping_patience)
  if latest is not None:
    _, metadata = store.restore_metadata(latest)
    checkpoint_store.check_config(metadata['config'], config, store.directory)
    checkpoint_store.check_class_names(info.class_names, metadata['class_names'],
                                  store.directory)
    checkpoint_store.check_split_sizes(metadata['split_sizes'], split_sizes,
                                  store.directory)
    normalization = metadata['normalization']
    done = metadata['epoch']
    records = [r for r in epoch_log.read() if r['epoch'] <= done]
    for r in records:
      stopper.update(r)
    finished = _finished(done, num_epochs, stopper)
    if finished:  # nothing to do: write nothing
      logging.info('%s', finished)
      store.close()
      return metadata['metrics']
  # Not refused by the checkpoint: from here on this run writes.
  lock.sign()
  store.remove_unfinished()
  _check_validation_files(source)

  pipeline = input_pipeline.InputPipeline(source, config, normalization)
  steps_per_epoch = pipeline.steps_per_epoch
  model = registry.create_model(config, info.num_classes)
  init_rng, dropout_rng = jax.random.split(jax.random.key(config.seed))
  state = train_state_lib.create_train_state(
      init_rng, model, pipeline.image_shape, config, steps_per_epoch)
  if latest is not None:
    state = store.restore_state(latest, state)
    logging.info('Resumed from checkpoint step %d in %s', latest,
                 store.directory)
  elif hasattr(model, 'init_from_data'):
    state = _init_from_data(model, state, pipeline, config.seed)
  step = int(state.step)
  # A checkpoint inside an epoch (checkpoint_every_steps, a stop request)
  # resumes at its step: the epoch's remaining batches, augmentations and
  # dropout masks are those of an uninterrupted run.
  start_epoch, start_in_epoch = divmod(step, steps_per_epoch)
  resumed_sums = None
  if latest is not None and (metadata['epoch'] != start_epoch or (
      start_in_epoch and 'epoch_train_sums' not in metadata)):
    raise UserError(
        f'checkpoint step {step} in {store.directory} does not lie where its '
        f'metadata says (epoch {metadata["epoch"]} of {steps_per_epoch} '
        'steps): it was not written by this imgclf_jax. Use a new --workdir.')
  if start_in_epoch:
    resumed_sums = metrics_lib.from_sum_record(metadata['epoch_train_sums'])
    logging.info('Resuming inside epoch %d, at its step %d of %d.',
                 start_epoch + 1, start_in_epoch, steps_per_epoch)
  epoch_log.resume(start_epoch)
  if primary:
    event_files.cut_after(workdir, step)

  where = (f'{num_devices} device(s)' if not distributed.several() else
           f'{jax.device_count()} devices, {num_devices} in each of '
           f'{jax.process_count()} processes')
  logging.info('Dataset %s: %d classes, %s examples; model %s; %s, '
               '%d steps of %d per epoch.', info.name, info.num_classes,
               info.num_examples, config.model, where, steps_per_epoch,
               config.batch_size)
  if primary:
    class_distribution.write_class_distribution(pipeline, config, workdir)
  weights = pipeline.loss_weights()
  if weights is not None:
    logging.info('Loss weights per class: %s', ', '.join(
        f'{n}={w:.3g}' for n, w in zip(info.class_names, weights)))
  writer = _tensorboard_writer(workdir)
  if step == 0:
    writer.write_hparams(keys.to_dict(config))
  if config.data_on_device:
    resident = device_data.DeviceData(pipeline, config, devices)
    p_train_step, epoch_batches = resident.train_step, resident.train_batches
  else:
    p_train_step = device_axis.pmap_step(
        steps.train_step_for(config, steps_per_epoch), in_axes=(None, 0, None),
        devices=devices)
    epoch_batches = pipeline.train_batches
  schedule = train_state_lib.learning_rate_schedule(config, steps_per_epoch)
  every_steps = int(config.checkpoint_every_steps)
  last_record = metadata['metrics'] if latest is not None else {}

  def save(epochs_done, record, train_sums=None):
    """A checkpoint at `step`: at an epoch's end (`record` its metrics,
    ranked for --step=best) or inside one (`train_sums`: the epoch's running
    metric sums; `record` the last finished epoch's)."""
    data = {'config': keys.to_dict(config),
            'class_names': list(info.class_names),
            'normalization': pipeline.normalization,
            'image_shape': list(pipeline.image_shape),
            'split_sizes': split_sizes,
            'dataset': info.name, 'epoch': epochs_done, 'metrics': record}
    ranked = None
    if train_sums is not None:
      data['epoch_train_sums'] = metrics_lib.to_sums(train_sums)
    else:
      ranked = {checkpoint_store.BEST_METRIC: record[checkpoint_store.BEST_METRIC]}
    store.save(step, state, data, metrics=ranked)

  record, started = {}, time.time()
  progress, epoch = None, start_epoch
  try:
    with preemption.StopSignals() as stop:
      for epoch in range(start_epoch, num_epochs):
        epoch_start = time.time()
        first = start_in_epoch if epoch == start_epoch else 0
        stopping = False
        train_metrics = metrics_lib.Accumulator(
            resumed_sums if first else None)
        progress = progress_lib.EpochProgress(
            epoch, num_epochs, steps_per_epoch, config.batch_size, done=first)
        for batch in device_axis.to_devices(epoch_batches(epoch, first),
                                            devices):
          state, step_metrics = p_train_step(state, batch, dropout_rng)
          train_metrics.add(step_metrics)
          step += 1
          progress.step()
          if step % config.log_every_steps == 0:
            running = metrics_lib.to_floats(train_metrics.result(), 'train_')
            _check_finite(running, epoch, store)
            rate = progress.show(running['train_loss'],
                                 running['train_accuracy'])
            writer.write_scalars(step, {
                'train_loss_running': running['train_loss'],
                'train_accuracy_running': running['train_accuracy'],
                'train_images_per_second': rate['images_per_second']})
          inside = step % steps_per_epoch != 0
          stopping = stop.requested(step)
          if inside and (stopping or (every_steps and
                                      step % every_steps == 0)):
            sums = train_metrics.result()
            _check_finite(metrics_lib.to_floats(sums, 'train_'), epoch, store)
            save(epoch, last_record, train_sums=sums)
          if stopping:
            progress.close()
            raise Stopped(stop.signum, _stopped_message(
                stop.signum, epoch, step, steps_per_epoch, store))
        progress.close()
        train_values = metrics_lib.to_floats(train_metrics.result(), 'train_')
        _check_finite(train_values, epoch, store)
        train_seconds = time.time() - epoch_start
        batches, padding = pipeline.eval_share('validation')
        val_values = metrics_lib.to_floats(eval_loop.evaluate_split(
            state, batches, devices, padding=padding), 'validation_')
        stop_early = stopper.update({**val_values, 'epoch': epoch + 1})
        last = epoch + 1 == num_epochs or stop_early
        if last and config.tta != 'none':
          batches, padding = pipeline.eval_share('validation')
          val_values.update(metrics_lib.to_floats(eval_loop.evaluate_split(
              state, batches, devices, tta=config.tta, padding=padding),
                                                  'validation_tta_'))
        record = {'epoch': epoch + 1, 'step': step, **train_values,
                  **val_values,
                  'learning_rate': float(schedule(step - 1)),
                  'train_seconds': round(train_seconds, 2),
                  'epoch_seconds': round(time.time() - epoch_start, 2)}
        writer.write_scalars(step, {k: v for k, v in record.items()
                                    if k not in ('epoch', 'step')})
        # Logged before its checkpoint: a kill in between leaves a line past
        # the checkpoint, which the resumed run cuts (EpochLog.resume).
        epoch_log.append(record)
        last_record = record
        if (last or (epoch + 1) % config.checkpoint_every_epochs == 0 or
            (every_steps and step % every_steps == 0) or stopping):
          save(epoch + 1, record)
        logging.info('%s', progress_lib.epoch_line(record, num_epochs))
        if stopping and not last:
          raise Stopped(stop.signum, _stopped_message(
              stop.signum, epoch + 1, step, steps_per_epoch, store))
        if stop_early:
          logging.info('%s', stopper.reason())
          break
  except (KeyboardInterrupt, Stopped) as e:
    if progress is not None:
      progress.close()
    _finish(epoch_log, workdir)
    if isinstance(e, Stopped):
      raise
    latest = store.latest_step()
    kept = (f'the last checkpoint (step {latest}) is kept in '
            f'{store.directory}: run the same command to resume from it'
            if latest is not None else 'no checkpoint was written yet')
    raise Interrupted(f'training stopped in epoch {epoch + 1}; {kept}.'
                      ) from None
  finally:
    store.close()
    writer.flush()
  records = _finish(epoch_log, workdir)
  _summary(records, workdir, time.time() - started)
  return record or (records[-1] if records else {})


class Stopped(Exception):
  """Training stopped by a signal (SIGTERM, Ctrl-C) with a checkpoint at
  its last step; `status` is the exit status (preemption.exit_status)."""

  def __init__(self, signum, message: str):
    super().__init__(message)
    self.status = preemption.exit_status(signum)


def _stopped_message(signum, epochs_done: int, step: int,
                     steps_per_epoch: int, store) -> str:
  where = (f'at the end of epoch {epochs_done}' if step % steps_per_epoch == 0
           else f'in epoch {epochs_done + 1} (its step '
                f'{step % steps_per_epoch} of {steps_per_epoch})')
  return (f'{signal.Signals(signum).name} received: training stopped {where} '
          f'with a checkpoint at step {step} in {store.directory}: run the '
          'same command to resume from it.')


def _finished(done: int, num_epochs: int, stopper) -> str | None:
  """Why a run with `done` epochs checkpointed has nothing left to train,
  or None."""
  if done >= num_epochs:
    return (f'Already trained {done}/{num_epochs} epochs: nothing to do. '
            'Raise --config.num_epochs to continue.')
  if stopper.stopped:
    return (f'{stopper.reason()} Nothing to do: raise '
            '--config.early_stopping_patience (or set it to 0) to continue.')
  return None


def _finish(epoch_log, workdir: str) -> list:
  """Draws curves.png of the epochs in metrics.jsonl (the first process);
  returns them."""
  records = epoch_log.read()
  if records and epoch_log.write:
    plots.plot_curves(records, os.path.join(workdir, 'curves.png'),
                      overfit_epoch=overfitting.log_overfitting(records))
  return records


def _summary(records: list, workdir: str, seconds: float):
  if not records:
    return
  best = checkpoint_store.describe_best(workdir, records)
  last = records[-1]
  tta = (f' ({last["validation_tta_accuracy"]:.1%} with test-time '
         'augmentation)' if 'validation_tta_accuracy' in last else '')
  logging.info(
      'Done in %s. Last epoch %d: validation accuracy %.1f%%%s. %s In %s: '
      'checkpoints/, metrics.jsonl, curves.png, class_distribution.png, '
      'TensorBoard events.', progress_lib.format_seconds(seconds),
      last['epoch'], 100 * last['validation_accuracy'], tta, best, workdir)


def _tensorboard_writer(workdir: str):
  """TensorBoard events in `workdir` on the first process (the log has its
  own epoch lines); nothing on the others."""
  if jax.process_index() > 0:
    return metric_writers.MultiWriter([])
  return metric_writers.AsyncWriter(metric_writers.SummaryWriter(workdir))


class EarlyStopping:
  """Stops when `metric` ('validation_loss': lower is better,
  'validation_accuracy': higher) has not improved for `patience` epochs
  (0: never stops)."""

  def __init__(self, metric: str, patience: int):
    self.metric, self.patience = metric, int(patience)
    self.best, self.best_epoch, self.stopped = None, None, False

  def update(self, record: dict) -> bool:
    """Takes an epoch's record; True when training should stop now."""
    value = record[self.metric]
    sign = -1.0 if self.metric.endswith('loss') else 1.0
    if self.best is None or sign * value > sign * self.best:
      self.best, self.best_epoch = value, record['epoch']
    self.stopped = bool(self.patience) and (
        record['epoch'] - self.best_epoch >= self.patience)
    return self.stopped

  def reason(self) -> str:
    return (f'Stopped early: {self.metric} has not improved for '
            f'{self.patience} epochs since epoch {self.best_epoch} '
            f'({self.best:.4f}).')


def _init_from_data(model, state, pipeline, seed: int,
                    num_images: int = 5000):
  """`state` with the parameters that `model.init_from_data` computes from
  `num_images` normalised training images drawn at random with `seed`
  (fast_cifar's whitening layer; a folder's train split is in class order,
  so its first images would hold one or two classes). Only those are
  decoded, unless the split is cached (then the pass fills the cache)."""
  n = pipeline.source.num_examples('train')
  chosen = np.sort(np.random.default_rng(seed).choice(
      n, min(n, num_images), replace=False))
  images = np.concatenate([batch['image'] for batch in
                           pipeline.eval_batches('train', chosen)])
  logging.info('Initialising %s from %d training images.',
               type(model).__name__, len(images))
  return train_state_lib.with_params(
      state, model.init_from_data(state.params, images))


def _check_validation_files(source):
  """Raises UserError naming the first validation image that does not decode,
  before training spends an epoch on the way to it (a new run's statistics
  pass decodes the train split). Image folders only: TFDS has no files."""
  files = source.files('validation')
  if files is not None and sources.find_unreadable(files):
    raise UserError(source.describe_error('validation', None))


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
