"""Orbax checkpoints under <workdir>/checkpoints, with what eval needs.

Each checkpoint step holds two items:
  state     the TrainState arrays (params, optimizer state, step)
  metadata  JSON: the format version, the SHA-256 of the state's arrays
            (`state_sha256`), the config, class names, normalisation
            statistics, image shape, train/validation split sizes, epoch and
            validation metrics, so evaluation and prediction can rebuild the
            model without the original config file, and training can refuse
            to resume on a changed dataset; for a run started from
            pretrained weights (config.init_from), `init_from`: their path,
            SHA-256, source, the tensors loaded and those left new
            (modes/pretrained_init.py).

The metadata's `format_version` is FORMAT_VERSION when written; a checkpoint
of another version is refused with a clear error rather than read by guess.
A restored state must match its `state_sha256` and hold finite numbers; one
that does not, or misses a file, is refused as damaged, with its folder and
the other steps named.

Kept: the latest `max_to_keep` steps and, besides them, the step with the best
validation accuracy (Orbax preservation policies LatestN + BestN, ranked by
the metrics passed to `save`). `--step=best` / `--step=latest` pick them. A
training store applies the policy at each save and again at `close` (to the
steps a run killed before its save had removed the old ones left behind).

`save` returns when the checkpoint is on disk: a write that fails (a full
disk) is a UserError at its step, its unfinished folder removed, the earlier
steps kept.

A reader beside a trainer (eval, predict) may see the step it reads removed
by the trainer's retention: a read that fails because its step is gone is
`StepRemoved`, never "damaged" (modes/checkpoint_loader.py then reads the
new latest or best step).
"""

import os
import shutil
import time

from absl import logging
from etils import epath
import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp

from imgclf_jax.byte_sizes import bytes_text
from imgclf_jax.checkpoints import integrity as integrity
from imgclf_jax.checkpoints import workdir_lock
from imgclf_jax.errors import UserError

# The version of what a checkpoint holds (the metadata's keys and the
# TrainState's structure). Raise it when either changes.
FORMAT_VERSION = 2

# The metric (passed to `save`) that ranks checkpoints for --step=best.
BEST_METRIC = 'validation_accuracy'

# The metadata key of the state's checksum (integrity.state_checksum).
CHECKSUM_KEY = 'state_sha256'

# Words of Orbax/TensorStore errors that mean files are missing or cut short
# (as opposed to a checkpoint that does not fit the model).
_DAMAGE_SIGNS = ('was not found in the checkpoint', 'NOT_FOUND', 'OUT_OF_RANGE',
                 'DATA_LOSS')

# How long a reader whose read failed waits for the step's folder to go,
# where a trainer holds the workdir, before it calls the step damaged: Orbax
# removes a step with rmtree (its files first, the folder last), which takes
# well under this even for a checkpoint of thousands of files on a network
# disk. Not waited for without a trainer (nothing removes steps then).
REMOVAL_SECONDS = 5.0

_policies = ocp.checkpoint_managers
_formats = ocp.path.format_utils


class StepRemoved(UserError):
  """A checkpoint step that was removed (by a trainer's retention) while it
  was read; `step` is its number."""

  def __init__(self, message: str, step: int):
    super().__init__(message)
    self.step = step


