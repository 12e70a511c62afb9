"""A training run from its specs (modes/train.py builds them from the
config): the checks before a resume (resume.py), the set-up (setup.py), the
epoch loop (loop.py), then the curves and a summary."""

import os
import time

from absl import logging

from imgclf_jax.checkpoints import checkpoint_store
from imgclf_jax.data.spec import DataSpec
from imgclf_jax.parallel import distributed
from imgclf_jax.report import event_files
from imgclf_jax.report import overfitting
from imgclf_jax.report import plots
from imgclf_jax.training import early_stopping
from imgclf_jax.training import loop
from imgclf_jax.training import metrics as metrics_lib
from imgclf_jax.training import preemption
from imgclf_jax.training import progress as progress_lib
from imgclf_jax.training import resume
from imgclf_jax.training import setup
from imgclf_jax.training.spec import RunSpec


def run(spec: RunSpec, source, data: DataSpec, workdir: str, devices, lock,
        check_config, pretrained=None) -> dict:
  """Trains `spec` on `source` in `workdir` (absolute), resuming from its
  latest checkpoint, on `devices` (this process's). `data`: what the input
  pipeline reads (config/specs.data_spec). `lock` (workdir_lock.py) is held; it is signed
  once the checkpoint is known to fit (`check_config(saved_config,
  directory)` raises where its config does not). Returns the last epoch's
  metrics record (also the last line of `<workdir>/metrics.jsonl`).
  `pretrained(state) -> (state, init record)` gives a new (not a resumed)
  run its initial weights (None: random ones)."""
  store = checkpoint_store.CheckpointStore(workdir,
                                           spec.checkpoints.max_to_keep)
  split_sizes = source.split_sizes()
  epoch_log = metrics_lib.EpochLog(workdir, write=distributed.is_primary())
  stopper = early_stopping.EarlyStopping(spec.loop.early_stopping_metric,
                                         spec.loop.early_stopping_patience)
  resumed = resume.latest(store, source.info.class_names, split_sizes,
                          check_config)
  if resumed is not None:
    resume.replay(stopper, epoch_log.read(), resumed.epoch)
    finished = resume.finished(resumed.epoch, spec.loop.num_epochs, stopper)
    if finished:  # nothing to do: write nothing
      logging.info('%s', finished)
      store.close()
      return resumed.metadata['metrics']
  # Not refused by the checkpoint: from here on this run writes.
  lock.sign()
  store.remove_unfinished()
  setup.check_validation_files(source)
  pipeline = setup.make_pipeline(source, data, resumed)
  preemption.raise_if_swallowed()  # a lost stop: not on to the model
  state, dropout_rng, init_record = setup.initial_state(
      spec.model, spec.optim, spec.loop.seed, pipeline, store, resumed,
      pretrained)
  start = resume.start(resumed, int(state.step), pipeline.steps_per_epoch,
                       store.directory)
  epoch_log.resume(start.epoch,
                   resumed.metadata['metrics'] if resumed is not None else None)
  if distributed.is_primary():
    event_files.cut_after(workdir, start.step)
  setup.describe(spec.model.name, spec.loop.batch_size, pipeline, devices,
                 workdir)
  writer = event_files.TrainingWriter(workdir, write=distributed.is_primary())
  if start.step == 0:
    writer.write_hparams(spec.config_record)
  epochs = loop.EpochLoop(
      spec.loop, spec.checkpoints,
      setup.trainer(spec.optim, spec.loop, pipeline, dropout_rng, devices),
      loop.Saver(store, setup.checkpoint_metadata(
          spec.config_record, pipeline, split_sizes, init_record)),
      stopper, epoch_log, writer)
  last_record = resumed.metadata['metrics'] if resumed is not None else {}
  return _run_epochs(epochs, state, start, last_record, workdir)


def _run_epochs(epochs: loop.EpochLoop, state, start: resume.Start,
                last_record: dict, workdir: str) -> dict:
  """Runs the epoch loop, then draws the curves and logs a summary; the
  curves are drawn also when a stop or Ctrl-C ends it (loop.Stopped,
  loop.Interrupted). The store is closed and the writer flushed however it
  ends."""
  store, started = epochs.saver.store, time.time()
  try:
    record = epochs.run(state, start, last_record)
  except (KeyboardInterrupt, loop.Stopped) as e:
    if epochs.progress is not None:
      epochs.progress.close()
    _finish(epochs.epoch_log, workdir)
    if isinstance(e, loop.Stopped):
      raise
    latest = store.latest_step()
    kept = (f'the last checkpoint (step {latest}) is kept in '
            f'{store.directory}: run the same command to resume from it'
            if latest is not None else 'no checkpoint was written yet')
    raise loop.Interrupted(f'training stopped in epoch {epochs.epoch + 1}; '
                           f'{kept}.') from None
  finally:
    store.close()
    epochs.writer.flush()
  records = _finish(epochs.epoch_log, workdir)
  _summary(records, workdir, time.time() - started)
  return record or (records[-1] if records else {})


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
      'TensorBoard events (train/, validation/).',
      progress_lib.format_seconds(seconds), last['epoch'],
      100 * last['validation_accuracy'], tta, best, workdir)
