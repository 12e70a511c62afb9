"""Orbax checkpoints under <workdir>/checkpoints, with what eval needs.

Each checkpoint step holds two items:
  state     the TrainState arrays (params, optimizer state, step)
  metadata  JSON: the config, class names, normalisation statistics, image
            shape, epoch and validation metrics, so evaluation and prediction
            can rebuild the model without the original config file.

Kept: the latest `max_to_keep` steps and, besides them, the step with the best
validation accuracy (Orbax preservation policies LatestN + BestN, ranked by
the metrics passed to `save`). `--step=best` / `--step=latest` pick them.
"""

import json
import os

import ml_collections
import orbax.checkpoint as ocp

from imgclf_jax.errors import UserError

# The metric (passed to `save`) that ranks checkpoints for --step=best.
BEST_METRIC = 'validation_accuracy'

# Config keys that fix the model's shapes, the data or the step position: a
# checkpoint cannot continue under a config that changes any of them.
STRUCTURAL_KEYS = ('dataset', 'model', 'image_size', 'normalization',
                   'batch_size')


def config_to_dict(config: ml_collections.ConfigDict) -> dict:
  return json.loads(config.to_json_best_effort())


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
        best = self.best_step()
        if best is None or best not in steps:
          raise UserError(
              f'--step=best: no checkpoint in {self.directory} records its '
              f'{BEST_METRIC} (written by an older version?): use '
              f'--step=latest or a step number ({steps}).')
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

  def save(self, step: int, state, metadata: dict, metrics: dict):
    """Saves step `step`; `metrics` must hold BEST_METRIC (ranks --step=best)."""
    os.makedirs(self.directory, exist_ok=True)
    self._manager.save(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                metadata=ocp.args.JsonSave(metadata)),
        metrics={k: float(v) for k, v in metrics.items()})

  def restore_metadata(self, step=None) -> tuple[int, dict]:
    step = self._check_step(step)
    restored = self._manager.restore(step, args=ocp.args.Composite(
        metadata=ocp.args.JsonRestore()))
    return step, restored.metadata

  def restore_state(self, step: int, target_state):
    """Restores into the structure (and shapes) of `target_state`."""
    step = self._check_step(step)
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(target_state)))
    except (ValueError, KeyError) as e:
      raise UserError(
          f'checkpoint {step} in {self.directory} does not fit the model of '
          f'this config ({type(e).__name__}: {str(e).splitlines()[0][:200]}): '
          'use a new --workdir or the config it was trained with.') from None
    return restored.state

  def close(self):
    self._manager.wait_until_finished()
    self._manager.close()


def check_config(saved_config: dict, config, directory: str,
                 keys=STRUCTURAL_KEYS):
  """Raises UserError if `config` differs from a checkpoint's in `keys`."""
  current = config_to_dict(config)
  changed = [k for k in keys if saved_config.get(k) != current.get(k)]
  if changed:
    diffs = ', '.join(f'{k}: checkpoint {saved_config.get(k)!r} vs now '
                      f'{current.get(k)!r}' for k in changed)
    raise UserError(
        f'the checkpoints in {directory} come from an incompatible config '
        f'({diffs}): use a new --workdir, or the config they were trained with.')


def check_class_names(class_names, saved_class_names, directory: str):
  """Raises UserError if a dataset's classes are not the checkpoint's."""
  if list(class_names) != list(saved_class_names):
    raise UserError(
        f'class names differ from the checkpoint in {directory}: checkpoint '
        f'{list(saved_class_names)} vs dataset {list(class_names)}. Evaluate '
        'on a dataset with the same classes, in the same order.')