class CheckpointStore:
  """A thin wrapper over ocp.CheckpointManager for (state, metadata) pairs.

  `max_to_keep`: the retention policy of a training store; None for readers
  (eval, predict), which never remove a step.
  """

  def __init__(self, workdir: str, max_to_keep: int | None = None):
    self.directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
    self._max_to_keep = max_to_keep
    self._save_failed = False
    self._policy = _policies.AnyPreservationPolicy([
        _policies.LatestN(n=max_to_keep),
        _policies.BestN(get_metric_fn=lambda m: m[BEST_METRIC],
                        reverse=False, n=1,
                        keep_checkpoints_without_metrics=False)])
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            create=False,
            # best_fn makes the manager write and read the metrics of `save`.
            best_fn=lambda metrics: metrics[BEST_METRIC], best_mode='max',
            preservation_policy=self._policy),
        item_names=('state', 'metadata'))

  def steps(self) -> list[int]:
    return list(self._manager.all_steps()) if os.path.isdir(
        self.directory) else []

  def latest_step(self):
    steps = self.steps()
    return max(steps) if steps else None

  def best_step(self):
    """The step with the best validation accuracy (latest among equals)."""
    return self._manager.best_step() if self.steps() else None

  def _check_step(self, step):
    """None/'latest', 'best', or a step number (int or digits) -> a step."""
    steps = self.steps()
    if not steps:
      raise UserError(f'no checkpoint in {self.directory}: train first, with '
                      'the same --workdir and --mode=train.')
    if isinstance(step, str):
      text = step.strip().lower()
      if text in ('', 'latest'):
        step = None
      elif text == 'best':
        best = self.best_step()
        if best is None:
          raise UserError(
              f'--step=best: no checkpoint in {self.directory} ends an epoch '
              f'(steps there, inside epochs: {steps}), so none has a '
              'validation accuracy to rank: use --step=latest or a step '
              'number.')
        return best
      elif text.isdigit():
        step = int(text)
      else:
        raise UserError(f'--step={step}: use latest, best or a step number '
                        f'({steps}).')
    if step is None:
      return max(steps)
    if step not in steps:
      raise UserError(f'--step={step}: no such checkpoint in {self.directory} '
                      f'(steps there: {steps}).')
    return step

  def save(self, step: int, state, metadata: dict, metrics: dict | None):
    """Saves step `step` (`metadata` gets the format version and the state's
    checksum) and waits until it is written; `metrics` holds BEST_METRIC
    (ranks --step=best), or is None for a step inside an epoch (never
    ranked). A failed write raises UserError."""
    os.makedirs(self.directory, exist_ok=True)
    # With several processes the pmapped state lives on each process's own
    # devices: as numpy on the host, Orbax writes its arrays once, from the
    # primary process.
    if jax.process_count() > 1:
      state = jax.device_get(state)
    metadata = {'format_version': FORMAT_VERSION,
                CHECKSUM_KEY: integrity.state_checksum(state), **metadata}
    before = self.steps()
    try:
      with (integrity.without_orbax_error_logs(),
            integrity.without_orbax_log('did not provide metrics'),
            integrity.draining_event_loops()):
        self._manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                    metadata=ocp.args.JsonSave(metadata)),
            metrics=None if metrics is None else {
                k: float(v) for k, v in metrics.items()})
        # The arrays are written in the background: a failure surfaces here.
        self._manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except  (Orbax, TensorStore)
      if not integrity.write_failure(e):
        raise
      self._save_failed = True
      raise self._write_failed(step, state, e) from None
    _log_removed(sorted(set(before) - set(self.steps())), 'at save')

  def remove_unfinished(self):
    """Removes the folders of saves cut short (a kill -9 during a save leaves
    Orbax's temporary folder; Orbax never lists it as a step), with a log
    line: training resumes from the latest complete step. Process 0 removes;
    every process calls this (they wait for each other)."""
    if jax.process_index() == 0 and os.path.isdir(self.directory):
      for tmp in ocp.path.step.all_temporary_paths(self.directory):
        path = tmp.get()
        logging.warning(
            'Removed %s: a checkpoint save that did not finish (the process '
            'was killed while saving). Training resumes from the latest '
            'complete step (%s).', path, self.latest_step() or 'none: anew')
        shutil.rmtree(path, ignore_errors=True)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices('imgclf_jax.remove_unfinished')

  def _write_failed(self, step: int, state, error: Exception) -> UserError:
    """Removes step `step`'s unfinished folder; the error to raise."""
    for tmp in ocp.path.step.all_temporary_paths(self.directory):
      if ocp.path.step.step_from_checkpoint_name(tmp.get().name) == step:
        shutil.rmtree(tmp.get(), ignore_errors=True)
    self._manager.reload()  # the steps on disk: the failed save removed none
    kept = self.steps()
    if integrity.disk_full(error):
      need = (integrity.folder_bytes(os.path.join(self.directory,
                                                  str(max(kept))))
              if kept else sum(np.asarray(x).nbytes
                               for x in jax.tree.leaves(state)))
      free = shutil.disk_usage(self.directory).free
      reason = (f'the disk is full (a checkpoint takes about '
                f'{bytes_text(need)}, {bytes_text(free)} is free '
                'there): free space there')
    else:
      reason = f'({integrity.describe(error)}): make the folder writable'
    resume = (f'it resumes from step {max(kept)}; steps kept: {kept}' if kept
              else 'no earlier checkpoint was written')
    return UserError(
        f'checkpoint {step} could not be written to {self.directory}: '
        f'{reason}, or train in a --workdir on another disk, then run the '
        f'same command again ({resume}).')

  def restore_metadata(self, step=None) -> tuple[int, dict]:
    step = self._check_step(step)
    try:
      restored = self._restore(step, metadata=ocp.args.JsonRestore())
    except Exception as e:  # pylint: disable=broad-except  (Orbax, TensorStore)
      raise self._damaged(step, integrity.describe(e)) from None
    version = restored.metadata.get('format_version')
    if version != FORMAT_VERSION:
      raise UserError(
          f'checkpoint {step} in {self.directory} has format version '
          f'{version or "none"}; this imgclf_jax reads version '
          f'{FORMAT_VERSION}: '
          'evaluate it with the imgclf_jax that wrote it, or train anew in a '
          'new --workdir.')
    return step, restored.metadata

  def restore_state(self, step: int, target_state):
    """Restores into the structure (and shapes) of `target_state`; refuses a
    state that differs from its checksum or holds NaN/inf as damaged."""
    step = self._check_step(step)
    state_dir = epath.Path(self.directory) / str(step) / 'state'
    if not _formats.is_pytree_checkpoint(state_dir):
      missing = [name for name in (_formats.PYTREE_METADATA_FILE,
                                   _formats.OCDBT_MANIFEST_FILE)
                 if not (state_dir / name).exists()]
      raise self._damaged(step, 'no ' + ', '.join(f'state/{name}'
                                                  for name in missing))
    if jax.process_count() > 1:  # the arrays as numpy on every process
      target_state = jax.device_get(target_state)
    try:
      restored = self._restore(
          step, state=ocp.args.StandardRestore(target_state),
          metadata=ocp.args.JsonRestore())
    except (ValueError, KeyError) as e:
      if any(sign in str(e) for sign in _DAMAGE_SIGNS):
        raise self._damaged(step, integrity.describe(e)) from None
      raise UserError(
          f'checkpoint {step} in {self.directory} does not fit the model of '
          f'this config ({integrity.describe(e)}): '
          'use a new --workdir or the config it was trained with.') from None
    except Exception as e:  # pylint: disable=broad-except  (TensorStore reads)
      raise self._damaged(step, integrity.describe(e)) from None
    expected = restored.metadata.get(CHECKSUM_KEY)
    if expected is None:
      raise self._damaged(step, f'its metadata has no {CHECKSUM_KEY}')
    if integrity.state_checksum(restored.state) != expected:
      raise self._damaged(step, 'its arrays differ from the checksum '
                          'recorded when it was saved')
    if not integrity.all_finite(restored.state):
      raise self._damaged(step, 'its arrays hold NaN or infinite values')
    return restored.state

  def _restore(self, step: int, **items):
    with integrity.draining_event_loops():
      return self._manager.restore(step, args=ocp.args.Composite(**items))

  def _damaged(self, step: int, reason: str) -> UserError:
    """The error of a step that could not be read: StepRemoved where its
    folder is gone, else damaged (naming the other steps)."""
    if self._removed(step):
      self._manager.reload()
      return StepRemoved(
          f'checkpoint {step} in {self.directory} was removed while it was '
          'read (the trainer there keeps only its latest '
          'max_checkpoints_to_keep steps and the best): evaluate a step it '
          f'keeps (steps there now: {self.steps()}) with --step, or '
          '--step=latest or best.', step)
    others = [s for s in self.steps() if s != step]
    return UserError(
        f'checkpoint {step} in {self.directory} is damaged or incomplete '
        f'({reason}): move its folder '
        f'{os.path.join(self.directory, str(step))} out of the way (training '
        'then resumes from the latest other step)'
        + (f', or evaluate another with --step ({others})' if others
           else '') + '.')

  def _removed(self, step: int) -> bool:
    """Whether step `step`'s folder is gone, or goes within REMOVAL_SECONDS
    where a trainer holds the workdir (a removal in progress)."""
    folder = os.path.join(self.directory, str(step))
    workdir = os.path.dirname(self.directory)
    deadline = time.monotonic() + (
        REMOVAL_SECONDS if workdir_lock.trainer_running(workdir) else 0)
    while os.path.isdir(folder):
      if time.monotonic() >= deadline:
        return False
      time.sleep(0.05)
    return True

  def apply_retention(self):
    """Removes the steps the policy does not keep (never the latest or the
    best); a no-op for readers."""
    steps = self.steps()
    if self._max_to_keep is None or len(steps) <= self._max_to_keep:
      return
    keep = self._policy.should_preserve(
        [_Info(step, self._manager.metrics(step)) for step in steps],
        context=_policies.PreservationContext())
    protected = {self.latest_step(), self.best_step()}
    removed = [s for s, k in zip(steps, keep) if not k and s not in protected]
    for step in removed:
      self._manager.delete(step)
    _log_removed(removed, 'left by an earlier run')

  def close(self):
    """Waits for the manager; a training store then applies the retention
    policy, unless a save failed (then nothing more is changed)."""
    try:
      self._manager.wait_until_finished()
      if not self._save_failed:
        self.apply_retention()
    finally:
      with integrity.without_orbax_error_logs():
        self._manager.close()


