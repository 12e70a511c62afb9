"""A resumed run: the checks before it takes its workdir's latest checkpoint,
and where in the epochs it goes on."""

import dataclasses

from absl import logging

from imgclf_jax.checkpoints import checkpoint_store
from imgclf_jax.errors import UserError
from imgclf_jax.training import metrics as metrics_lib


@dataclasses.dataclass(frozen=True)
class Resumed:
  """The latest checkpoint of the workdir: its step and metadata
  (checkpoint_store.py: the config, the normalisation statistics, the
  epochs done and their metrics, ...)."""
  step: int
  metadata: dict

  @property
  def epoch(self) -> int:
    """The epochs finished before the checkpoint."""
    return self.metadata['epoch']


def latest(store, class_names, split_sizes: dict,
           check_config) -> Resumed | None:
  """The latest checkpoint in `store`, once it is known to fit this run, or
  None (a new run). Raises UserError where its config
  (`check_config(saved_config, directory)`, resolve.check_resume), the
  dataset's `class_names` or its `split_sizes` do not fit."""
  step = store.latest_step()
  if step is None:
    return None
  _, metadata = store.restore_metadata(step)
  check_config(metadata['config'], store.directory)
  checkpoint_store.check_class_names(class_names, metadata['class_names'],
                                     store.directory)
  change = checkpoint_store.split_sizes_change(
      metadata['split_sizes'], split_sizes, store.directory)
  if change:
    raise UserError(
        f'{change}: the epochs would not match, and a validation split held '
        'out of the training images could now hold images already trained '
        'on. Use a new --workdir, or the dataset and settings as they were.')
  return Resumed(step, metadata)


def replay(stopper, records: list, epochs_done: int):
  """Feeds early stopping the records of the epochs up to the checkpoint's."""
  for record in records:
    if record['epoch'] <= epochs_done:
      stopper.update(record)


def finished(done: int, num_epochs: int, stopper) -> str | None:
  """Why a run with `done` epochs checkpointed has nothing left to train,
  or None."""
  if done >= num_epochs:
    return (f'Already trained {done}/{num_epochs} epochs: nothing to do. '
            'Raise --config.num_epochs to continue.')
  if stopper.stopped:
    return (f'{stopper.reason()} Nothing to do: raise '
            '--config.early_stopping_patience (or set it to 0) to continue.')
  return None


@dataclasses.dataclass(frozen=True)
class Start:
  """Where training goes on: at `step`, step `in_epoch` of epoch `epoch`
  (0-based), with the running metric sums of that epoch's earlier steps
  (`train_sums`, None at an epoch's start)."""
  step: int
  epoch: int
  in_epoch: int
  train_sums: object = None


def start(resumed: Resumed | None, step: int, steps_per_epoch: int,
          directory: str) -> Start:
  """Where a run whose state is at `step` goes on. A checkpoint inside an
  epoch (checkpoint_every_steps, a stop request) resumes at its step: the
  epoch's remaining batches, augmentations and dropout masks are those of
  an uninterrupted run. Raises UserError where the step does not lie where
  the checkpoint's metadata says."""
  epoch, in_epoch = divmod(step, steps_per_epoch)
  if resumed is not None and (resumed.epoch != epoch or (
      in_epoch and 'epoch_train_sums' not in resumed.metadata)):
    raise UserError(
        f'checkpoint step {step} in {directory} does not lie where its '
        f'metadata says (epoch {resumed.epoch} of {steps_per_epoch} '
        'steps): it was not written by this imgclf_jax. Use a new --workdir.')
  if not in_epoch:
    return Start(step, epoch, 0)
  logging.info('Resuming inside epoch %d, at its step %d of %d.',
               epoch + 1, in_epoch, steps_per_epoch)
  return Start(step, epoch, in_epoch, metrics_lib.from_sum_record(
      resumed.metadata['epoch_train_sums']))
