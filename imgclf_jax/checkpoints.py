"""Orbax checkpoints under <workdir>/checkpoints, with what eval needs.

Each checkpoint step holds two items:
  state     the TrainState arrays (params, optimizer state, step)
  metadata  JSON: the format version, the config, class names, normalisation
            statistics, image shape, train/validation split sizes, epoch and
            validation metrics, so evaluation and prediction can rebuild the
            model without the original config file, and training can refuse
            to resume on a changed dataset.

The metadata's `format_version` is FORMAT_VERSION when written; a checkpoint
of another version is refused with a clear error rather than read by guess.

Kept: the latest `max_to_keep` steps and, besides them, the step with the best
validation accuracy (Orbax preservation policies LatestN + BestN, ranked by
the metrics passed to `save`). `--step=best` / `--step=latest` pick them.
"""

import os

import orbax.checkpoint as ocp

from imgclf_jax import config_keys
from imgclf_jax.errors import UserError

# The version of what a checkpoint holds (the metadata's keys and the
# TrainState's structure). Raise it when either changes.
FORMAT_VERSION = 1

# The metric (passed to `save`) that ranks checkpoints for --step=best.
BEST_METRIC = 'validation_accuracy'

# Words of Orbax/TensorStore errors that mean files are missing or cut short
# (as opposed to a checkpoint that does not fit the model).
_DAMAGE_SIGNS = ('was not found in the checkpoint', 'NOT_FOUND', 'OUT_OF_RANGE',
                 'DATA_LOSS')

class CheckpointStore:
  """A thin wrapper over ocp.CheckpointManager for (state, metadata) pairs."""

  def __init__(self, workdir: str, max_to_keep: int = 3):
    self.directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
    policies = ocp.checkpoint_managers
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            create=False,
            # best_fn makes the manager write and read the metrics of `save`.
            best_fn=lambda metrics: metrics[BEST_METRIC], best_mode='max',
            preservation_policy=policies.AnyPreservationPolicy([
                policies.LatestN(n=max_to_keep),
                policies.BestN(get_metric_fn=lambda m: m[BEST_METRIC],
                               reverse=False, n=1,
                               keep_checkpoints_without_metrics=False)])),
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
        return self.best_step()
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

  def save(self, step: int, state, metadata: dict, metrics: dict):
    """Saves step `step` (`metadata` gets the format version); `metrics` must
    hold BEST_METRIC (ranks --step=best)."""
    os.makedirs(self.directory, exist_ok=True)
    metadata = {'format_version': FORMAT_VERSION, **metadata}
    self._manager.save(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                metadata=ocp.args.JsonSave(metadata)),
        metrics={k: float(v) for k, v in metrics.items()})

  def restore_metadata(self, step=None) -> tuple[int, dict]:
    step = self._check_step(step)
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          metadata=ocp.args.JsonRestore()))
    except Exception as e:  # pylint: disable=broad-except  (Orbax, TensorStore)
      raise self._damaged(step, e) from None
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
    """Restores into the structure (and shapes) of `target_state`."""
    step = self._check_step(step)
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(target_state)))
    except (ValueError, KeyError) as e:
      if any(sign in str(e) for sign in _DAMAGE_SIGNS):
        raise self._damaged(step, e) from None
      raise UserError(
          f'checkpoint {step} in {self.directory} does not fit the model of '
          f'this config ({type(e).__name__}: {_first_line(e)}): '
          'use a new --workdir or the config it was trained with.') from None
    except Exception as e:  # pylint: disable=broad-except  (TensorStore reads)
      raise self._damaged(step, e) from None
    return restored.state

  def _damaged(self, step: int, error: Exception) -> UserError:
    others = [s for s in self.steps() if s != step]
    return UserError(
        f'checkpoint {step} in {self.directory} is damaged or incomplete '
        f'({type(error).__name__}: {_first_line(error)}): move its folder '
        f'{os.path.join(self.directory, str(step))} out of the way (training '
        'then resumes from the latest other step)'
        + (f', or evaluate another with --step ({others})' if others
           else '') + '.')

  def close(self):
    self._manager.wait_until_finished()
    self._manager.close()


def _first_line(error: Exception) -> str:
  text = str(error).split(' See full TensorStore details')[0]
  lines = text.splitlines()
  return lines[0][:200] if lines else ''


def check_config(saved_config: dict, config, directory: str):
  """Raises UserError if `config` differs from a checkpoint's in a key a
  resumed run must keep (config_keys.KEY_ORIGINS), or in using weight decay
  (Adam and AdamW keep different state)."""
  differences = config_keys.differences
  diffs = differences(saved_config, config,
                      config_keys.keys_where('resume', config_keys.FIXED))
  if (saved_config['weight_decay'] > 0) != (config.weight_decay > 0):
    # train_state's rule: AdamW when weight_decay > 0, else Adam.
    diffs += differences(saved_config, config, ('weight_decay',))
  if diffs:
    diffs = ', '.join(diffs)
    raise UserError(
        f'the checkpoints in {directory} come from an incompatible config '
        f'({diffs}): use a new --workdir, or the config they were trained with.')


def check_split_sizes(saved_sizes: dict, sizes: dict, directory: str):
  """Raises UserError if the train/validation split sizes changed since the
  checkpoint."""
  if saved_sizes != sizes:
    raise UserError(
        f'the dataset or its split settings (train_split, validation_split, '
        f'validation_fraction) changed since the checkpoints in {directory} '
        f'were written (examples per split: checkpoint {saved_sizes} vs now '
        f'{sizes}): the epochs would not match, and a validation split held '
        'out of the training images could now hold images already trained on. '
        'Use a new --workdir, or the dataset and settings as they were.')


def check_class_names(class_names, saved_class_names, directory: str):
  """Raises UserError if a dataset's classes are not the checkpoint's."""
  if list(class_names) != list(saved_class_names):
    raise UserError(
        f'class names differ from the checkpoint in {directory}: checkpoint '
        f'{list(saved_class_names)} vs dataset {list(class_names)}. Evaluate '
        'on a dataset with the same classes, in the same order.')