class _Info:
  """What Orbax preservation policies read of a checkpoint."""

  def __init__(self, step: int, metrics):
    self.step, self.metrics, self.time = step, metrics, None


def _log_removed(steps, why: str):
  if steps:
    logging.info('Removed checkpoint steps %s (%s): kept are the latest '
                 'max_checkpoints_to_keep steps and the best.', steps, why)


def describe_best(workdir: str, records: list[dict]) -> str:
  """What --step=best loads in `workdir` (the kept step with the best
  validation accuracy, the latest among equals), named by its epoch's
  record of `records` (metrics.jsonl's) where it has one."""
  store = CheckpointStore(workdir)
  try:
    step = store.best_step()
  finally:
    store.close()
  if step is None:
    return ('No checkpoint ends an epoch: --step=best has none to load '
            '(--step=latest does).')
  record = next((r for r in records if r.get('step') == step), None)
  if record is None:
    return f'--mode=eval --step=best loads step {step}.'
  return (f'Best epoch {record["epoch"]} (step {step}): '
          f'{record[BEST_METRIC]:.1%} (--mode=eval --step=best loads it).')


def split_sizes_change(saved_sizes: dict, sizes: dict,
                       directory: str) -> str | None:
  """What changed where the train/validation split sizes differ from those
  the checkpoints in `directory` were written with, or None. A resumed
  training refuses such a change; eval warns of it."""
  if saved_sizes == sizes:
    return None
  return (f'the dataset or its split settings (train_split, validation_split, '
          f'validation_fraction) changed since the checkpoints in {directory} '
          f'were written (examples per split: checkpoint {saved_sizes} vs now '
          f'{sizes})')


def check_class_names(class_names, saved_class_names, directory: str):
  """Raises UserError if a dataset's classes are not the checkpoint's."""
  if list(class_names) != list(saved_class_names):
    raise UserError(
        f'class names differ from the checkpoint in {directory}: checkpoint '
        f'{list(saved_class_names)} vs dataset {list(class_names)}. Evaluate '
        'on a dataset with the same classes, in the same order.')
