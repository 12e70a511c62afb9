"""train_and_evaluate: the training loop, from config to checkpoints."""

import functools
import os
import time

from absl import logging
from clu import metric_writers
from clu import periodic_actions
import jax
import numpy as np

from imgclf_jax import checkpoints
from imgclf_jax import config_keys
from imgclf_jax import configuration
from imgclf_jax import datasets
from imgclf_jax import device_axis
from imgclf_jax import device_data
from imgclf_jax import eval_loop
from imgclf_jax import imbalance
from imgclf_jax import input_pipeline
from imgclf_jax import metrics as metrics_lib
from imgclf_jax import models
from imgclf_jax import plots
from imgclf_jax import report
from imgclf_jax import steps
from imgclf_jax import train_state as train_state_lib
from imgclf_jax import workdir_lock
from imgclf_jax.errors import UserError


class TrainingDiverged(UserError):
  """The loss stopped being a finite number."""


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains `config` in `workdir` (resuming from its latest checkpoint).

  Returns the last epoch's metrics record (also the last line of
  `<workdir>/metrics.jsonl`). Holds the workdir's training lock
  (workdir_lock.py) throughout: a second trainer there stops at once.
  """
  workdir = os.path.abspath(workdir)
  devices = jax.local_devices()
  config = configuration.for_training(config, len(devices))
  source = datasets.make_source(config)
  imbalance.parse_class_weights(config.class_weights, source.info.class_names)
  with workdir_lock.TrainLock(workdir) as lock:
    return _train(config, source, workdir, devices, lock)


def _train(config, source, workdir: str, devices, lock) -> dict:
  num_devices = len(devices)
  info = source.info
  store = checkpoints.CheckpointStore(workdir, config.max_checkpoints_to_keep)

  split_sizes = source.split_sizes()
  latest = store.latest_step()
  normalization = None
  if latest is not None:
    _, metadata = store.restore_metadata(latest)
    checkpoints.check_config(metadata['config'], config, store.directory)
    checkpoints.check_class_names(info.class_names, metadata['class_names'],
                                  store.directory)
    checkpoints.check_split_sizes(metadata['split_sizes'], split_sizes,
                                  store.directory)
    normalization = metadata['normalization']
  # Not refused by the checkpoint: from here on this run writes.
  lock.sign()
  _check_validation_files(source)

  pipeline = input_pipeline.InputPipeline(source, config, normalization)
  steps_per_epoch = pipeline.steps_per_epoch
  num_steps = int(config.num_epochs) * steps_per_epoch
  model = models.create_model(config, info.num_classes)
  init_rng, dropout_rng = jax.random.split(jax.random.key(config.seed))
  state = train_state_lib.create_train_state(
      init_rng, model, pipeline.image_shape, config, steps_per_epoch)
  if latest is not None:
    state = store.restore_state(latest, state)
    logging.info('Resumed from checkpoint step %d in %s', latest,
                 store.directory)
  elif hasattr(model, 'init_from_data'):
    state = _init_from_data(model, state, pipeline)
  step = int(state.step)
  if step % steps_per_epoch:
    raise UserError(f'checkpoint step {step} in {store.directory} is not at an '
                    f'epoch boundary of {steps_per_epoch} steps: was '
                    '--config.batch_size changed? Use a new --workdir.')
  start_epoch = step // steps_per_epoch
  epoch_log = metrics_lib.EpochLog(workdir)
  epoch_log.resume(start_epoch)

  logging.info('Dataset %s: %d classes, %s examples; %d devices, %d steps '
               'per epoch.', info.name, info.num_classes, info.num_examples,
               num_devices, steps_per_epoch)
  report.write_class_distribution(pipeline, config, workdir)
  weights = pipeline.loss_weights()
  if weights is not None:
    logging.info('Loss weights per class: %s', ', '.join(
        f'{n}={w:.3g}' for n, w in zip(info.class_names, weights)))
  writer = metric_writers.create_default_writer(
      workdir, just_logging=jax.process_index() > 0)
  if start_epoch == 0:
    writer.write_hparams(config_keys.to_dict(config))
  report_progress = periodic_actions.ReportProgress(
      num_train_steps=num_steps, writer=writer)
  if config.data_on_device:
    resident = device_data.DeviceData(pipeline, config, devices)
    p_train_step, epoch_batches = resident.train_step, resident.train_batches
  else:
    p_train_step = device_axis.pmap_step(
        steps.train_step_for(config), in_axes=(None, 0, None),
        devices=devices)
    epoch_batches = pipeline.train_batches
  schedule = train_state_lib.learning_rate_schedule(config, steps_per_epoch)

  def metadata(epoch, record):
    return {'config': config_keys.to_dict(config),
            'class_names': list(info.class_names),
            'normalization': pipeline.normalization,
            'image_shape': list(pipeline.image_shape),
            'split_sizes': split_sizes,
            'dataset': info.name, 'epoch': epoch + 1, 'metrics': record}

  record = {}
  try:
    for epoch in range(start_epoch, int(config.num_epochs)):
      epoch_start = time.time()
      train_metrics = metrics_lib.Accumulator()
      for batch in device_axis.to_devices(epoch_batches(epoch), devices):
        state, step_metrics = p_train_step(state, batch, dropout_rng)
        train_metrics.add(step_metrics)
        step += 1
        report_progress(step)
        if step % config.log_every_steps == 0:
          running = metrics_lib.to_floats(train_metrics.result(), 'train_')
          _check_finite(running, epoch, store)
          writer.write_scalars(step, running)
      train_values = metrics_lib.to_floats(train_metrics.result(), 'train_')
      _check_finite(train_values, epoch, store)
      train_seconds = time.time() - epoch_start
      last = epoch + 1 == int(config.num_epochs)
      val_values = metrics_lib.to_floats(eval_loop.evaluate_split(
          state, pipeline.eval_batches('validation'), devices), 'validation_')
      if last and config.tta != 'none':
        val_values.update(metrics_lib.to_floats(eval_loop.evaluate_split(
            state, pipeline.eval_batches('validation'), devices,
            tta=config.tta), 'validation_tta_'))
      record = {'epoch': epoch + 1, 'step': step, **train_values, **val_values,
                'learning_rate': float(schedule(step - 1)),
                'train_seconds': round(train_seconds, 2),
                'epoch_seconds': round(time.time() - epoch_start, 2)}
      writer.write_scalars(step, {k: v for k, v in record.items()
                                  if k not in ('epoch', 'step')})
      # Logged before its checkpoint: a kill in between leaves a line past
      # the checkpoint, which the resumed run cuts (EpochLog.resume).
      epoch_log.append(record)
      if last or (epoch + 1) % config.checkpoint_every_epochs == 0:
        store.save(step, state, metadata(epoch, record),
                   metrics={checkpoints.BEST_METRIC:
                            record[checkpoints.BEST_METRIC]})
      logging.info('epoch %d/%d: %s', epoch + 1, config.num_epochs,
                   ', '.join(f'{k}={v:.4f}' for k, v in record.items()
                             if isinstance(v, float)))
  finally:
    store.close()
    writer.flush()
  records = epoch_log.read()
  if records:
    plots.plot_curves(records, os.path.join(workdir, 'curves.png'),
                      overfit_epoch=report.log_overfitting(records))
  return record or (records[-1] if records else {})


def _init_from_data(model, state, pipeline, num_images: int = 5000):
  """`state` with the parameters that `model.init_from_data` computes from
  the first `num_images` normalised training images (fast_cifar's whitening
  layer)."""
  images = []
  for batch in pipeline.eval_batches('train'):
    images.append(batch['image'])
    if sum(len(b) for b in images) >= num_images:
      break
  images = np.concatenate(images)[:num_images]
  logging.info('Initialising %s from %d training images.',
               type(model).__name__, len(images))
  return train_state_lib.with_params(
      state, model.init_from_data(state.params, images))


def _check_validation_files(source):
  """Raises UserError naming the first validation image that does not decode,
  before training spends an epoch on the way to it (a new run's statistics
  pass decodes the train split). Image folders only: TFDS has no files."""
  files = source.files('validation')
  if files is not None and datasets.find_unreadable(files):
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
