"""One way to load a checkpoint for inference: eval, predict and the report.

    loaded = checkpoint_loader.load(workdir, step, config, mode='eval')
    loaded.state, loaded.config, loaded.report, loaded.class_names,
    loaded.normalization

The model, its preprocessing and the class names come from the checkpoint;
`config` (optional) gives the keys `mode` takes from the command line
(keys.KEY_ORIGINS).

Beside a trainer, the step being read may be removed by the trainer's
retention: the latest (or best) step is then looked up and read again, up to
READ_TRIES times; a step named by number is an error that says so.
"""

import dataclasses
import json
import os

from absl import logging
import jax

from imgclf_jax.checkpoints import checkpoint_store
from imgclf_jax.config import resolve
from imgclf_jax.config import specs
from imgclf_jax.errors import UserError
from imgclf_jax.models import registry
from imgclf_jax.report.spec import ReportSpec
from imgclf_jax.training import train_state as train_state_lib

# How many times a reader looks up the latest (or best) step and reads it
# when the trainer beside it removed the step it was reading. Each try reads
# the newest step, which the trainer's retention keeps for the next
# max_checkpoints_to_keep - 1 saves: a second try nearly always succeeds, and
# 5 still do beside a trainer saving every few steps of a tiny model.
READ_TRIES = 5


@dataclasses.dataclass(frozen=True)
class Checkpoint:
  """A restored checkpoint, ready for inference."""
  step: int
  state: train_state_lib.TrainState
  config: object                  # the resolved ConfigDict of `mode`
  report: ReportSpec              # its top_k, tta and report_images
  class_names: tuple[str, ...]
  normalization: dict             # {'mean': [C], 'std': [C]}
  image_shape: tuple[int, ...]    # (S, S, C), as the model was trained
  metadata: dict                  # everything the checkpoint recorded
  directory: str                  # <workdir>/checkpoints


def load(workdir: str, step=None, config=None, mode: str = 'eval',
         set_keys=None) -> Checkpoint:
  """Restores checkpoint `step` (None/'latest', 'best' or a number) of
  `workdir` for `mode` ('eval' or 'predict'); `set_keys`: the keys of
  `config` set on the command line (resolve.for_inference)."""
  follows = str(step).strip().lower() in ('none', '', 'latest', 'best')
  built = {}  # the restore targets built, by what they depend on
  for attempt in range(1, READ_TRIES + 1):
    try:
      return _load(workdir, step, config, mode, set_keys, built)
    except checkpoint_store.StepRemoved as e:
      if not follows:
        raise
      if attempt == READ_TRIES:
        raise UserError(
            f'the {step or "latest"} checkpoint of {workdir} was removed by '
            f'the trainer there while it was read, {READ_TRIES} times in a '
            'row: name a step it keeps with --step, or raise its '
            '--config.max_checkpoints_to_keep.') from None
      logging.info('Checkpoint step %d was removed by the trainer while it '
                   'was read: reading the %s step now.', e.step,
                   step or 'latest')
  raise AssertionError('not reached')


def _load(workdir, step, config, mode, set_keys, built: dict) -> Checkpoint:
  store = checkpoint_store.CheckpointStore(os.path.abspath(workdir))
  try:
    step, metadata = store.restore_metadata(step)
    shape = tuple(metadata['image_shape'])
    names = tuple(metadata['class_names'])
    key = (json.dumps(metadata['config'], sort_keys=True), shape, names)
    if key not in built:
      resolved = resolve.for_inference(
          metadata['config'], config, mode, jax.local_device_count(),
          set_keys)
      model_spec = specs.model_spec(resolved, len(names))
      built[key] = resolved, train_state_lib.restore_target(
          registry.create_model(model_spec), shape,
          specs.optim_spec(resolved), 1, registry.HEADS.get(model_spec.name))
    resolved, target = built[key]
    state = store.restore_state(step, target)
  finally:
    store.close()
  return Checkpoint(step=step, state=state, config=resolved,
                    report=specs.report_spec(resolved),
                    class_names=names,
                    normalization=metadata['normalization'],
                    image_shape=shape, metadata=metadata,
                    directory=store.directory)
